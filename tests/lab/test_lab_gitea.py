"""The lab's Gitea variant (`make lab FORGE=gitea`, docs/lab-gitea.md) on the session's lab.

One extra apply: the module starts from the GitLab stack destroyed (``destroyed_lab``, its
protected volumes kept, as the tests that start from there share it), applies the Gitea
variant (its own state, tools/lab/topology.py state_file) once, and destroys it at the end,
leaving the GitLab stack destroyed for the next such test. Its first up, without
``allow_forge_change``, shows the forge-switch guard refusing: GitLab's volumes hold data.
Secrets (the admin's password and token) reach the client's probes on stdin only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.make_lab import LAB_DIR, MakeLab, ssh_keys_offered
from tests.stacks import ROOT
from tools.lab.config import CI_PORT, GITEA_DOMAIN
from tools.lab.machine import CommandFailed

GITEA_STATE = LAB_DIR / "state-gitea.json"
WOODPECKER = f"https://{GITEA_DOMAIN}:{CI_PORT}"
ADMIN = "forgeway-admin"  # gitea.admin_username's default
RANDOM = "random:index/randomPassword:RandomPassword::"
COMMAND = "command:remote:Command::"


@dataclass
class GiteaLab:
    lab: MakeLab
    refused: subprocess.CompletedProcess[str]  # the up without allow_forge_change
    applied_seconds: float

    def entries(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(GITEA_STATE.read_text())["entries"]
        return loaded

    def admin_password(self) -> str:
        return str(self.entries()[f"{RANDOM}home-gitea-admin-password"]["outputs"]["result"])

    def admin_token(self) -> str:
        return str(self.entries()[f"{COMMAND}home-gitea-admin"]["outputs"]["stdout"]).strip()

    def probe(self, request: dict[str, Any]) -> Any:
        """:data:`PROBE` in the client namespace, ``request`` (secrets included) on its stdin."""
        done = self.lab.machine("client").execute(
            ["python3", "-c", PROBE], stdin=json.dumps({**request, "ca": self.lab.ca_certificate()})
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tools.lab ARGS`` (not MakeLab.run: the GitLab stack stays recorded as destroyed)."""
    return subprocess.run([sys.executable, "-m", "tools.lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def gitea_lab(_session_make_lab: MakeLab) -> Iterator[GiteaLab]:
    lab = _session_make_lab
    lab.ensure_destroyed()
    refused = _lab("up", "--forge", "gitea")
    started = time.monotonic()
    up = _lab("up", "--forge", "gitea", "--set", "allow_forge_change=true")
    applied = time.monotonic() - started
    try:
        assert up.returncode == 0, f"lab up --forge gitea: {up.stderr[-4000:]}"
        yield GiteaLab(lab, refused, applied)
    finally:
        down = _lab("destroy", "--forge", "gitea")
        assert down.returncode == 0, f"lab destroy --forge gitea: {down.stderr[-3000:]}"


# The client's probes (its namespace's /etc/hosts: the public names are the VPS), with
# the stack's CA only. Request on stdin: {"do": ..., "ca": ..., secrets ...}.
PROBE = r"""
import http.client, http.cookiejar, json, ssl, sys, urllib.parse, urllib.request
req = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=req["ca"])
jar = http.cookiejar.CookieJar()

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                     urllib.request.HTTPCookieProcessor(jar), NoRedirect())

def call(url, data=None, headers=None, method=None):
    r = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()

gitea, wp = req["gitea"], req["woodpecker"]
out = {}
if req["do"] == "version":
    out["version"] = call(gitea + "/api/v1/version")
elif req["do"] == "apps":
    out["apps"] = call(gitea + "/api/v1/user/applications/oauth2", headers={"Authorization": "token " + req["token"]})
elif req["do"] == "agents":
    # Woodpecker's sign-in as a browser does it: Gitea's login form, Woodpecker's /login,
    # Gitea's authorize, Woodpecker's /authorize; then a personal token for the API.
    form = urllib.parse.urlencode({"user_name": req["user"], "password": req["password"]}).encode()
    out["gitea_login"] = call(gitea + "/user/login", data=form)[0]
    status, headers, _ = call(wp + "/login")
    out["login"] = [status, headers.get("Location", "")]
    status, headers, body = call(headers["Location"])
    out["authorize"] = [status, headers.get("Location", ""), body[:300]]
    status, headers, body = call(headers["Location"])
    out["callback"] = [status, body[:300]]
    status, _, token = call(wp + "/api/user/token", data=b"", method="POST")
    out["token_status"] = status
    out["agents"] = call(wp + "/api/agents", headers={"Authorization": "Bearer " + token.strip()})
json.dump(out, sys.stdout)
"""


def _urls() -> dict[str, str]:
    return {"gitea": f"https://{GITEA_DOMAIN}", "woodpecker": WOODPECKER}


def test_a_forge_switch_on_a_stack_with_data_is_refused(gitea_lab: GiteaLab, destroyed_lab: MakeLab) -> None:
    """GitLab's volumes hold data: the Gitea variant's first up fails at the guard, whose
    message names them and allow_forge_change. (That no host changed before it is the
    program's ordering, tests/program; the up that follows is allowed.)"""
    assert gitea_lab.refused.returncode != 0
    assert "forgeway-gitlab-" in gitea_lab.refused.stderr and "allow_forge_change" in gitea_lab.refused.stderr, (
        gitea_lab.refused.stderr[-3000:]
    )
    print(f"gitea variant applied in {gitea_lab.applied_seconds:.0f} s")


def test_https_ssh_on_22_and_registry_through_the_vps(gitea_lab: GiteaLab, destroyed_lab: MakeLab) -> None:
    lab = gitea_lab.lab
    status, _, body = gitea_lab.probe({"do": "version", **_urls()})["version"]
    assert (status, json.loads(body)) == (200, {"version": "1.22.6"})
    home = lab.machine("home")
    key = home.docker("exec", "forgeway-gitea", "cat", "/data/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert key in ssh_keys_offered(lab, 22), "Gitea's SSH is not what the VPS's port 22 offers"
    # The registry (Gitea packages) on the https name, from the client's docker, trusting the CA.
    certs = LAB_DIR / "client" / "etc-docker" / "certs.d" / GITEA_DOMAIN
    certs.mkdir(parents=True, exist_ok=True)
    (certs / "ca.crt").write_text(Path(lab.ca_certificate()).read_text())
    client, config = lab.machine("client"), lab.docker_config("client")
    logged_in = client.docker_execute("login", GITEA_DOMAIN, "-u", ADMIN, "--password-stdin",
                                      stdin=gitea_lab.admin_password().encode(), config=config)  # fmt: skip
    assert logged_in.returncode == 0, logged_in.stderr
    tag = f"{GITEA_DOMAIN}/{ADMIN}/lab-client:{time.time_ns()}"
    try:
        client.docker("import", "-", tag, stdin=_layer(), config=config)
        layers = client.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", tag, config=config)
        client.docker("push", tag, config=config)
        client.docker("rmi", tag, config=config)
        client.docker("pull", tag, config=config)
    except CommandFailed as failed:
        raise AssertionError(f"push and pull through the VPS: {failed}") from failed
    assert client.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", tag, config=config) == layers


def _layer() -> bytes:
    import io
    import os
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = 64 * 1024
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    return layer.getvalue()


def test_the_oauth_callback_is_exactly_woodpeckers_authorize(gitea_lab: GiteaLab, destroyed_lab: MakeLab) -> None:
    status, _, body = gitea_lab.probe({"do": "apps", "token": gitea_lab.admin_token(), **_urls()})["apps"]
    assert status == 200, body
    apps = [a for a in json.loads(body) if a["name"] == "forgeway-woodpecker"]
    assert [a["redirect_uris"] for a in apps] == [[f"{WOODPECKER}/authorize"]], body


def test_both_agents_connected_with_their_arch_labels(gitea_lab: GiteaLab, destroyed_lab: MakeLab) -> None:
    request = {"do": "agents", "user": ADMIN, "password": gitea_lab.admin_password(), **_urls()}
    deadline = time.monotonic() + 60
    while True:
        seen = gitea_lab.probe(request)
        status, _, body = seen["agents"]
        assert status == 200, seen
        agents = {a["name"]: a for a in json.loads(body)}
        now = time.time()
        fresh = {name for name, a in agents.items() if now - a["last_contact"] < 60}
        if fresh >= {"runner-arm", "runner-amd"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name, arch in (("runner-arm", "arm64"), ("runner-amd", "amd64")):
        assert name in fresh, f"agent {name} not connected: {agents}"
        assert agents[name]["platform"] == f"linux/{arch}", agents[name]
        assert agents[name]["custom_labels"].get("platform") == f"linux/{arch}", agents[name]
        assert agents[name]["backend"] == "docker", agents[name]
