"""The Woodpecker stand-in (tools/lab/standin_image/woodpecker_standin/) against the Gitea stand-in, as plain processes.

No container, no namespace: the Gitea stand-in (tests/lab/test_gitea_standin.py's) over TLS
with a test CA, the Woodpecker server configured as forgeway will configure it (client ID and
secret as ``*_FILE``, the agent secret), a browser's sign-in through the OAuth2 code flow, the
admin's token, agents connecting with their labels (one with a wrong secret, refused), and a
job run through a recording Docker Engine API on a unix socket. A real dockerd runs the job in
tests/lab/test_gitea_standin_image.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import platform
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.lab.test_gitea_standin import CREATE_ADMIN, Gitea, free_port, make_gitea, token_args

STANDIN = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "woodpecker_standin"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


class FakeDocker(socketserver.ThreadingUnixStreamServer):
    """The Docker Engine API calls a job makes, recorded; the job exits 3 saying hello."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        outer = self

        class Api(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def _any(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append((self.command, self.path, json.loads(raw) if raw else None))
                path = urlsplit(self.path).path
                status, body = 404, b'{"message":"no such container"}'
                if path == "/containers/create":
                    status, body = 201, b'{"Id":"c0ffee","Warnings":[]}'
                elif path.endswith("/start") or self.command == "DELETE":
                    status, body = 204, b""
                elif path.endswith("/wait"):
                    status, body = 200, b'{"StatusCode":3}'
                elif path.endswith("/logs"):
                    status, body = 200, b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any

        super().__init__(str(path), Api)


@pytest.fixture
def docker_sock(tmp_path: Path) -> Iterator[FakeDocker]:
    server = FakeDocker(tmp_path / "docker.sock")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()


def _http(port: int, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    conn.close()
    return out


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            _http(port, "GET", "/healthz")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on {port}")


def test_sign_in_through_gitea_agents_with_labels_and_a_job(tmp_path: Path, docker_sock: FakeDocker) -> None:
    gitea = make_gitea(tmp_path / "gitea")
    gitea.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _run(tmp_path, gitea, docker_sock, processes)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        gitea.stop()


def _run(tmp: Path, gitea: Gitea, docker: FakeDocker, processes: list[subprocess.Popen[bytes]]) -> None:  # noqa: PLR0915 (one story)
    password = gitea.cli(*CREATE_ADMIN).stdout.split("'")[1]
    token = gitea.cli(*token_args("wp", "write:user")).stdout.strip()
    port, grpc = free_port(), free_port()
    host = f"http://127.0.0.1:{port}"
    status, _, body = gitea.request("POST", "/api/v1/user/applications/oauth2",
                                    {"name": "woodpecker", "redirect_uris": [f"{host}/authorize"],
                                     "confidential_client": True}, {"Authorization": f"token {token}"})  # fmt: skip
    assert status == 201
    app = json.loads(body)
    (tmp / "client").write_text(app["client_id"] + "\n")
    (tmp / "secret").write_text(app["client_secret"] + "\n")
    (tmp / "agent-secret").write_text("the-agent-secret\n")
    server_env = {
        "PATH": os.environ["PATH"], "WOODPECKER_HOST": host, "WOODPECKER_GITEA": "true",
        "WOODPECKER_GITEA_URL": gitea.url, "WOODPECKER_GITEA_CLIENT_FILE": str(tmp / "client"),
        "WOODPECKER_GITEA_SECRET_FILE": str(tmp / "secret"), "WOODPECKER_AGENT_SECRET_FILE": str(tmp / "agent-secret"),
        "WOODPECKER_ADMIN": "forgeway", "WOODPECKER_SERVER_ADDR": f"127.0.0.1:{port}",
        "WOODPECKER_GRPC_ADDR": f"127.0.0.1:{grpc}", "WOODPECKER_DATABASE_DATASOURCE": str(tmp / "wp.sqlite"),
        "SSL_CERT_FILE": str(gitea.ca_file),
    }  # fmt: skip
    server = subprocess.Popen([sys.executable, str(STANDIN / "woodpecker_server.py")], env=server_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    processes.append(server)
    _wait_port(port, server)

    # the browser: Woodpecker -> Gitea (signed in) -> Woodpecker's exact callback -> session
    status, headers, _ = _http(port, "GET", "/login")
    assert status == 303
    authorize = urlsplit(headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}" == gitea.url and authorize.path == "/login/oauth/authorize"
    basic = base64.b64encode(f"forgeway:{password}".encode()).decode()
    status, headers, body = gitea.request("GET", f"{authorize.path}?{authorize.query}",
                                          headers={"Authorization": f"Basic {basic}"})  # fmt: skip
    assert status == 303, body
    callback = urlsplit(headers["location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == f"{host}/authorize"
    status, headers, body = _http(port, "GET", f"{callback.path}?{callback.query}")
    assert status == 303, body
    cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
    status, _, wp_token = _http(port, "POST", "/api/user/token", cookie)
    assert status == 200 and wp_token
    admin = {"Authorization": f"Bearer {wp_token.decode()}"}
    assert json.loads(_http(port, "GET", "/api/user", admin)[2]) == {"id": 1, "login": "forgeway", "admin": True}
    assert _http(port, "GET", "/api/agents")[0] == 401
    # a replayed callback (state used) is refused
    assert _http(port, "GET", f"{callback.path}?{callback.query}")[0] == 400

    agent_env = {"PATH": os.environ["PATH"], "WOODPECKER_SERVER": f"127.0.0.1:{grpc}", "WOODPECKER_BACKEND": "docker",
                 "DOCKER_HOST": f"unix://{docker.server_address}"}  # fmt: skip
    wrong = subprocess.run([sys.executable, str(STANDIN / "woodpecker_agent.py")], capture_output=True, text=True,
                           timeout=30, check=False, env={**agent_env, "WOODPECKER_AGENT_SECRET": "not-it",
                                            "WOODPECKER_AGENT_CONFIG_FILE": str(tmp / "wrong.conf")})  # fmt: skip
    assert wrong.returncode == 1 and "could not auth agent" in wrong.stdout and "Unauthenticated" in wrong.stdout
    for name in ("runner-a", "runner-b"):
        agent = subprocess.Popen([sys.executable, str(STANDIN / "woodpecker_agent.py")], env={
            **agent_env, "WOODPECKER_AGENT_SECRET_FILE": str(tmp / "agent-secret"), "WOODPECKER_HOSTNAME": name,
            "WOODPECKER_AGENT_LABELS": f"forgeway-host={name},arch={ARCH}",
            "WOODPECKER_AGENT_CONFIG_FILE": str(tmp / f"{name}.conf")}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)  # fmt: skip
        processes.append(agent)
    deadline = time.monotonic() + 20
    agents: list[dict[str, Any]] = []
    while len(agents) < 2 and time.monotonic() < deadline:
        agents = json.loads(_http(port, "GET", "/api/agents", admin)[2])
        time.sleep(0.2)
    assert sorted(a["name"] for a in agents) == ["runner-a", "runner-b"], agents
    for a in agents:
        assert a["platform"] == f"linux/{ARCH}" and a["backend"] == "docker" and a["version"] == "2.8.3"
        assert a["custom_labels"] == {"forgeway-host": a["name"], "arch": ARCH}
        assert time.time() - a["last_contact"] < 10

    # a job for runner-b's label runs there, as a container through the docker API
    status, _, body = _http(port, "POST", "/api/standin/jobs", {**admin, "Content-Type": "application/json"},
                            json.dumps({"image": "forgeway-lab/base:1.0", "commands": ["echo hello", "exit 3"],
                                        "labels": {"forgeway-host": "runner-b"}}).encode())  # fmt: skip
    assert status == 200
    job_id = json.loads(body)["id"]
    job: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while job.get("state") not in ("success", "failure") and time.monotonic() < deadline:
        job = json.loads(_http(port, "GET", f"/api/standin/jobs/{job_id}", admin)[2])
        time.sleep(0.2)
    runner_b = next(a["id"] for a in agents if a["name"] == "runner-b")
    assert job == {"id": job_id, "state": "failure", "exit_code": 3, "log": "hello\n", "agent_id": runner_b}
    create = next(c for c in docker.calls if c[1].startswith("/containers/create"))
    assert create[2]["Image"] == "forgeway-lab/base:1.0" and create[2]["Entrypoint"] == ["/bin/sh", "-c"]
    assert create[2]["Cmd"] == ["set -e\necho hello\nexit 3"] and create[2]["Labels"]["wp_job"] == str(job_id)
    assert [c[0] for c in docker.calls if c[1].startswith("/containers/c0ffee")] == ["POST", "POST", "GET", "DELETE"]

    # a restarted agent keeps its id (agent.conf), as the real one
    processes[-1].terminate()
    processes[-1].wait(timeout=10)
    conf = json.loads((tmp / "runner-b.conf").read_text())
    assert conf == {"agent_id": runner_b}
