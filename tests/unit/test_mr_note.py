"""tools/ci/mr_note.py against a fake GitLab API on 127.0.0.1: one note per marker, updated in
place, found across pages, and the token only ever in the PRIVATE-TOKEN header."""

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

from tools.ci.mr_note import NOTE_LIMIT, TOKEN_ENV, marker_comment, render_note

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glpat-fake-7Qz9xLr2Vb"  # noqa: S105 - the fake server's token
BOT_ID = 7  # the project access token's bot user
PROJECT_ID = "42"
MR_IID = "5"
NOTES_PATH = f"/api/v4/projects/{PROJECT_ID}/merge_requests/{MR_IID}/notes"
MARKER = "forgeway-preview:prod"


@dataclass
class Seen:
    method: str
    path: str  # with its query string
    headers: dict[str, str]  # names lowercased: HTTP header names ignore case
    body: str


@dataclass
class FakeGitLab:
    """The few endpoints mr_note uses, with GitLab's offset pagination (X-Next-Page)."""

    notes: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    redirect_user_to: str = ""  # answer GET /user with a 302 to here
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: str, author: int, *, system: bool = False) -> dict[str, Any]:
        note = {"id": 1000 + len(self.notes), "body": body, "author": {"id": author}, "system": system}
        self.notes.append(note)
        return note

    def ours(self) -> list[dict[str, Any]]:
        tag = marker_comment(MARKER)
        return [n for n in self.notes if n["author"]["id"] == BOT_ID and not n["system"] and n["body"].startswith(tag)]


class FakeApiHandler(BaseHTTPRequestHandler):
    """A fake forge API's plumbing: JSON replies, every request recorded in ``fake.seen``
    (under ``fake.lock``), then ``_route`` answers. Subclasses set ``fake``."""

    fake: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _reply(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        with self.fake.lock:
            self.fake.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self._route(body)

    def _route(self, body: str) -> None:
        raise NotImplementedError

    def _edit(self, items: list[dict[str, Any]], item_id: int, body: str, author: str, owner: int) -> None:
        """Edit a note or comment in place, as its author only (the forges answer 404, 403)."""
        item = next((i for i in items if i["id"] == item_id), None)
        if item is None:
            self._reply(404, {"message": "404 Not found"})
        elif item[author]["id"] != owner:
            self._reply(403, {"message": "403 Forbidden"})
        else:
            item["body"] = json.loads(body)["body"]
            self._reply(200, item)

    do_GET = do_POST = do_PUT = do_PATCH = _handle


def _handler(fake: FakeGitLab) -> type[BaseHTTPRequestHandler]:
    class Handler(FakeApiHandler):
        def _route(self, body: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if self.headers.get("PRIVATE-TOKEN") != TOKEN:
                self._reply(401, {"message": "401 Unauthorized"})
            elif (self.command, url.path) == ("GET", "/api/v4/user"):
                if fake.redirect_user_to:
                    self.send_response(302)
                    self.send_header("Location", fake.redirect_user_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._reply(200, {"id": BOT_ID, "username": "project_42_bot"})
            elif (self.command, url.path) == ("GET", NOTES_PATH):
                per_page, page = int(query["per_page"][0]), int(query["page"][0])
                chunk = fake.notes[(page - 1) * per_page : page * per_page]
                following = str(page + 1) if page * per_page < len(fake.notes) else ""
                self._reply(200, chunk, {"X-Next-Page": following, "X-Page": str(page)})
            elif (self.command, url.path) == ("POST", NOTES_PATH):
                self._reply(201, fake.add(json.loads(body)["body"], BOT_ID))
            elif self.command == "PUT" and (m := re.fullmatch(rf"{NOTES_PATH}/(\d+)", url.path)):
                self._edit(fake.notes, int(m.group(1)), body, "author", BOT_ID)
            else:
                self._reply(404, {"message": f"404 {url.path} not faked"})

    Handler.fake = fake
    return Handler


@pytest.fixture
def gitlab() -> Iterator[tuple[FakeGitLab, str]]:
    """A fake GitLab on 127.0.0.1 (random port) and its CI_API_V4_URL; always stopped."""
    fake = FakeGitLab()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/api/v4"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_note(tmp_path: Path, api_url: str, text: str, *, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "preview.txt"
    out.write_text(text)
    env = {
        # Only what the job would have: no proxies, nothing of this machine's environment.
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "CI_API_V4_URL": api_url,
        "CI_PROJECT_ID": PROJECT_ID,
        "CI_MERGE_REQUEST_IID": MR_IID,
        "CI_JOB_URL": "https://gitlab.example.org/forgeway/forgeway/-/jobs/99",
        TOKEN_ENV: token,
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.ci.mr_note",
            "--marker",
            MARKER,
            "--title",
            "Stack prod",
            "--section",
            "pulumi preview",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def seed(fake: FakeGitLab) -> None:
    """150 notes before ours (two pages of 100), among them notes that must not be taken:
    a system note and another user's note, both carrying the marker."""
    tag = marker_comment(MARKER)
    for i in range(150):
        if i == 3:
            fake.add(f"{tag}\nquoted by a reviewer", author=11)
        elif i == 4:
            fake.add(f"{tag}\nsystem", author=BOT_ID, system=True)
        else:
            fake.add(f"comment {i}", author=11 + i % 3)


def test_first_run_posts_then_updates_the_same_note(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    fake, api_url = gitlab
    seed(fake)
    first = run_note(tmp_path, api_url, "+ 3 to create\n")
    assert first.returncode == 0, first.stderr
    assert [s.method for s in fake.seen if s.method != "GET"] == ["POST"], "first run should create one note"
    assert len(fake.ours()) == 1
    note_id = fake.ours()[0]["id"]

    fake.seen.clear()
    second = run_note(tmp_path, api_url, "~ 1 to update\n")
    assert second.returncode == 0, second.stderr
    writes = [(s.method, s.path) for s in fake.seen if s.method != "GET"]
    assert writes == [("PUT", f"{NOTES_PATH}/{note_id}")], f"second run should edit note {note_id}: {writes}"
    ours = fake.ours()
    assert [n["id"] for n in ours] == [note_id], "one note in total"
    assert "~ 1 to update" in ours[0]["body"] and "+ 3 to create" not in ours[0]["body"]
    assert f"updated note {note_id}" in second.stdout


def test_pagination_is_followed(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    """Our note is the 151st: finding it needs page 2 (X-Next-Page)."""
    fake, api_url = gitlab
    seed(fake)
    assert run_note(tmp_path, api_url, "one\n").returncode == 0
    fake.seen.clear()
    assert run_note(tmp_path, api_url, "two\n").returncode == 0
    pages = [
        urllib.parse.parse_qs(urllib.parse.urlsplit(s.path).query)["page"][0]
        for s in fake.seen
        if s.path.startswith(NOTES_PATH + "?")
    ]
    assert pages == ["1", "2"], f"pages read: {pages}"
    assert len(fake.ours()) == 1


def test_other_peoples_and_system_notes_are_left_alone(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    fake, api_url = gitlab
    seed(fake)
    before = [dict(n) for n in fake.notes]
    assert run_note(tmp_path, api_url, "plan\n").returncode == 0
    assert fake.notes[: len(before)] == before, "a note that is not ours was changed"


def test_token_only_in_the_header(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    fake, api_url = gitlab
    runs = [run_note(tmp_path, api_url, "first\n"), run_note(tmp_path, api_url, "second\n")]
    assert all(r.returncode == 0 for r in runs)
    assert fake.seen, "no request reached the fake GitLab"
    for s in fake.seen:
        assert s.headers.get("private-token") == TOKEN, f"{s.method} {s.path} without the token header"
        others = {k: v for k, v in s.headers.items() if k != "private-token" and TOKEN in v}
        assert not others, f"token in other headers of {s.method} {s.path}: {sorted(others)}"
        assert TOKEN not in s.path, f"token in the URL of {s.method} {s.path}"
        assert TOKEN not in s.body, f"token in the body of {s.method} {s.path}"
    for r in runs:
        assert TOKEN not in r.stdout + r.stderr, "token in mr_note's output"


def test_refused_token_fails_without_showing_it(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    _, api_url = gitlab
    wrong = "glpat-wrong-Zk41Pq"
    result = run_note(tmp_path, api_url, "plan\n", token=wrong)
    assert result.returncode == 1
    assert "401" in result.stderr, result.stderr
    assert wrong not in result.stdout + result.stderr


def test_redirect_is_refused_so_the_token_stays_put(gitlab: tuple[FakeGitLab, str], tmp_path: Path) -> None:
    fake, api_url = gitlab
    elsewhere = FakeGitLab()
    other = ThreadingHTTPServer(("127.0.0.1", 0), _handler(elsewhere))
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        fake.redirect_user_to = f"http://127.0.0.1:{other.server_address[1]}/api/v4/user"
        result = run_note(tmp_path, api_url, "plan\n")
    finally:
        other.shutdown()
        other.server_close()
        thread.join(timeout=5)
    assert result.returncode == 1 and "302" in result.stderr, result.stderr
    assert elsewhere.seen == [], "the redirect was followed"
    assert fake.ours() == []


def test_long_output_is_cut_to_the_note_limit() -> None:
    huge = "Z" * (NOTE_LIMIT + 5000)  # a letter the note's own text never uses
    note = render_note(MARKER, "Stack prod", [("plan", "short\n"), ("pulumi preview", huge)])
    assert len(note) <= NOTE_LIMIT
    assert note.startswith(marker_comment(MARKER) + "\n")
    assert "short\n" in note, "the section that fits is kept whole"
    cut = re.search(r"\[\.\.\. (\d+) characters cut here", note)
    assert cut, "no cut notice"
    kept = note.count("Z")
    assert kept + int(cut.group(1)) == len(huge), "the notice should say exactly how much is missing"


def test_cut_output_keeps_its_code_block_closed() -> None:
    text = "```\nfenced in the output\n```\n" + "y" * 500
    note = render_note(MARKER, "Stack prod", [("pulumi preview", text)], limit=400)
    assert len(note) <= 400
    fences = re.findall(r"^(`{3,})", note, flags=re.MULTILINE)
    # Four backticks open and close the block, so the output's own ``` lines stay inside it.
    assert fences[0] == fences[-1] == "````" and fences.count("````") == 2, fences
    assert note.rstrip().endswith("</details>")


@pytest.mark.parametrize("marker", ["x -->", "a--b", "", "<script>"])
def test_marker_that_could_escape_the_comment_is_refused(marker: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.ci.mr_note", "--marker", marker, "--title", "t", "--dry-run"],
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "marker" in result.stderr, result.stderr
