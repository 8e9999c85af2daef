"""The CI files: valid against the schemas vendored in tests/schemas, and the preview job
really runs the offline plan.

Validation goes through check-jsonschema's own CLI with ``--schemafile`` pointing at the
repository's copies (no network, no built-in schemas). A deliberately broken copy of
each file must fail, so a validator that accepts anything cannot pass these tests.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = REPO_ROOT / "tests" / "schemas"
GITLAB_CI = REPO_ROOT / ".gitlab-ci.yml"
GITHUB_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "pulumi.yml"
OFFLINE_PLAN = ["make", "preview", "STACK=$STACK"]

# (CI file, schema copy, extra arguments: the same as check-jsonschema's own hook for it)
CI_FILES = {
    "gitlab": (
        GITLAB_CI,
        SCHEMAS / "gitlab-ci.json",
        ["--data-transform", "gitlab-ci", "--regex-variant", "nonunicode"],
    ),
    "github": (GITHUB_WORKFLOW, SCHEMAS / "github-workflows.json", []),
}

# Broken copies: (file key, what is done, text replaced, replacement, what the error names).
# Text edits, not a YAML round trip: PyYAML would read GitHub's `on:` as the boolean true.
BROKEN = [
    ("gitlab", "unknown job key", "\nup:\n", "\nup:\n  resource_groups: prod\n", "resource_groups"),
    ("gitlab", "wrong type", "  interruptible: false\n", '  interruptible: "no"\n', "interruptible"),
    (
        "github",
        "unknown job key",
        "    runs-on: [self-hosted, linux, x64]\n",
        "    run-on: [self-hosted, linux, x64]\n",
        "run-on",
    ),
    ("github", "wrong type", "\npermissions:\n  contents: read\n", "\npermissions: 42\n", "42"),
    ("github", "bad value", "      pull-requests: write", "      pull-requests: admin", "admin"),
]


def check_jsonschema(schema: Path, document: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    # The CLI of the package in this interpreter's environment (requirements-dev.txt).
    cli = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [cli, "--schemafile", str(schema), *extra, str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("key", sorted(CI_FILES))
def test_ci_file_matches_vendored_schema(key: str) -> None:
    document, schema, extra = CI_FILES[key]
    result = check_jsonschema(schema, document, extra)
    assert result.returncode == 0, f"{document.name} against {schema.name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("case", BROKEN, ids=[f"{b[0]}-{b[1]}" for b in BROKEN])
def test_broken_copy_fails_validation(tmp_path: Path, case: tuple[str, str, str, str, str]) -> None:
    key, what, old, new, named = case
    document, schema, extra = CI_FILES[key]
    text = document.read_text()
    assert old in text, f"{document.name} no longer holds {old!r}: update BROKEN ({what})"
    broken = tmp_path / document.name
    broken.write_text(text.replace(old, new, 1))
    result = check_jsonschema(schema, broken, extra)
    assert result.returncode == 1, f"{what} in {document.name} passed validation:\n{result.stdout}{result.stderr}"
    assert named in result.stdout, f"{what}: the error does not name {named!r}:\n{result.stdout}"


def test_vendored_schemas_are_the_documented_copies() -> None:
    """tests/schemas/README.md records each copy's sha256; an edited copy fails here."""
    readme = (SCHEMAS / "README.md").read_text()
    for _, schema, _ in CI_FILES.values():
        digest = hashlib.sha256(schema.read_bytes()).hexdigest()
        row = re.search(rf"`{re.escape(schema.name)}`.*`([0-9a-f]{{64}})`", readme)
        assert row, f"tests/schemas/README.md has no sha256 row for {schema.name}"
        assert row.group(1) == digest, f"{schema.name} is not the copy README.md describes (sha256 {digest})"


def _preview_job() -> dict[str, Any]:
    config = yaml.safe_load(GITLAB_CI.read_text())
    job = config.get("preview")
    assert isinstance(job, dict), ".gitlab-ci.yml has no `preview` job"
    return job


def _commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: words split at ; && || | &, redirections dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_target = False
    for word in lexer:
        if skip_target:
            skip_target = False
        elif word in {";", "&&", "||", "|", "&"}:
            commands.append([])
        elif word[0] in "<>":
            # `2>&1` arrives as "2", ">&", "1": the "2" was a file descriptor, not a word.
            if commands[-1] and commands[-1][-1].isdigit():
                commands[-1].pop()
            skip_target = True
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def test_preview_job_runs_the_offline_plan_per_stack() -> None:
    job = _preview_job()
    script = [line for line in job["script"] if isinstance(line, str)]
    plans = [cmd for line in script for cmd in _commands(line) if cmd[:2] == ["make", "preview"]]
    assert plans == [OFFLINE_PLAN], (
        f"the preview job's offline plan should be {shlex.join(OFFLINE_PLAN)}, found {plans}"
    )
    stacks = {name for entry in job["parallel"]["matrix"] for name in entry}
    assert stacks == {"STACK"}, f"the preview matrix should set STACK, it sets {sorted(stacks)}"


def test_makefile_preview_target_passes_stack_on() -> None:
    """`make -n` prints the recipe without running it: the stack given must reach it."""
    assert shutil.which("make"), "make is needed (apt-get install make): the preview job runs it"
    probe = "probe-stack-7f3a"
    result = subprocess.run(
        ["make", "-n", "preview", f"STACK={probe}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"make -n preview failed:\n{result.stdout}{result.stderr}"
    recipe = result.stdout
    assert probe in recipe, f"make preview STACK={probe} never passes the stack on; its recipe:\n{recipe}"


def test_the_preview_jobs_offline_plan_really_runs_for_each_stack_of_its_matrix() -> None:
    """The job is not just text: its `make preview` line, run here as the job runs it for
    every stack of the matrix, plans the stack under the mocks (the `pulumi preview` half
    needs a real backend and hosts). The line writes plan.txt, as in the job; it is removed."""
    job = _preview_job()
    line = next(line for line in job["script"] if isinstance(line, str) and "make preview" in line)
    stacks = [stack for entry in job["parallel"]["matrix"] for stack in entry["STACK"]]
    assert stacks, "the preview matrix names no stack"
    plan = REPO_ROOT / "plan.txt"
    assert not plan.exists(), "plan.txt exists in the repository: remove it"
    for stack in stacks:
        try:
            done = subprocess.run(
                ["bash", "-c", f'plan_rc=0; {line}; exit "$plan_rc"'],
                cwd=REPO_ROOT,
                env={**os.environ, "STACK": stack},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            text = plan.read_text() if plan.exists() else ""
        finally:
            plan.unlink(missing_ok=True)
        assert done.returncode == 0, f"{line!r} with STACK={stack} failed:\n{text[-3000:]}{done.stderr[-1000:]}"
        assert f"forgeway offline plan: stack {stack}" in text, text[:500]
