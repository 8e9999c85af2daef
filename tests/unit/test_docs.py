"""The README and docs/ stay readable and their links lead somewhere.

The README is the front door and docs/ holds the long parts (issue 16). Two things rot
silently in Markdown, so they are checked here: a table cell that grows into a paragraph
(GitHub renders it as a wall in one column; write prose or a list under a heading
instead), and a relative link whose file or heading was renamed or moved.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "policies" / "README.md",
        ROOT / "examples" / "consumer" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
# A sentence or two. The longest cell today is well under it (see the test's message).
MAX_CELL = 300

FENCE = re.compile(r"^\s*(```|~~~)")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
# [text](target) and [text](target "title"); images too. Not inside code spans.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _cells(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in _prose_lines(path):
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|") and not re.fullmatch(r"[|:\- ]+", stripped):
            found += [(number, cell.strip()) for cell in CELL_SPLIT.split(stripped)[1:-1]]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
    found = set()
    for base, count in seen.items():
        found |= {base, *(f"{base}-{n}" for n in range(1, count))}
    return found


def _links(path: Path) -> list[tuple[int, str]]:
    return [
        (number, match.group(1))
        for number, line in _prose_lines(path)
        for match in LINK.finditer(CODE_SPAN.sub("", line))
    ]


def test_the_slug_is_githubs() -> None:
    assert slug("Security: who accepts what") == "security-who-accepts-what"
    assert slug("`runner-job-isolation` and `ssh-host-keys-*`") == "runner-job-isolation-and-ssh-host-keys-"
    assert slug("Deploy for real with the Pulumi CLI") == "deploy-for-real-with-the-pulumi-cli"


def test_the_checks_see_what_they_check(tmp_path: Path) -> None:
    """The helpers find a long cell, a dead file link and a dead anchor (else the tests prove nothing)."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n| a | b |\n|---|---|\n| `x\\|y` | " + "w" * 400 + " |\n\n"
        "```\n| not | a table |\n[x](gone.md)\n```\n[ok](#title) [dead](#nope) [file](gone.md)\n"
    )
    assert [len(cell) for _, cell in _cells(page)] == [1, 1, 6, 400]
    assert anchors(page) == {"title"}
    assert [target for _, target in _links(page)] == ["#title", "#nope", "gone.md"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_table_cell_is_longer_than_a_sentence_or_two(path: Path) -> None:
    long = [
        f"{path.name}:{n}: {len(cell)} characters: {cell[:80]}..." for n, cell in _cells(path) if len(cell) > MAX_CELL
    ]
    assert not long, (
        f"table cells over {MAX_CELL} characters; write them as prose or a list under a heading:\n" + "\n".join(long)
    )


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    dead = []
    for number, target in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            dead.append(f"{path.name}:{number}: {target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            dead.append(f"{path.name}:{number}: {target}: no heading with anchor #{anchor} in {linked.name}")
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_every_doc_is_reachable_from_the_readme() -> None:
    """The front door: every page in docs/ is linked from the README."""
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in _links(ROOT / "README.md")}
    orphans = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs/ pages the README does not link: {orphans}"


def test_the_paths_the_architecture_page_names_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:components|tools|tests|policies|docs)/[^`<>\s]*)`", text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
