"""components/scripts/gitlab_runner_token_check.py against a fake GitLab over TLS.

The check a runner_tokens override gets before its runner container is touched:
POST /runners/verify with the runner's token gives the runner id, GET /runners/:id with
forgeway's API token gives its access_level; a runner the config needs protected that
GitLab holds not_protected is refused, naming the runner, and no token is ever printed.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.scripts import script
from tests.certs import make_ca

RUNNER_TOKEN = "glrt-" + "r" * 20
ADMIN_TOKEN = "A" * 20


def _certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """A new CA and the fake GitLab's certificate for 127.0.0.1 it signed: (ca, cert, key) paths."""
    ca = make_ca("fake gitlab CA")
    cert, key = ca.issue("fake gitlab", ips=["127.0.0.1"]).write(tmp / "cert.pem", tmp / "key.pem")
    return ca.write(tmp / "ca.pem"), cert, key


class FakeGitLab(BaseHTTPRequestHandler):
    access_level = "not_protected"
    seen: list[str] = []  # noqa: RUF012 (one server per test, reset by the fixture)

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(f"POST {self.path}")
        if self.path == "/api/v4/runners/verify" and body.get("token") == RUNNER_TOKEN:
            self._answer(200, {"id": 7, "token": RUNNER_TOKEN, "token_expires_at": None})
        else:
            self._answer(403, {"message": "403 Forbidden"})

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        if self.headers.get("PRIVATE-TOKEN") != ADMIN_TOKEN:
            self._answer(401, {"message": "401 Unauthorized"})
        elif self.path == "/api/v4/runners/7":
            self._answer(200, {"id": 7, "access_level": self.access_level, "description": "by hand"})
        else:
            self._answer(404, {"message": "404 Runner Not Found"})

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def gitlab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = _certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitLab)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    FakeGitLab.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api/v4/", ca
    finally:
        server.shutdown()


def _check(url: str, ca: Path, *, require: bool, runner_token: str = RUNNER_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {
        "FORGEWAY_API_URL": url,
        "FORGEWAY_CA_FILE": str(ca),
        "FORGEWAY_REQUIRE_PROTECTED": "true" if require else "false",
    }
    stdin = json.dumps({"runner_token": runner_token, "admin_token": ADMIN_TOKEN})
    # As the local command runs it: python3 -c with the script's text.
    return subprocess.run(
        [sys.executable, "-c", script("gitlab_runner_token_check.py"), "builder", "privileged"],
        input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("level", ["not_protected", "ref_protected"])
def test_a_runner_that_needs_no_protection_passes_and_says_what_gitlab_holds(
    gitlab: tuple[str, Path], level: str
) -> None:
    FakeGitLab.access_level = level
    done = _check(*gitlab, require=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok runner 'builder': GitLab runner 7, access_level {level}"
    assert FakeGitLab.seen == ["POST /api/v4/runners/verify", "GET /api/v4/runners/7"]


def test_a_privileged_runner_gitlab_holds_unprotected_is_refused_naming_it(gitlab: tuple[str, Path]) -> None:
    FakeGitLab.access_level = "not_protected"
    done = _check(*gitlab, require=True)
    assert done.returncode == 1
    assert "runner 'builder' is refused" in done.stderr and "'not_protected'" in done.stderr, done.stderr
    assert "privileged" in done.stderr and "runner_tokens.builder" in done.stderr
    assert RUNNER_TOKEN not in done.stderr + done.stdout and ADMIN_TOKEN not in done.stderr + done.stdout


def test_a_privileged_runner_gitlab_holds_protected_passes(gitlab: tuple[str, Path]) -> None:
    FakeGitLab.access_level = "ref_protected"
    done = _check(*gitlab, require=True)
    assert done.returncode == 0, done.stderr


def test_a_token_gitlab_does_not_know_is_refused_before_asking_for_the_runner(gitlab: tuple[str, Path]) -> None:
    done = _check(*gitlab, require=False, runner_token="glrt-" + "x" * 20)
    assert done.returncode == 1 and "POST /runners/verify (HTTP 403)" in done.stderr, done.stderr
    assert FakeGitLab.seen == ["POST /api/v4/runners/verify"]


def test_an_untrusted_certificate_fails(gitlab: tuple[str, Path], tmp_path: Path) -> None:
    other = make_ca("another CA").write(tmp_path / "other-ca.pem")  # TLS must refuse GitLab's certificate
    done = _check(gitlab[0], other, require=False)
    assert done.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in done.stderr, done.stderr
