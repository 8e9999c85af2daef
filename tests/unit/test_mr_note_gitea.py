"""tools/ci/mr_note.py's Gitea backend (``--forge gitea``, from a Woodpecker pipeline) against a
fake Gitea API v1 on 127.0.0.1: one comment per marker on the pull request, edited in place,
others' comments left alone, and the token only ever in the Authorization header."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_mr_note import FakeApiHandler, Seen
from tools.ci.mr_note import TOKEN_ENV, marker_comment

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "3f9c1d0e5a7b24c8e6f1a2b3c4d5e6f7a8b9c0d1"  # noqa: S105 - the fake server's token
BOT_ID = 9  # the token's user
OWNER, REPO, INDEX = "forgeway", "forgeway", "5"
ISSUE = f"/api/v1/repos/{OWNER}/{REPO}/issues"
COMMENTS = f"{ISSUE}/{INDEX}/comments"
MARKER = "forgeway-preview:gitea-example"


@dataclass
class FakeGitea:
    """The endpoints mr_note uses: the issue-comments list has no paging, as Gitea's has none."""

    comments: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    redirect_user_to: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: str, author: int) -> dict[str, Any]:
        comment = {"id": 300 + len(self.comments), "body": body, "user": {"id": author, "login": f"u{author}"}}
        self.comments.append(comment)
        return comment

    def ours(self) -> list[dict[str, Any]]:
        tag = marker_comment(MARKER)
        return [c for c in self.comments if c["user"]["id"] == BOT_ID and c["body"].startswith(tag)]


def _handler(fake: FakeGitea) -> type[BaseHTTPRequestHandler]:
    class Handler(FakeApiHandler):
        def _route(self, body: str) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if self.headers.get("Authorization") != f"token {TOKEN}":
                self._reply(401, {"message": "token is required"})
            elif (self.command, path) == ("GET", "/api/v1/user"):
                if fake.redirect_user_to:
                    self._reply(302, {}, {"Location": fake.redirect_user_to})
                else:
                    self._reply(200, {"id": BOT_ID, "login": "forgeway-bot"})
            elif (self.command, path) == ("GET", COMMENTS):
                self._reply(200, fake.comments)
            elif (self.command, path) == ("POST", COMMENTS):
                self._reply(201, fake.add(json.loads(body)["body"], BOT_ID))
            elif self.command == "PATCH" and (m := re.fullmatch(rf"{ISSUE}/comments/(\d+)", path)):
                self._edit(fake.comments, int(m.group(1)), body, "user", BOT_ID)
            else:
                self._reply(404, {"message": f"{self.command} {path} not faked"})

    Handler.fake = fake
    return Handler


def _serve(fake: FakeGitea) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server: ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def gitea() -> Iterator[tuple[FakeGitea, str]]:
    """A fake Gitea on 127.0.0.1 (random port) and its root URL (Woodpecker's CI_FORGE_URL)."""
    fake = FakeGitea()
    server, thread = _serve(fake)
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        _stop(server, thread)


def run_note(
    tmp_path: Path, forge_url: str, text: str, *, token: str = TOKEN, drop: str = ""
) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "preview.txt"
    out.write_text(text)
    env = {
        # What a Woodpecker step has (woodpecker-ci.org/docs/usage/environment), and the secret.
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "CI": "woodpecker",
        "CI_FORGE_TYPE": "gitea",
        "CI_FORGE_URL": forge_url,
        "CI_REPO_OWNER": OWNER,
        "CI_REPO_NAME": REPO,
        "CI_COMMIT_PULL_REQUEST": INDEX,
        "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
        "CI_STEP_URL": "https://ci.example.org:8443/repos/1/pipeline/7/2",
        TOKEN_ENV: token,
    }
    env.pop(drop, None)
    argv = ["--forge", "gitea", "--marker", MARKER, "--title", "Stack gitea-example", "--section", "plan", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "tools.ci.mr_note", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seed(fake: FakeGitea) -> None:
    """Comments before ours, one of them another user's that quotes the marker."""
    for i in range(12):
        fake.add(f"{marker_comment(MARKER)}\nquoted" if i == 3 else f"comment {i}", author=20 + i % 3)


def test_first_run_posts_then_edits_the_same_comment(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    seed(fake)
    first = run_note(tmp_path, url, "+ 3 to create\n")
    assert first.returncode == 0, first.stderr
    assert [(s.method, s.path) for s in fake.seen if s.method != "GET"] == [("POST", COMMENTS)]
    (ours,) = fake.ours()
    assert f"created note {ours['id']} on pull request #{INDEX}" in first.stdout

    fake.seen.clear()
    second = run_note(tmp_path, url, "~ 1 to update\n")
    assert second.returncode == 0, second.stderr
    writes = [(s.method, s.path) for s in fake.seen if s.method != "GET"]
    assert writes == [("PATCH", f"{ISSUE}/comments/{ours['id']}")], writes
    assert [c["id"] for c in fake.ours()] == [ours["id"]], "one comment in total"
    assert "~ 1 to update" in ours["body"] and "+ 3 to create" not in ours["body"]


def test_other_peoples_comments_are_left_alone(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    seed(fake)
    before = json.loads(json.dumps(fake.comments))
    assert run_note(tmp_path, url, "one\n").returncode == 0
    assert run_note(tmp_path, url, "two\n").returncode == 0
    assert fake.comments[: len(before)] == before, "a comment that is not ours was changed"
    assert len(fake.comments) == len(before) + 1


def test_footer_names_the_commit_and_the_step(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    assert run_note(tmp_path, url, "plan\n").returncode == 0
    (ours,) = fake.ours()
    assert "commit `01234567`" in ours["body"] and "(https://ci.example.org:8443/repos/1/pipeline/7/2)" in ours["body"]


def test_token_only_in_the_authorization_header(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    runs = [run_note(tmp_path, url, "first\n"), run_note(tmp_path, url, "second\n")]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert fake.seen
    for s in fake.seen:
        assert s.headers.get("authorization") == f"token {TOKEN}", f"{s.method} {s.path} without the token"
        others = [k for k, v in s.headers.items() if k != "authorization" and TOKEN in v]
        assert not others and TOKEN not in s.path and TOKEN not in s.body, f"token elsewhere in {s.method} {s.path}"
    assert all(TOKEN not in r.stdout + r.stderr for r in runs), "token in mr_note's output"


def test_refused_token_fails_without_showing_it(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    wrong = "0000wrong1111token2222"
    result = run_note(tmp_path, url, "plan\n", token=wrong)
    assert result.returncode == 1 and "401" in result.stderr, result.stderr
    assert wrong not in result.stdout + result.stderr
    assert fake.comments == []


def test_redirect_is_refused_so_the_token_stays_put(gitea: tuple[FakeGitea, str], tmp_path: Path) -> None:
    fake, url = gitea
    elsewhere = FakeGitea()
    server, thread = _serve(elsewhere)
    try:
        fake.redirect_user_to = f"http://127.0.0.1:{server.server_address[1]}/api/v1/user"
        result = run_note(tmp_path, url, "plan\n")
    finally:
        _stop(server, thread)
    assert result.returncode == 1 and "302" in result.stderr, result.stderr
    assert elsewhere.seen == [] and fake.comments == []


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("CI_COMMIT_PULL_REQUEST", "pull_request event"),
        ("CI_FORGE_URL", "Woodpecker pipeline"),
        (TOKEN_ENV, "Woodpecker secret"),
    ],
)
def test_a_missing_variable_is_named(gitea: tuple[FakeGitea, str], tmp_path: Path, missing: str, says: str) -> None:
    fake, url = gitea
    result = run_note(tmp_path, url, "plan\n", drop=missing)
    assert result.returncode == 1, result.stdout
    assert f"{missing} is not set" in result.stderr and says in result.stderr, result.stderr
    assert fake.seen == [], "nothing is sent before every variable is there"
