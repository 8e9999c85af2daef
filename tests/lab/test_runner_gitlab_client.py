"""The runner stand-in's GitLab client (tools/lab/standin_image/runner_gitlab.py), in-process:
TLS to the config's CA only, verify before any job request, quiet once draining, and no
more requests than ``concurrent`` allows. End to end against the GitLab stand-in:
tests/lab/test_gitlab_api_standin.py.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import secrets
import ssl
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from tests.certs import make_ca

pytestmark = pytest.mark.lab

TOKEN = "glrt-" + secrets.token_urlsafe(18)  # made per run: no token-shaped string in the repo
CLIENT = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "runner_gitlab.py"


def _tls_pair(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate and key for ``host`` it signed: (ca, cert, key) paths."""
    ca = make_ca(f"CA for {host}")
    cert, key = ca.issue(host, dns=[host]).write(directory / "server.crt", directory / "server.key")
    return ca.write(directory / "ca.crt"), cert, key


class _FakeGitLab(http.server.BaseHTTPRequestHandler):
    """verify: 200 for TOKEN, else 403; jobs/request: one job for TOKEN, then 204."""

    requests: ClassVar[list[str]] = []
    handed: ClassVar[list[int]] = []

    def log_message(self, *_args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(self.path)
        answer: dict[str, object] = {"message": "403 Forbidden"}
        status = 403
        if body.get("token") == TOKEN and self.path == "/api/v4/runners/verify":
            status, answer = 200, {"id": 7, "token": TOKEN, "token_expires_at": None}
        elif body.get("token") == TOKEN and self.path == "/api/v4/jobs/request":
            status, answer = 204, {}
            if not self.handed:
                self.handed.append(7)
                status, answer = 201, {"id": 7, "token": "job", "git_info": {"ref": "main"}, "variables": []}
        data = json.dumps(answer).encode() if status != 204 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_gitlab_client_in_process(tmp_path: Path) -> None:
    """The stand-in's runner API client: TLS to the config's CA only, verify before any job request."""
    spec = importlib.util.spec_from_file_location("runner_gitlab", CLIENT)
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    ca, cert, key = _tls_pair(tmp_path, "localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGitLab)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}"
    try:
        conn = client.Connection(url=url, token=TOKEN, ca_file=str(ca), concurrent=1, check_interval=0.05)
        assert client.call(conn, "POST", "runners/verify", {"token": TOKEN})[0] == 200
        assert TOKEN not in repr(conn)
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):  # the system CAs do not know ours
            client.call(conn._replace(ca_file=None), "POST", "runners/verify", {"token": TOKEN})

        lines: list[str] = []
        bad = client.Poller(conn._replace(token=TOKEN + "-revoked"), lines.append)
        bad.start()
        time.sleep(0.5)
        assert "Verifying runner... is not valid" in lines and "/api/v4/jobs/request" not in _FakeGitLab.requests
        quiet: list[str] = []
        stopping = client.Poller(conn._replace(token=TOKEN + "-other"), quiet.append)  # SIGQUIT came first:
        stopping.draining = True  # it neither verifies nor logs
        stopping.start()
        time.sleep(0.3)
        assert quiet == [] and "/api/v4/jobs/request" not in _FakeGitLab.requests, quiet
        lines = []  # the bad poller still retries into the old list
        good = client.Poller(conn, lines.append)
        good.start()
        job = good.received.get(timeout=5)
        assert job["id"] == 7, job
        assert lines[:2] == ["Verifying runner... is valid", "Checking for jobs... received job=7 ref=main"], lines
        time.sleep(0.3)  # concurrent = 1 and the job still runs: no more requests
        assert _FakeGitLab.requests.count("/api/v4/jobs/request") == 1, _FakeGitLab.requests
    finally:
        server.shutdown()
