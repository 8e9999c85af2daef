"""The Gitea stand-in (tools/lab/standin_image/gitea_standin/) as plain processes: no container, no namespace.

``gitea web`` on a free local port over TLS with a test CA, its settings only from
``GITEA__section__KEY`` variables, and the ``gitea`` CLI on the same data directory, as
forgeway will drive them (docs/lab-gitea.md): users and tokens from the CLI, the OAuth2
application from the API, the authorization-code flow with its exact redirect URI, and the
registry's token auth in front of a recording backend. The container-level checks (sshd,
docker-registry, docker push) are tests/lab/test_gitea_standin_image.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.certs import make_ca

STANDIN = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "gitea_standin"
GITEA = STANDIN / "gitea.py"
UNSAFE = {"GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT": "true"}  # these tests run as root; Gitea's override


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gitea:
    data: Path
    port: int
    env: dict[str, str]
    ca: ssl.SSLContext
    ca_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cli(self, *args: str, root_ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(UNSAFE if root_ok else {})}
        return subprocess.run(
            [sys.executable, str(GITEA), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ca, timeout=30)
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        hdrs = {**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        response = conn.getresponse()
        out = (response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        conn.close()
        return out

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(GITEA), "web"],
            env={**self.env, **UNSAFE},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode() if self.process.stdout else ""
                raise AssertionError(f"gitea web exited {self.process.returncode}: {out}")
            try:
                if self.request("GET", "/api/v1/version")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gitea web did not answer within 20 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def make_gitea(tmp: Path, **extra: str) -> Gitea:
    ca = make_ca("gitea standin test CA")
    ssl_dir = tmp / "ssl"
    ssl_dir.mkdir(parents=True, exist_ok=True)
    cert, key = ca.issue("gitea.test", dns=["gitea.test"], ips=["127.0.0.1"]).write(
        ssl_dir / "c.crt", ssl_dir / "c.key"
    )
    ca_file = ca.write(tmp / "ca.crt")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "GITEA_CUSTOM": str(tmp / "data" / "gitea"),
        "GITEA__server__ROOT_URL": f"https://127.0.0.1:{port}/",
        "GITEA__server__DOMAIN": "127.0.0.1",
        "GITEA__server__PROTOCOL": "https",
        "GITEA__server__HTTP_ADDR": "127.0.0.1",
        "GITEA__server__HTTP_PORT": str(port),
        "GITEA__server__CERT_FILE": str(cert),
        "GITEA__server__KEY_FILE": str(key),
        "GITEA__security__INSTALL_LOCK": "true",
        "GITEA_STANDIN_BIN": str(GITEA),
        **extra,
    }
    return Gitea(tmp / "data", port, env, ssl.create_default_context(cafile=str(ca_file)), ca_file)


@pytest.fixture
def gitea(tmp_path: Path) -> Iterator[Gitea]:
    g = make_gitea(tmp_path)
    g.start()
    try:
        yield g
    finally:
        g.stop()


# `gitea admin user create` of the admin, as forgeway bootstraps it; and of a plain user
CREATE_ADMIN = ("admin", "user", "create", "--username", "forgeway", "--email", "admin@example.test",
                "--random-password", "--admin", "--must-change-password=false")  # fmt: skip
DEV_PASSWORD = "a-password-123"  # noqa: S105 (a test user's)
CREATE_DEV = ("admin", "user", "create", "--username", "dev", "--email", "d@example.test", "--password", DEV_PASSWORD,
              "--must-change-password=false")  # fmt: skip


def token_args(name: str, scopes: str, user: str = "forgeway") -> tuple[str, ...]:
    return ("admin", "user", "generate-access-token", "--username", user, "--token-name", name, "--scopes", scopes,
            "--raw")  # fmt: skip


def admin_token(g: Gitea, scopes: str = "write:user,write:repository,write:package") -> str:
    made = g.cli(*CREATE_ADMIN)
    assert made.returncode == 0, made.stderr
    token = g.cli(*token_args("t1", scopes))
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


# --------------------------------------------------------------------------- CLI


def test_cli_refuses_root_as_gitea_does(gitea: Gitea) -> None:
    assert os.geteuid() == 0, "this check needs root (the lab tier runs as root)"
    done = gitea.cli("admin", "user", "list", root_ok=False)
    assert done.returncode == 1
    assert "Gitea is not supposed to be run as root" in done.stderr
    made = gitea.cli(
        "admin", "user", "create", "--username", "u", "--email", "u@example.test", "--random-password", root_ok=False
    )
    assert made.returncode == 1 and "u@example.test" not in gitea.cli("admin", "user", "list").stdout


def test_cli_creates_admin_and_tokens_with_gitea_words(gitea: Gitea) -> None:
    made = gitea.cli(*CREATE_ADMIN)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("generated random password is '") and lines[0].endswith("'")
    password = lines[0].split("'")[1]
    assert len(password) == 12
    assert lines[1] == "New user 'forgeway' has been successfully created!"
    again = gitea.cli(
        "admin", "user", "create", "--username", "forgeway", "--email", "b@example.test", "--password", "x" * 12
    )
    assert again.returncode == 1 and "user already exists [name: forgeway]" in again.stderr
    neither = gitea.cli("admin", "user", "create", "--username", "other", "--email", "c@example.test")
    assert neither.returncode == 1 and "must set either password or random-password flag" in neither.stderr

    raw = gitea.cli(*token_args("boot", "write:admin,write:user"))
    assert raw.returncode == 0 and len(raw.stdout.strip()) == 40 and raw.stdout.strip().isalnum()
    same_name = gitea.cli("admin", "user", "generate-access-token", "-u", "forgeway", "-t", "boot", "--raw")
    assert same_name.returncode == 1 and "access token name has been used already" in same_name.stderr
    bad_scope = gitea.cli("admin", "user", "generate-access-token", "-u", "forgeway", "-t", "x", "--scopes", "api")
    assert bad_scope.returncode == 1 and "invalid access token scope" in bad_scope.stderr
    worded = gitea.cli("admin", "user", "generate-access-token", "-u", "forgeway", "-t", "worded")
    assert worded.stdout.startswith("Access token was successfully created: ")
    unscoped = worded.stdout.split(": ")[1].strip()  # Gitea's default --scopes "": no scope, refused
    assert gitea.request("GET", "/api/v1/user", headers={"Authorization": f"token {unscoped}"})[0] == 403

    # the password works (basic auth), the token works (token header), with the admin flag
    status, _, body = gitea.request("GET", "/api/v1/user", headers={"Authorization": f"token {raw.stdout.strip()}"})
    assert status == 200 and json.loads(body)["login"] == "forgeway" and json.loads(body)["is_admin"] is True
    basic = base64.b64encode(f"forgeway:{password}".encode()).decode()
    assert gitea.request("GET", "/api/v1/user", headers={"Authorization": f"Basic {basic}"})[0] == 200
    wrong = base64.b64encode(b"forgeway:not-the-password").decode()
    assert gitea.request("GET", "/api/v1/user", headers={"Authorization": f"Basic {wrong}"})[0] == 401
    assert gitea.request("GET", "/api/v1/user")[0] == 401


def test_settings_come_from_env_into_app_ini_and_bad_ones_are_named(tmp_path: Path) -> None:
    g = make_gitea(tmp_path, GITEA__database__DB_TYPE="postgres")
    done = g.cli("admin", "user", "list")
    assert done.returncode == 1 and "[database] DB_TYPE = 'postgres'" in done.stderr
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    g = make_gitea(tmp_path, GITEA__oauth2__JWT_SECRET__FILE=str(secret_file))
    from tools.lab.standin_image.gitea_standin import gitea_db  # as the entrypoint uses it

    path = gitea_db.write_app_ini(g.env)
    text = path.read_text()
    assert "[server]" in text and f"HTTP_PORT = {g.port}" in text and "JWT_SECRET = s3cret" in text
    assert path.stat().st_mode & 0o777 == 0o600


def test_without_install_lock_the_api_is_not_there(tmp_path: Path) -> None:
    g = make_gitea(tmp_path, GITEA__security__INSTALL_LOCK="false")
    g.process = subprocess.Popen([sys.executable, str(GITEA), "web"], env={**g.env, **UNSAFE})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = g.request("GET", "/api/v1/version")[0]
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 404
    finally:
        g.stop()


# --------------------------------------------------------------------------- OAuth2


def _location(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    parts = urlsplit(headers["location"])
    return parts._replace(query="").geturl(), {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_oauth2_application_and_code_flow_with_exact_redirect_uri(gitea: Gitea) -> None:
    token = admin_token(gitea)
    auth = {"Authorization": f"token {token}"}
    callback = "https://ci.example.test/authorize"
    status, _, body = gitea.request(
        "POST",
        "/api/v1/user/applications/oauth2",
        {"name": "woodpecker", "redirect_uris": [callback], "confidential_client": True},
        auth,
    )
    assert status == 201, body
    app = json.loads(body)
    assert {"id", "client_id", "client_secret", "redirect_uris", "confidential_client"} <= set(app)
    assert app["redirect_uris"] == [callback] and app["client_secret"].startswith("gto_")
    listed = json.loads(gitea.request("GET", "/api/v1/user/applications/oauth2", headers=auth)[2])
    assert [a["client_id"] for a in listed] == [app["client_id"]] and listed[0]["client_secret"] == ""
    # a token without write:user may not
    weak = gitea.cli(*token_args("weak", "read:user")).stdout.strip()
    assert (
        gitea.request(
            "POST",
            "/api/v1/user/applications/oauth2",
            {"name": "x", "redirect_uris": [callback]},
            {"Authorization": f"token {weak}"},
        )[0]
        == 403
    )

    # sign in, then authorize: near-miss redirect URIs are refused without a redirect
    password = DEV_PASSWORD
    assert gitea.cli(*CREATE_DEV).returncode == 0
    status, headers, _ = gitea.request(
        "POST",
        "/user/login",
        raw=urlencode({"user_name": "dev", "password": password}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 303
    cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
    query = {"client_id": app["client_id"], "response_type": "code", "state": "st4te"}
    for near in (
        callback + "/",
        "https://ci.example.test/authorize?x=1",
        "http://ci.example.test/authorize",
        "https://ci.example.test/Authorize",
    ):
        status, headers, body = gitea.request(
            "GET", "/login/oauth/authorize?" + urlencode({**query, "redirect_uri": near}), headers=cookie
        )
        assert status == 400 and b"Unregistered Redirect URI" in body and "location" not in headers, near
    status, headers, _ = gitea.request(
        "GET", "/login/oauth/authorize?" + urlencode({**query, "redirect_uri": callback})
    )
    assert status == 303 and headers["location"].startswith("/user/login?")  # not signed in
    status, headers, _ = gitea.request(
        "GET", "/login/oauth/authorize?" + urlencode({**query, "redirect_uri": callback}), headers=cookie
    )
    assert status == 303
    where, params = _location(headers)
    assert where == callback and params["state"] == "st4te"
    code = params["code"]

    def exchange(**form: str) -> tuple[int, dict[str, Any]]:
        status, _, body = gitea.request(
            "POST",
            "/login/oauth/access_token",
            raw=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return status, json.loads(body)

    good = {
        "grant_type": "authorization_code",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "code": code,
        "redirect_uri": callback,
    }
    assert exchange(**{**good, "client_secret": "gto_wrong"}) == (
        400,
        {"error": "unauthorized_client", "error_description": "invalid client secret"},
    )
    status, tokens = exchange(**good)
    assert status == 200 and tokens["token_type"] == "bearer"  # noqa: S105
    assert tokens["access_token"], tokens
    assert exchange(**good)[1]["error"] == "invalid_grant"  # used once
    user = json.loads(
        gitea.request("GET", "/api/v1/user", headers={"Authorization": f"Bearer {tokens['access_token']}"})[2]
    )
    assert user["login"] == "dev" and user["is_admin"] is False
    # a code asked for with one redirect URI is not exchanged with another
    status, headers, _ = gitea.request(
        "GET", "/login/oauth/authorize?" + urlencode({**query, "redirect_uri": callback}), headers=cookie
    )
    other = exchange(**{**good, "code": _location(headers)[1]["code"], "redirect_uri": "https://evil.test/authorize"})
    assert other[0] == 400 and other[1]["error"] == "unauthorized_client"


# --------------------------------------------------------------------------- registry


@dataclass
class Backend:
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def backend() -> Iterator[Backend]:
    """A recording stand-in for docker-registry: what reached it, and a registry-shaped answer."""
    record = Backend(free_port())

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            body = b""
            if self.headers.get("Transfer-Encoding") == "chunked":
                while (size := int(self.rfile.readline().strip(), 16)) > 0:
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            )
            answer = b'{"name":"forgeway/app","tags":["1"]}'
            self.send_response(202 if self.command == "PATCH" else 200)
            self.send_header("Location", "/v2/forgeway/app/blobs/uploads/u1")
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_PATCH = do_PUT = do_POST = do_HEAD = _any

    server = ThreadingHTTPServer(("127.0.0.1", record.port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield record
    finally:
        server.shutdown()


def test_registry_token_auth_as_gitea_packages(tmp_path: Path, backend: Backend) -> None:
    g = make_gitea(tmp_path, GITEA_STANDIN_REGISTRY_BACKEND=f"127.0.0.1:{backend.port}")
    g.start()
    try:
        token = admin_token(g)
        status, headers, _ = g.request("GET", "/v2/")
        assert status == 401
        assert headers["www-authenticate"] == (
            f'Bearer realm="https://127.0.0.1:{g.port}/v2/token",service="container_registry",scope="*"'
        )
        assert headers["docker-distribution-api-version"] == "registry/2.0"
        basic = base64.b64encode(f"forgeway:{token}".encode()).decode()
        status, _, body = g.request(
            "GET",
            "/v2/token?scope=repository:forgeway/app:push,pull&service=container_registry",
            headers={"Authorization": f"Basic {basic}"},
        )
        assert status == 200
        bearer = {"Authorization": "Bearer " + json.loads(body)["token"]}
        assert g.request("GET", "/v2/", headers=bearer)[0] == 200
        bad = base64.b64encode(b"forgeway:wrong").decode()
        assert g.request("GET", "/v2/token", headers={"Authorization": f"Basic {bad}"})[0] == 401
        assert g.request("GET", "/v2/forgeway/app/tags/list", headers={"Authorization": "Bearer nope"})[0] == 401

        # a chunked upload streams through; the bearer token stays in front
        conn = http.client.HTTPSConnection("127.0.0.1", g.port, context=g.ca, timeout=30)
        conn.request(
            "PATCH",
            "/v2/forgeway/app/blobs/uploads/u1",
            body=iter([b"layer-", b"bytes"]),
            headers={**bearer, "Content-Type": "application/octet-stream"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 202 and response.getheader("Location") == "/v2/forgeway/app/blobs/uploads/u1"
        response.read()
        conn.close()
        seen = backend.seen[-1]
        assert seen["method"] == "PATCH" and seen["body"] == b"layer-bytes" and "authorization" not in seen["headers"]

        # anonymous pull passes, anonymous or foreign push does not; an unknown owner is NAME_UNKNOWN
        status, _, body = g.request("GET", "/v2/token")
        anonymous = {"Authorization": "Bearer " + json.loads(body)["token"]}
        assert g.request("GET", "/v2/forgeway/app/tags/list", headers=anonymous)[0] == 200
        before = len(backend.seen)
        assert g.request("PUT", "/v2/forgeway/app/manifests/1", headers=anonymous, raw=b"{}")[0] == 401
        assert g.cli(*CREATE_DEV).returncode == 0
        dev = base64.b64encode(f"dev:{DEV_PASSWORD}".encode()).decode()
        dev_bearer = {
            "Authorization": "Bearer "
            + json.loads(g.request("GET", "/v2/token", headers={"Authorization": f"Basic {dev}"})[2])["token"]
        }
        assert g.request("PUT", "/v2/forgeway/app/manifests/1", headers=dev_bearer, raw=b"{}")[0] == 403
        assert g.request("GET", "/v2/nobody/app/tags/list", headers=dev_bearer)[0] == 404
        assert len(backend.seen) == before + 0  # none of the refused reached the backend
        assert g.request("PUT", "/v2/dev/app/manifests/1", headers=dev_bearer, raw=b"{}")[0] == 200
    finally:
        g.stop()


def test_state_survives_a_restart_on_the_same_data(gitea: Gitea) -> None:
    token = admin_token(gitea)
    gitea.stop()
    gitea.start()
    status, _, body = gitea.request("GET", "/api/v1/user", headers={"Authorization": f"token {token}"})
    assert status == 200 and json.loads(body)["login"] == "forgeway"
