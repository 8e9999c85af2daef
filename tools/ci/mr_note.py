"""One merge-request note per key, updated in place on every push (standard library only).

The preview job of ``.gitlab-ci.yml`` posts ``pulumi preview`` as a note on the merge
request. A new note per push would bury the discussion, so each note starts with a
hidden marker, ``<!-- forgeway-preview:prod -->``; the next run finds the note carrying
it and edits that note instead of adding another::

    python -m tools.ci.mr_note --marker forgeway-preview:prod --title "pulumi preview on prod" \\
        --section "Offline plan" plan.txt --section "pulumi preview" preview.txt

GitLab API (``CI_API_V4_URL``): ``GET /user`` (whose notes are ours), ``GET
/projects/:id/merge_requests/:iid/notes`` (all pages, oldest first), then ``PUT
.../notes/:note_id`` or ``POST .../notes``. Project and merge request come from
``CI_PROJECT_ID`` and ``CI_MERGE_REQUEST_IID`` (set in merge-request pipelines).

The token: a project access token (role Reporter, scope ``api``) in a masked CI variable,
``FORGEWAY_NOTE_TOKEN``, sent as ``PRIVATE-TOKEN``. Not ``CI_JOB_TOKEN``: the job token
cannot write merge-request notes (gitlab-org/gitlab#464591; notes are not among the
endpoints a job token may reach). The token travels only in that header: never in a URL,
never in output, and a redirect is refused rather than followed, so it cannot be carried
to another host.

A note holds at most 1,000,000 characters (GitLab's limit on a note's text); longer
output is cut inside its code block with a line saying how much was cut and that the job
log has all of it.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

__all__ = [
    "NOTE_LIMIT",
    "TOKEN_ENV",
    "GitLab",
    "NoteError",
    "main",
    "marker_comment",
    "render_note",
    "upsert_note",
]

NOTE_LIMIT = 1_000_000  # characters; GitLab refuses a longer note
TOKEN_ENV = "FORGEWAY_NOTE_TOKEN"  # noqa: S105 - the variable's name, not a token
PER_PAGE = 100  # GitLab's maximum page size
MAX_PAGES = 10_000  # a guard against a server that never stops saying X-Next-Page
_MARKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]*")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class NoteError(Exception):
    """What went wrong, in one line that never contains the token."""


def marker_comment(marker: str) -> str:
    """The hidden first line that identifies a note: ``<!-- forgeway-preview:prod -->``."""
    # Letters, digits and : . _ / - only: no "--" run or ">" could close the comment early.
    if not _MARKER_RE.fullmatch(marker) or "--" in marker:
        raise NoteError(f"marker {marker!r}: use letters, digits and : . _ / - (no '--'), e.g. forgeway-preview:prod")
    return f"<!-- {marker} -->"


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run in text, so output cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cut_notice(omitted: int) -> str:
    return (
        f"\n[... {omitted} characters cut here: a GitLab note holds at most {NOTE_LIMIT:,} characters;"
        " the job log has the full output]"
    )


def _section(title: str, content: str) -> str:
    fence = _fence(content)
    body = content if content.endswith("\n") or not content else content + "\n"
    return f"<details open>\n<summary>{html.escape(title)}</summary>\n\n{fence}text\n{body}{fence}\n\n</details>\n"


def render_note(
    marker: str,
    title: str,
    sections: Sequence[tuple[str, str]],
    *,
    footer: str = "",
    limit: int = NOTE_LIMIT,
) -> str:
    """The note's Markdown: marker, title, one collapsible code block per section, footer.

    Output that does not fit in ``limit`` characters is cut, first section first served,
    each cut block ending with a line that says how many characters are missing.
    """
    cleaned = [(name, _ANSI_RE.sub("", text)) for name, text in sections]
    head = f"{marker_comment(marker)}\n### {title}\n\n"
    tail = f"\n{footer}\n" if footer else ""
    # Room left for the outputs themselves: everything else at its largest (full-length
    # fences, a cut notice per section with the most digits it could need).
    overhead = len(head) + len(tail)
    overhead += sum(len(_section(name, "")) + 2 * len(_fence(text)) + 1 for name, text in cleaned)
    overhead += sum(len(_cut_notice(len(text))) for _, text in cleaned)
    budget = limit - overhead
    if budget < 0:
        raise NoteError(f"the note's title and headings alone exceed {limit} characters")
    parts = [head]
    for name, text in cleaned:
        kept = text if len(text) <= budget else text[:budget] + _cut_notice(len(text) - budget)
        budget -= min(len(text), budget)
        parts.append(_section(name, kept))
    parts.append(tail)
    note = "".join(parts)
    assert len(note) <= limit, f"note is {len(note)} characters, limit {limit}"
    return note


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a followed redirect could carry the token to another host."""

    def redirect_request(  # noqa: PLR0917 - urllib's own signature
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


@dataclass(frozen=True)
class GitLab:
    """A minimal GitLab REST v4 client: JSON in, JSON out, the token in one header."""

    api_url: str  # CI_API_V4_URL, e.g. https://gitlab.example.org/api/v4
    token: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.api_url).scheme
        if scheme not in ("https", "http"):
            raise NoteError(f"CI_API_V4_URL {self.api_url!r}: expected an http(s) URL")

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[Any, Message]:
        url = self.api_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked above
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        # Unredirected: urllib does not copy it onto a redirect (which we refuse anyway).
        req.add_unredirected_header("PRIVATE-TOKEN", self.token)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                headers = resp.headers
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode(errors="replace").strip()
            raise NoteError(f"{method} {url}: HTTP {err.code} {err.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            raise NoteError(f"{method} {url}: {err}") from None
        try:
            return (json.loads(raw) if raw else None), headers
        except ValueError:
            raise NoteError(f"{method} {url}: the answer is not JSON") from None


def _notes_path(project_id: str, mr_iid: str) -> str:
    project, mr = urllib.parse.quote(project_id, safe=""), urllib.parse.quote(mr_iid, safe="")
    return f"/projects/{project}/merge_requests/{mr}/notes"


def _all_notes(api: GitLab, project_id: str, mr_iid: str) -> Iterator[Mapping[str, Any]]:
    """Every note on the merge request, oldest first, following X-Next-Page."""
    page = 1
    for _ in range(MAX_PAGES):
        query: dict[str, str | int] = {"per_page": PER_PAGE, "page": page, "sort": "asc", "order_by": "created_at"}
        notes, headers = api.request("GET", _notes_path(project_id, mr_iid), query=query)
        if not isinstance(notes, list):
            raise NoteError("listing notes: expected a JSON list")
        yield from (n for n in notes if isinstance(n, dict))
        following = (headers.get("X-Next-Page") or "").strip()
        if not following:
            return
        page = int(following)
    raise NoteError(f"listing notes: more than {MAX_PAGES} pages")


def upsert_note(api: GitLab, project_id: str, mr_iid: str, marker: str, body: str) -> tuple[str, int]:
    """Update our note that starts with the marker, or create it. Returns (action, note id)."""
    tag = marker_comment(marker)
    if not body.startswith(tag):
        raise NoteError(f"the note must start with {tag}, or the next run cannot find it")
    me, _ = api.request("GET", "/user")
    my_id = me.get("id") if isinstance(me, dict) else None
    found = next(
        (
            n
            for n in _all_notes(api, project_id, mr_iid)
            # Ours only: anyone may quote the marker, and only its author can edit a note.
            if not n.get("system")
            and (n.get("author") or {}).get("id") == my_id
            and str(n.get("body", "")).startswith(tag)
        ),
        None,
    )
    if found is not None:
        note_id = int(found["id"])
        api.request("PUT", f"{_notes_path(project_id, mr_iid)}/{note_id}", payload={"body": body})
        return "updated", note_id
    created, _ = api.request("POST", _notes_path(project_id, mr_iid), payload={"body": body})
    if not isinstance(created, dict) or "id" not in created:
        raise NoteError("creating the note: the answer has no note id")
    return "created", int(created["id"])


def _footer(env: Mapping[str, str]) -> str:
    bits = []
    if sha := env.get("CI_COMMIT_SHORT_SHA"):
        bits.append(f"commit `{sha}`")
    if job := env.get("CI_JOB_URL"):
        bits.append(f"[job log]({job})")
    if pipeline := env.get("CI_PIPELINE_URL"):
        bits.append(f"[pipeline]({pipeline})")
    return f"<sub>{' · '.join(bits)}</sub>" if bits else ""


def _require(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise NoteError(f"{name} is not set: {why}")
    return value


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m tools.ci.mr_note", description=__doc__.split("\n\n")[0])
    parser.add_argument("--marker", required=True, help="note key, e.g. forgeway-preview:prod")
    parser.add_argument("--title", required=True, help="the note's heading (Markdown)")
    parser.add_argument(
        "--section",
        nargs=2,
        action="append",
        default=[],
        metavar=("TITLE", "FILE"),
        help="a collapsible code block of FILE's text; repeat for more",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the note instead of posting it")
    args = parser.parse_args(argv)
    try:
        sections = []
        for name, path in args.section:
            try:
                sections.append((name, Path(path).read_text(errors="replace")))
            except OSError as err:
                raise NoteError(f"section {name!r}: cannot read {path}: {err.strerror}") from None
        body = render_note(args.marker, args.title, sections, footer=_footer(env))
        if args.dry_run:
            sys.stdout.write(body)
            return 0
        api = GitLab(
            _require(env, "CI_API_V4_URL", "run inside a GitLab CI job"),
            _require(env, TOKEN_ENV, "define it as a masked CI/CD variable (a project access token, scope api)"),
        )
        project_id = _require(env, "CI_PROJECT_ID", "run inside a GitLab CI job")
        mr_iid = _require(env, "CI_MERGE_REQUEST_IID", "run in a merge-request pipeline")
        action, note_id = upsert_note(api, project_id, mr_iid, args.marker, body)
    except NoteError as err:
        print(f"mr_note: {err}", file=sys.stderr)
        return 1
    print(f"mr_note: {action} note {note_id} on merge request !{mr_iid} ({len(body)} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
