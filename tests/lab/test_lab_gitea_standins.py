"""What the Gitea lab needed of the stand-ins beyond their first cut, as plain processes
(seconds, no namespace, no lock): the program drives them as it drives the real products.

* Gitea's admin EditUser, ``PATCH /api/v1/admin/users/{username}`` (routers/api/v1/admin/user.go):
  components/scripts/gitea-admin.sh sets the admin's password with it.
* Woodpecker's server with ``WOODPECKER_SERVER_CERT``/``_KEY``: TLS on
  ``WOODPECKER_SERVER_ADDR_TLS``, the plain address redirecting (cmd/server/server.go):
  components/woodpecker.py serves Woodpecker that way.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

from tests.certs import make_ca
from tests.lab.test_gitea_standin import (
    CREATE_ADMIN,
    CREATE_DEV,
    DEV_PASSWORD,
    Gitea,
    free_port,
    make_gitea,
    token_args,
)

SERVER = Path(__file__).resolve().parents[2] / "tools/lab/standin_image/woodpecker_standin/woodpecker_server.py"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_an_admin_sets_a_users_password_through_the_admin_api(tmp_path: Path) -> None:
    gitea = make_gitea(tmp_path)
    gitea.start()
    try:
        _edit_user(gitea)
    finally:
        gitea.stop()


def _edit_user(gitea: Gitea) -> None:
    assert gitea.cli(*CREATE_ADMIN).returncode == 0
    assert gitea.cli(*CREATE_DEV).returncode == 0
    admin = gitea.cli(*token_args("all", "all")).stdout.strip()
    narrow = gitea.cli(*token_args("narrow", "write:user")).stdout.strip()
    dev = gitea.cli(*token_args("dev", "all", user="dev")).stdout.strip()
    body = {"login_name": "forgeway", "source_id": 0, "email": "admin@example.test",
            "password": "new-password-1", "must_change_password": False}  # fmt: skip
    path = "/api/v1/admin/users/forgeway"
    assert gitea.request("PATCH", path, body, {"Authorization": f"token {narrow}"})[0] == 403  # needs write:admin
    assert gitea.request("PATCH", path, body, {"Authorization": f"token {dev}"})[0] == 403  # a site admin only
    assert gitea.request("PATCH", "/api/v1/admin/users/nobody", body, {"Authorization": f"token {admin}"})[0] == 404
    status, _, answer = gitea.request("PATCH", path, body, {"Authorization": f"token {admin}"})
    assert (status, json.loads(answer)["login"]) == (200, "forgeway")
    assert gitea.request("GET", "/api/v1/user", headers=_basic("forgeway", "new-password-1"))[0] == 200
    assert gitea.request("GET", "/api/v1/user", headers=_basic("forgeway", "wrong-password"))[0] == 401
    short = {**body, "password": "short"}
    assert gitea.request("PATCH", path, short, {"Authorization": f"token {admin}"})[0] == 422
    assert gitea.request("GET", "/api/v1/user", headers=_basic("dev", DEV_PASSWORD))[0] == 200  # others untouched


def test_woodpecker_server_serves_tls_with_its_cert_and_redirects_plain_http(tmp_path: Path) -> None:
    ca = make_ca("woodpecker tls test CA")
    cert, key = ca.issue("ci.test", dns=["ci.test"], ips=["127.0.0.1"]).write(tmp_path / "c.crt", tmp_path / "c.key")
    ca_file = ca.write(tmp_path / "ca.crt")
    plain, tls, grpc = free_port(), free_port(), free_port()
    host = f"https://ci.test:{tls}"
    env = {"PATH": os.environ["PATH"], "WOODPECKER_HOST": host, "WOODPECKER_GITEA": "true",
           "WOODPECKER_GITEA_URL": "https://gitea.test", "WOODPECKER_GITEA_CLIENT": "c",
           "WOODPECKER_GITEA_SECRET": "s", "WOODPECKER_AGENT_SECRET": "a",
           "WOODPECKER_SERVER_ADDR": f"127.0.0.1:{plain}", "WOODPECKER_SERVER_ADDR_TLS": f"127.0.0.1:{tls}",
           "WOODPECKER_GRPC_ADDR": f"127.0.0.1:{grpc}", "WOODPECKER_SERVER_CERT": str(cert),
           "WOODPECKER_SERVER_KEY": str(key), "WOODPECKER_DATABASE_DATASOURCE": str(tmp_path / "db")}  # fmt: skip
    process = subprocess.Popen([sys.executable, str(SERVER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        context.check_hostname = False  # 127.0.0.1 is in the certificate; the name is ci.test
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", tls, context=context, timeout=10)
                conn.request("GET", "/healthz")
                assert conn.getresponse().status == 200
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, "no TLS answer within 20 s"
                time.sleep(0.1)
        redirecting = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
        redirecting.request("GET", "/login?x=1")
        response = redirecting.getresponse()
        assert (response.status, response.getheader("Location")) == (301, f"{host}/login?x=1")
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Half a pair is refused, naming both.
    lone = {k: v for k, v in env.items() if k != "WOODPECKER_SERVER_KEY"}
    done = subprocess.run([sys.executable, str(SERVER)], env=lone, capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip
    assert done.returncode == 1 and "WOODPECKER_SERVER_CERT and WOODPECKER_SERVER_KEY" in done.stdout, done.stdout
