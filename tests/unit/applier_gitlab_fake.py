"""A small fake GitLab API for the applier's gitlab tests (tests/unit/test_applier_gitlab.py):
http.server over TLS on 127.0.0.1 with a throwaway CA (tests/certs.py), answering the user/runners
endpoints the provider uses (docs.gitlab.com/api/users, /runners) as GitLab does."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.certs import Ca, make_ca

NAME = "gitlab.forgeway.test"
TOKEN = "glpat-forgeway-provisioner-0123456789"  # noqa: S105 (a test value)


# --- the fake GitLab, over TLS ----------------------------------------------


def server_context(tmp: Path, ca: Ca, *, san: bool = True) -> ssl.SSLContext:
    """The fake's TLS: a certificate for NAME from ``ca`` (in its SANs, or with ``san`` off only as its CN)."""
    cert_file, key_file = ca.issue(NAME, dns=[NAME] if san else []).write(tmp / "server.pem", tmp / "server.key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class FakeGitLab:
    """GitLab's user/runners API as the provider uses it (docs.gitlab.com/api/users, /runners)."""

    port: int = 0
    runners: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    next_id: int = 41
    too_many: int = 0  # answer this many requests 429 first
    echo_auth_in_errors: bool = False  # a hostile server that repeats the token back

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:  # noqa: PLR0911 (one per endpoint)
        self.requests.append((method, path, headers, body))
        if self.too_many:
            self.too_many -= 1
            return 429, {"message": "429 Too Many Requests"}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            said = headers.get("authorization", "") if self.echo_auth_in_errors else ""
            return 401, {"message": f"401 Unauthorized {said}".strip()}
        if (method, path) == ("GET", "/api/v4/user"):
            return 200, {"id": 1, "username": "root"}
        if (method, path) == ("POST", "/api/v4/user/runners"):
            self.next_id += 1
            token = f"glrt-{self.next_id:04d}-{'x' * 20}"
            self.runners[self.next_id] = {
                "id": self.next_id,
                "runner_type": body["runner_type"],
                "description": body.get("description", ""),
                "paused": body.get("paused", False),
                "locked": body.get("locked", False),
                "run_untagged": body.get("run_untagged", True),
                "tag_list": body.get("tag_list", []),
                "access_level": body.get("access_level", "not_protected"),
                "maximum_timeout": body.get("maximum_timeout"),
                "maintenance_note": body.get("maintenance_note"),
                "token": token,
            }
            return 201, {"id": self.next_id, "token": token, "token_expires_at": None}
        found = re.fullmatch(r"/api/v4/runners/(\d+)", path)
        runner = self.runners.get(int(found.group(1))) if found else None
        if runner is None:
            said = headers.get("authorization", "") if self.echo_auth_in_errors else ""
            return 404, {"message": f"404 Not found {said}".strip()}
        if method == "GET":
            return 200, {k: v for k, v in runner.items() if k != "token"}
        if method == "PUT":
            runner.update(body)
            return 200, {k: v for k, v in runner.items() if k != "token"}
        if method == "DELETE":
            del self.runners[runner["id"]]
            return 204, None
        return 405, {"message": "405 Method Not Allowed"}


@contextlib.contextmanager
def fake_gitlab(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """The fake serving on 127.0.0.1 (reached by NAME only through a resolve map), stopped after."""
    ca = make_ca("forgeway test CA lab")
    ca_file = ca.write(tmp_path / "ca-lab.pem")
    fake = FakeGitLab()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.answer(self.command, self.path, headers, json.loads(raw) if raw else None)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    class TLSServer(ThreadingHTTPServer):
        context = server_context(tmp_path, ca)  # a test may swap it: each connection takes the current one

        def get_request(self) -> tuple[Any, Any]:
            sock, address = super().get_request()
            return self.context.wrap_socket(sock, server_side=True), address

    server = TLSServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            fake=fake, ca=ca, ca_file=ca_file, tmp=tmp_path, base=f"https://{NAME}:{fake.port}/api/v4/", server=server
        )
    finally:
        server.shutdown()
        server.server_close()
