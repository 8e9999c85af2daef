""".woodpecker/preview.yml, the Gitea twin of .gitlab-ci.yml's preview job: valid for
Woodpecker (the schema check-jsonschema vendors), secrets only by ``from_secret``, and its
step (tools/ci/woodpecker-preview.sh) run here for real: the offline plan of the matrix's
stack, a ``pulumi preview`` (a fake CLI on PATH: no backend or hosts here), and ONE comment
on the pull request of a fake Gitea, edited on the next push."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.woodpecker import agent_env
from tests.unit.test_mr_note_gitea import COMMENTS, INDEX, OWNER, REPO, TOKEN, FakeGitea, _serve, _stop
from tools.ci.mr_note import TOKEN_ENV, marker_comment

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE = REPO_ROOT / ".woodpecker" / "preview.yml"
SCRIPT = "tools/ci/woodpecker-preview.sh"
SECRETS = {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", TOKEN_ENV}


def check_jsonschema(document: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema's own Woodpecker schema, as vendored in the pinned package: no network."""
    cli = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [cli, "--builtin-schema", "vendor.woodpecker-ci", str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pipeline() -> dict[str, Any]:
    loaded = yaml.safe_load(PIPELINE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_pipeline_matches_woodpeckers_schema() -> None:
    result = check_jsonschema(PIPELINE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [("\nlabels:\n", "\nlabel:\n", "label"), ("  - event: pull_request\n", "  - event: merge_request\n", "event")],
)
def test_a_broken_copy_fails_the_schema(tmp_path: Path, old: str, new: str, named: str) -> None:
    text = PIPELINE.read_text()
    assert old in text, f"{PIPELINE.name} no longer holds {old!r}"
    broken = tmp_path / "preview.yml"
    broken.write_text(text.replace(old, new, 1))
    result = check_jsonschema(broken)
    assert result.returncode == 1 and named in result.stdout, result.stdout + result.stderr


def test_it_runs_on_pull_requests_only_on_an_agent_forgeway_labels() -> None:
    config = pipeline()
    assert config["when"] == [{"event": "pull_request"}]
    labels = {f"{k}={v}" for k, v in config["labels"].items()}
    agent = dict(e.split("=", 1) for e in agent_env(server="s:9000", host_name="h", arch="amd64", own_ca=True))
    assert labels == {agent["WOODPECKER_AGENT_LABELS"]}, "no forgeway agent carries these labels"


def test_secrets_come_only_from_woodpecker_secrets() -> None:
    (step,) = pipeline()["steps"]
    env = step["environment"]
    assert {k for k, v in env.items() if isinstance(v, dict)} == SECRETS
    assert all(set(env[k]) == {"from_secret"} for k in SECRETS), env
    assert TOKEN_ENV not in " ".join(step["commands"]), "the token is the script's to read, from its environment"
    assert step["commands"][-1] == f"bash {SCRIPT}"


def test_the_image_is_the_gitlab_jobs_pin() -> None:
    (step,) = pipeline()["steps"]
    gitlab = yaml.safe_load((REPO_ROOT / ".gitlab-ci.yml").read_text())
    assert step["image"] == gitlab["default"]["image"]


FAKE_PULUMI = """#!/bin/sh
# The Pulumi CLI as the step calls it: login, config get (the hosts' key), preview.
echo "$*" >> "$FAKE_LOG"
case "$1" in
  login) echo "Logged in to file://fake" ;;
  config) cat "$FAKE_KEY" ;;
  preview) echo "Previewing update ($3):"; echo "Resources: 64 unchanged"; exit "${FAKE_PREVIEW_RC:-0}" ;;
  *) echo "fake pulumi: $1?" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The repository as links, so plan.txt and preview.txt land here and not in the checkout."""
    work = tmp_path / "repo"
    work.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name not in {"plan.txt", "preview.txt", ".git"}:
            (work / entry.name).symlink_to(entry)
    return work


@pytest.fixture
def gitea() -> Iterator[tuple[FakeGitea, str]]:
    fake = FakeGitea()
    server, thread = _serve(fake)
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _stop(server, thread)


def run_step(
    work: Path, tmp_path: Path, forge_url: str, *, preview_rc: int = 0, drop: str = ""
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "pulumi").write_text(FAKE_PULUMI)
        (bin_dir / "pulumi").chmod(0o755)
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    env = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STACK": "gitea-example",
        "PULUMI_BACKEND_URL": "file://fake",
        "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", "forgeway-example-only"),
        TOKEN_ENV: TOKEN,
        "CI": "woodpecker",
        "CI_FORGE_URL": forge_url,
        "CI_REPO_OWNER": OWNER,
        "CI_REPO_NAME": REPO,
        "CI_COMMIT_PULL_REQUEST": INDEX,
        "FAKE_LOG": str(tmp_path / "pulumi.log"),
        "FAKE_KEY": str(tmp_path / "id_ed25519"),
        "FAKE_PREVIEW_RC": str(preview_rc),
    }
    env.pop(drop, None)
    return subprocess.run(["bash", SCRIPT], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_step_posts_one_comment_then_edits_it(workdir: Path, tmp_path: Path, gitea: tuple[FakeGitea, str]) -> None:
    fake, url = gitea
    first = run_step(workdir, tmp_path, url)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    (comment,) = fake.comments
    body = comment["body"]
    assert body.startswith(marker_comment("forgeway-preview:gitea-example"))
    assert "offline plan passed, pulumi preview passed" in body
    assert "forgeway offline plan: stack gitea-example" in body and "Resources: 64 unchanged" in body
    log = (tmp_path / "pulumi.log").read_text()
    assert "preview --stack gitea-example --policy-pack policies" in log

    second = run_step(workdir, tmp_path, url, preview_rc=1)
    assert second.returncode == 1, "a failed pulumi preview fails the step"
    assert [c["id"] for c in fake.comments] == [comment["id"]], "the same comment, edited"
    assert "pulumi preview **failed** (exit 1)" in fake.comments[0]["body"]
    assert [s.method for s in fake.seen if s.method != "GET"] == ["POST", "PATCH"]
    assert all(TOKEN not in r.stdout + r.stderr for r in (first, second))
    assert [s.path for s in fake.seen if s.method == "POST"] == [COMMENTS]


@pytest.mark.parametrize("missing", ["PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"])
def test_the_step_stops_naming_a_missing_secret(
    workdir: Path, tmp_path: Path, gitea: tuple[FakeGitea, str], missing: str
) -> None:
    fake, url = gitea
    result = run_step(workdir, tmp_path, url, drop=missing)
    assert result.returncode == 1 and f"{missing} is not set" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "pulumi.log").exists(), "pulumi ran without its secrets"
    assert fake.seen == []


def test_a_refused_comment_fails_the_step(workdir: Path, tmp_path: Path, gitea: tuple[FakeGitea, str]) -> None:
    fake, url = gitea
    result = run_step(workdir, tmp_path, url.replace("http://", "ftp://"))
    assert result.returncode == 1 and "CI_FORGE_URL" in result.stderr, result.stderr[-2000:]
    assert fake.comments == []
