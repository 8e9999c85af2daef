"""The Gitea and Woodpecker stand-in images (tools/lab/images.py) in a real dockerd: one smoke test each.

A namespace of its own (random name) with its own dockerd (bridge index 15) and CA, reached
from the namespace as a client reaches the forge: Gitea's HTTPS API on 443, ``gitea admin``
through ``docker exec -u git`` (root refused), git over SSH on 22 with a key added through
the API, ``docker login``/``push``/``pull`` through the packages registry's token auth, all of
it kept over a new container on the same /data volume (same SSH host keys). Then Woodpecker's
server signing a user in through Gitea's OAuth2 code flow, two agents (one image relabelled
arm64) listed with their platforms and labels, and a job run through the host's docker socket.

Needs root, docker.io, debootstrap, curl, git and ssh: fails loudly without them, never skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import gitlab_ssl
from tests.lab.netns import generate_key, isolated_netns, require_docker_tools
from tests.lab.standin_host import Host, upload
from tests.lab.test_gitea_standin import CREATE_ADMIN, token_args
from tools.lab.docker import DaemonInfo
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import (
    BASE,
    GITEA_STANDIN,
    WOODPECKER_AGENT_STANDIN,
    WOODPECKER_SERVER_STANDIN,
    ensure_image,
    relabel_architecture,
)
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.91"  # only inside the test's own namespace, which has no link out
DOMAIN = "gitea.lab.test"  # the certificate's name; clients use the address (also in it)
ARM64_AGENT = "forgeway-lab/woodpecker-agent-standin:arm64"
NETWORK = "fwgt"


class Stand(Host):
    """The GitLab stand-in tests' host (docker with its own client config, logs), with the CA and the client's side."""

    def __init__(self, netns: str, daemon: DaemonInfo, scratch: Path) -> None:
        super().__init__(netns, daemon, scratch)
        self.ca = scratch / "ca.crt"

    def run(self, *argv: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        """``argv`` in the namespace (the client's side); its stdout."""
        command = ["env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv]
        done = subprocess.run(
            Machine("client", self.netns).argv(command), input=input, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{argv}: {done.stderr.decode(errors='replace')}"
        return done.stdout.decode()

    def curl(self, *args: str) -> str:
        return self.run("curl", "-sS", "--max-time", "20", "--cacert", str(self.ca), *args)

    def api(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        args = ["-X", method, "-H", f"Authorization: token {token}", "-o", "-", "-w", "\n%{http_code}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        out = self.run(
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            str(self.ca),
            *args,
            f"https://{ADDRESS}/api/v1{path}",
            input=json.dumps(body).encode() if body else None,
        )
        text, _, code = out.rpartition("\n")
        return int(code), json.loads(text) if text.strip() else None

    def wait_ready(self, name: str, probe: list[str]) -> float:
        started = time.monotonic()
        while subprocess.run(Machine("client", self.netns).argv(probe), capture_output=True, check=False).returncode:
            state = json.loads(self.docker("inspect", "--format", "{{json .State}}", name).stdout)
            assert state["Running"], f"{name} exited ({state['ExitCode']}):\n{self.logs(name)}"
            assert time.monotonic() - started < 90, self.logs(name)
            time.sleep(0.3)
        return time.monotonic() - started

    def start_gitea(self) -> float:
        """A new container ``gitea`` on the volume fwgt-data, as the program would run gitea/gitea; seconds to ready."""
        self.docker("rm", "-f", "gitea", check=False)
        env = {
            "ROOT_URL": f"https://{ADDRESS}/",
            "DOMAIN": ADDRESS,
            "SSH_DOMAIN": ADDRESS,
            "SSH_PORT": "22",
            "SSH_LISTEN_PORT": "22",
            "PROTOCOL": "https",
            "HTTP_PORT": "3000",
            "CERT_FILE": "https/cert.pem",
            "KEY_FILE": "https/key.pem",
        }
        args = [arg for key, value in env.items() for arg in ("-e", f"GITEA__server__{key}={value}")]
        self.docker(
            "create",
            "--name",
            "gitea",
            "--network",
            NETWORK,
            "-p",
            f"{ADDRESS}:443:3000",
            "-p",
            f"{ADDRESS}:22:22",
            "-v",
            "fwgt-data:/data",
            "-e",
            "GITEA__security__INSTALL_LOCK=true",
            *args,
            GITEA_STANDIN,
        )
        ssl = self.scratch / "ssl"
        upload(
            self,
            "gitea",
            {
                "/data/gitea/https/cert.pem": ((ssl / f"{DOMAIN}.crt").read_bytes(), "644"),
                "/data/gitea/https/key.pem": ((ssl / f"{DOMAIN}.key").read_bytes(), "600"),
            },
        )
        self.docker("start", "gitea")
        probe = ["curl", "-sSf", "--max-time", "5", "--cacert", str(self.ca), f"https://{ADDRESS}/api/v1/version"]
        return self.wait_ready("gitea", probe)


@pytest.fixture(scope="module")
def stand() -> Iterator[Stand]:
    require_docker_tools("curl", "git", "ssh")
    scratch = Path(tempfile.mkdtemp(prefix="fwgt-"))
    try:
        with isolated_netns("fwgt", ADDRESS) as netns:
            daemon = None
            try:
                gitlab_ssl(scratch, DOMAIN, ADDRESS, "forgeway gitea lab CA")
                certs = scratch / "etc-docker" / "certs.d" / ADDRESS
                certs.mkdir(parents=True)
                shutil.copy(scratch / "ca.crt", certs / "ca.crt")
                daemon = start_dockerd(netns, scratch / "docker", index=15, etc_docker=scratch / "etc-docker")
                for image in (GITEA_STANDIN, WOODPECKER_SERVER_STANDIN, WOODPECKER_AGENT_STANDIN, BASE):
                    print(f"\nensure_image {image}: {ensure_image(daemon, image)}")
                made = Stand(netns, daemon, scratch)
                made.docker("tag", WOODPECKER_AGENT_STANDIN, ARM64_AGENT)
                saved = made.docker("save", ARM64_AGENT).stdout
                made.docker("load", input=relabel_architecture(saved, "arm64"))
                made.docker("network", "create", NETWORK)
                print(f"gitea ready after {made.start_gitea():.1f}s")
                yield made
            finally:
                if daemon is not None:
                    stop_dockerd(daemon)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


ADMIN: dict[str, str] = {}  # password and token of user forgeway, for the Woodpecker test


def _git(stand: Stand, *args: str, cwd: Path) -> str:
    ssh = f"ssh -i {stand.scratch / 'id'} -o UserKnownHostsFile={stand.scratch / 'known_hosts'} -o BatchMode=yes"
    env = {
        "GIT_SSH_COMMAND": ssh,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    return stand.run("git", "-C", str(cwd), *args, env=env)


def test_gitea_cli_api_ssh_registry_and_a_container_replace(stand: Stand) -> None:
    as_root = stand.docker("exec", "gitea", "gitea", "admin", "user", "list", check=False)
    assert as_root.returncode == 1 and b"Gitea is not supposed to be run as root" in as_root.stderr
    made = stand.docker("exec", "-u", "git", "gitea", "gitea", *CREATE_ADMIN).stdout.decode()
    ADMIN["password"] = made.split("'")[1]
    ADMIN["token"] = (
        stand.docker("exec", "-u", "git", "gitea", "gitea", *token_args("boot", "all")).stdout.decode().strip()
    )
    status, user = stand.api("GET", "/user", ADMIN["token"])
    assert status == 200 and user["login"] == "forgeway" and user["is_admin"], user

    # git over SSH on 22, with the key the API added
    key = generate_key(stand.scratch / "id")
    assert stand.api("POST", "/user/keys", ADMIN["token"], {"title": "lab", "key": key})[0] == 201
    status, repo = stand.api("POST", "/user/repos", ADMIN["token"], {"name": "demo"})
    assert status == 201 and repo["ssh_url"] == f"git@{ADDRESS}:forgeway/demo.git", repo
    host_keys = stand.run("ssh-keyscan", "-p", "22", ADDRESS)
    (stand.scratch / "known_hosts").write_text(host_keys)
    work = stand.scratch / "work"
    stand.run("git", "init", "-q", "-b", "main", str(work))
    _git(stand, "commit", "-q", "--allow-empty", "-m", "first", cwd=work)
    _git(stand, "push", "-q", repo["ssh_url"], "main", cwd=work)
    head = _git(stand, "rev-parse", "HEAD", cwd=work).strip()

    # the registry: docker login with the token, push, pull
    image = f"{ADDRESS}/forgeway/base:1"
    stand.docker("tag", BASE, image)
    stand.docker("login", ADDRESS, "-u", "forgeway", "--password-stdin", input=ADMIN["token"].encode())
    stand.docker("push", image)
    stand.docker("rmi", image)
    stand.docker("pull", image)
    denied = stand.docker("push", f"{ADDRESS}/someone-else/base:1", check=False)
    assert denied.returncode != 0

    # a new container on the same volume: same host keys, same users, tokens, repositories, images
    print(f"gitea replaced, ready after {stand.start_gitea():.1f}s")
    assert sorted(stand.run("ssh-keyscan", "-p", "22", ADDRESS).splitlines()) == sorted(host_keys.splitlines())
    assert stand.api("GET", "/user", ADMIN["token"])[0] == 200
    assert _git(stand, "ls-remote", repo["ssh_url"], "main", cwd=work).split()[0] == head
    stand.docker("rmi", image)
    stand.docker("pull", image)


def test_woodpecker_signs_in_through_gitea_and_agents_run_a_job(stand: Stand) -> None:
    assert ADMIN, "runs after the Gitea test, which makes the admin"
    host = f"http://{ADDRESS}:8000"
    status, app = stand.api(
        "POST",
        "/user/applications/oauth2",
        ADMIN["token"],
        {"name": "woodpecker", "redirect_uris": [f"{host}/authorize"], "confidential_client": True},
    )
    assert status == 201, app
    secrets_dir = stand.scratch / "wp"
    secrets_dir.mkdir()
    for name, value in (("client", app["client_id"]), ("secret", app["client_secret"]), ("agent", "lab-agent-secret")):
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o600)
    mount = ["-v", f"{secrets_dir}:/run/wp:ro"]
    stand.docker(
        "run",
        "-d",
        "--name",
        "woodpecker-server",
        "--network",
        NETWORK,
        "-p",
        f"{ADDRESS}:8000:8000",
        *mount,
        "-v",
        f"{stand.ca}:/etc/ssl/forgeway-ca.crt:ro",
        "-e",
        "SSL_CERT_FILE=/etc/ssl/forgeway-ca.crt",
        "-e",
        f"WOODPECKER_HOST={host}",
        "-e",
        "WOODPECKER_GITEA=true",
        "-e",
        f"WOODPECKER_GITEA_URL=https://{ADDRESS}",
        "-e",
        "WOODPECKER_GITEA_CLIENT_FILE=/run/wp/client",
        "-e",
        "WOODPECKER_GITEA_SECRET_FILE=/run/wp/secret",
        "-e",
        "WOODPECKER_AGENT_SECRET_FILE=/run/wp/agent",
        "-e",
        "WOODPECKER_ADMIN=forgeway",
        "-v",
        "fwgt-wp:/var/lib/woodpecker",
        WOODPECKER_SERVER_STANDIN,
    )
    stand.wait_ready("woodpecker-server", ["curl", "-sSf", "--max-time", "5", f"{host}/healthz"])
    for name, image in (("agent-amd64", WOODPECKER_AGENT_STANDIN), ("agent-arm64", ARM64_AGENT)):
        stand.docker(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            *mount,
            "-v",
            f"{stand.daemon.socket}:/var/run/docker.sock",
            "-e",
            "WOODPECKER_SERVER=woodpecker-server:9000",
            "-e",
            "WOODPECKER_AGENT_SECRET_FILE=/run/wp/agent",
            "-e",
            "WOODPECKER_BACKEND=docker",
            "-e",
            f"WOODPECKER_HOSTNAME={name}",
            "-e",
            f"WOODPECKER_AGENT_LABELS=forgeway-host={name}",
            image,
        )

    # the browser's way: Woodpecker -> Gitea's authorize (signed in) -> Woodpecker's callback
    authorize = stand.curl("-o", "/dev/null", "-w", "%{redirect_url}", f"{host}/login")
    assert authorize.startswith(f"https://{ADDRESS}/login/oauth/authorize?"), authorize
    callback = stand.curl("-u", f"forgeway:{ADMIN['password']}", "-o", "/dev/null", "-w", "%{redirect_url}", authorize)
    assert callback.startswith(f"{host}/authorize?code="), callback
    jar = stand.scratch / "cookies"
    stand.curl("-c", str(jar), "-o", "/dev/null", callback)
    token = stand.curl("-b", str(jar), "-X", "POST", f"{host}/api/user/token")
    bearer = ["-H", f"Authorization: Bearer {token}"]
    deadline = time.monotonic() + 60
    agents: list[dict[str, Any]] = []
    while len(agents) < 2 and time.monotonic() < deadline:
        agents = json.loads(stand.curl(*bearer, f"{host}/api/agents"))
        time.sleep(0.5)
    seen = {a["name"]: (a["platform"], a["custom_labels"]) for a in agents}
    assert seen == {
        "agent-amd64": ("linux/amd64", {"forgeway-host": "agent-amd64"}),
        "agent-arm64": ("linux/arm64", {"forgeway-host": "agent-arm64"}),
    }, (agents, stand.logs("agent-arm64"))

    body = json.dumps(
        {"image": BASE, "commands": ["echo job-ran-on-$(uname -m)"], "labels": {"platform": "linux/arm64"}}
    )
    job = json.loads(
        stand.run(
            "curl",
            "-sS",
            *bearer,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            f"{host}/api/standin/jobs",
            input=body.encode(),
        )
    )
    result: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while result.get("state") not in ("success", "failure") and time.monotonic() < deadline:
        result = json.loads(stand.curl(*bearer, f"{host}/api/standin/jobs/{job['id']}"))
        time.sleep(0.5)
    arm64 = next(a["id"] for a in agents if a["name"] == "agent-arm64")
    assert result["state"] == "success" and result["agent_id"] == arm64, (result, stand.logs("agent-arm64"))
    assert result["log"].startswith("job-ran-on-"), result
