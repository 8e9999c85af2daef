"""The GitLab stand-in's host for its lab tests (test_gitlab_standin.py): a namespace of its
own with a real dockerd holding the image, and the program's side of the container
(GITLAB_OMNIBUS_CONFIG from render_gitlab_rb, the root password, the volumes, the TLS
files uploaded before start, the ports on the host's address) done as the program does it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from components.gitlab import (
    PRIVATE_FILE_PERMISSIONS,
    PUBLIC_FILE_PERMISSIONS,
    SECRETS_FILE,
    omnibus_config,
    secrets_rb,
)
from components.render.gitlab import GitLabSettings, render_gitlab_rb
from tests.certs import gitlab_ssl
from tests.lab.netns import isolated_netns, require_docker_tools
from tools.lab.docker import DaemonInfo, docker_client, docker_env
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import GITLAB_STANDIN, ensure_image
from tools.lab.machine import Machine
from tools.lab.runc_bounded import runtime_args

ADDRESS = "203.0.113.78"  # only inside the test's own namespace, which has no link out
DOMAIN = "gitlab.standin.test"
PASSWORD = "lab s3cret 'pw' for root"  # noqa: S105 (a test value; spaces and quotes on purpose)
REGISTRY = f"{ADDRESS}:5050"  # the daemon's name for it (it cannot resolve DOMAIN)
PORTS = (80, 443, 22, 5050)
VOLUMES = {"gs-config": "/etc/gitlab", "gs-logs": "/var/log/gitlab", "gs-data": "/var/opt/gitlab"}
HEALTHCHECK = ["/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10"]  # the program's


def standin_settings(**overrides: object) -> GitLabSettings:
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "https_public_port": 443,
        "ssh_public_port": 22,
        "forwarding_mode": "snat",
        "vps_tunnel_address": "10.8.0.1",
        "http_public_port": 80,
        "registry_public_port": 5050,
        **overrides,
    }
    return GitLabSettings(**fields)  # type: ignore[arg-type]


GITLAB_RB = render_gitlab_rb(standin_settings()).text
PROGRAM_CONFIG = omnibus_config(GITLAB_RB)  # GITLAB_OMNIBUS_CONFIG as the program sets it


class Host:
    """The namespace, its dockerd (with the image), and a scratch directory."""

    def __init__(self, netns: str, daemon: DaemonInfo, scratch: Path) -> None:
        self.netns, self.daemon, self.scratch = netns, daemon, scratch
        self.client_config = scratch / "docker-client"  # docker login writes here, not to ~/.docker
        self.client_config.mkdir()

    def docker(
        self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None, check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        cmd = [docker_client(), *args]
        done = subprocess.run(
            cmd, input=input, capture_output=True, timeout=timeout, check=False,
            env={**os.environ, **docker_env(self.daemon), "DOCKER_CONFIG": str(self.client_config), **(env or {})},
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}")
        return done

    def in_ns(self, *cmd: str, input: bytes | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
        argv = Machine("host", self.netns).argv(cmd)
        return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)

    def logs(self, name: str) -> str:
        done = self.docker("logs", name, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")


@contextlib.contextmanager
def standin_host() -> Iterator[Host]:
    """A namespace with no link out and its own dockerd holding the stand-in image."""
    require_docker_tools("curl", "ssh-keyscan")
    scratch = Path(tempfile.mkdtemp(prefix="fwgs-"))
    try:
        with isolated_netns("fwgs", ADDRESS) as netns:
            daemon = None
            try:
                started = time.monotonic()
                # runtime_args: --privileged (the dind test) on a machine with a reduced bounding set
                extra = ("--insecure-registry", REGISTRY, *runtime_args())
                daemon = start_dockerd(netns, scratch / "docker", index=9, extra_args=extra)
                print(f"\ndockerd start: {time.monotonic() - started:.2f}s")
                print(f"ensure_image: {ensure_image(daemon, GITLAB_STANDIN)}")
                yield Host(netns, daemon, scratch)
            finally:
                if daemon is not None:
                    stop_dockerd(daemon)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def certificates(directory: Path) -> Path:
    """A throwaway CA and its server certificate for DOMAIN and ADDRESS: ssl/<DOMAIN>.{crt,key}; the CA's path."""
    return gitlab_ssl(directory, DOMAIN, ADDRESS)


def program_files(directory: Path, *, key_mode: str = PRIVATE_FILE_PERMISSIONS) -> dict[str, tuple[bytes, str]]:
    """What the program uploads, with its modes: the secrets file and (own-ca) the certificate and key."""
    ssl = directory / "ssl"
    return {
        SECRETS_FILE: (secrets_rb(PASSWORD).encode(), PRIVATE_FILE_PERMISSIONS),
        f"/etc/gitlab/ssl/{DOMAIN}.crt": ((ssl / f"{DOMAIN}.crt").read_bytes(), PUBLIC_FILE_PERMISSIONS),
        f"/etc/gitlab/ssl/{DOMAIN}.key": ((ssl / f"{DOMAIN}.key").read_bytes(), key_mode),
    }


def upload(host: Host, name: str, files: dict[str, tuple[bytes, str]]) -> None:
    """Into a created container, as the provider does: a tar, the mode given, no owner (root)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), int(mode, 8)
            tar.addfile(info, io.BytesIO(data))
    host.docker("cp", "-", f"{name}:/", input=out.getvalue())


def create(
    host: Host, name: str, *, gitlab_rb: str = PROGRAM_CONFIG, password: str | None = None, fresh: bool = False
) -> None:
    """docker create as the program does it: env, volumes, ports on the host's address.

    ``fresh``: volumes of the container's own (``docker rm -v`` removes them), not the shared ones.
    """
    env = {"GITLAB_OMNIBUS_CONFIG": gitlab_rb}
    args = ["-e", "GITLAB_OMNIBUS_CONFIG"]  # values from the client's environment: never on a command line
    if password is not None:
        env["GITLAB_ROOT_PASSWORD"] = password
        args += ["-e", "GITLAB_ROOT_PASSWORD"]
    for volume, path in VOLUMES.items():
        args += ["-v", path if fresh else f"{volume}:{path}"]
    for port in PORTS:
        args += ["-p", f"{ADDRESS}:{port}:{port}"]
    host.docker("create", "--name", name, "--hostname", DOMAIN, *args, GITLAB_STANDIN, env=env)


def wait_healthy(host: Host, name: str, timeout: float = 120.0) -> float:
    """Seconds until the program's healthcheck command passes; fails at once if the container exits."""
    started = time.monotonic()
    while True:
        state = json.loads(host.docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            raise AssertionError(f"{name} exited ({state['ExitCode']}):\n{host.logs(name)}")
        if host.docker("exec", name, *HEALTHCHECK, check=False).returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{name} not healthy in {timeout}s:\n{host.logs(name)}")
        time.sleep(0.5)


def started(host: Host, name: str) -> Path:
    """The stand-in created, given the program's files and started as the program does, once
    healthy; the CA's path (for the dind and registry modules)."""
    ca = certificates(host.scratch)
    create(host, name)
    upload(host, name, program_files(host.scratch))
    host.docker("start", name)
    print(f"{name} healthy after {wait_healthy(host, name):.1f}s")
    return ca


def wait_exit(host: Host, name: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(host.docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            return int(state["ExitCode"])
        assert time.monotonic() < deadline, f"{name} still running after {timeout}s:\n{host.logs(name)}"
        time.sleep(0.2)


def curl(host: Host, ca: Path, url: str, *, auth: bool = False) -> tuple[int, str]:
    """(status, headers and body) of GET ``url`` from the namespace, DOMAIN resolving to ADDRESS."""
    cmd = ["curl", "-sS", "-D", "-", "--max-time", "10", "--cacert", str(ca)]
    cmd += [arg for port in PORTS for arg in ("--resolve", f"{DOMAIN}:{port}:{ADDRESS}")]
    config = ""
    if auth:  # the password goes on stdin, as curl config
        escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
        cmd += ["-K", "-"]
        config = f'user = "root:{escaped}"\n'
    done = host.in_ns(*cmd, url, input=config.encode())
    assert done.returncode == 0, f"curl {url}: {done.stderr.decode()}"
    text = done.stdout.decode(errors="replace")
    return int(text.split(None, 2)[1]), text


def host_key(host: Host) -> str:
    done = host.in_ns("ssh-keyscan", "-T", "10", "-p", "22", "-t", "ed25519", ADDRESS)
    keys = [line.split(None, 1)[1] for line in done.stdout.decode().splitlines() if not line.startswith("#")]
    assert len(keys) == 1, f"ssh-keyscan: {done.stdout.decode()} {done.stderr.decode()}"
    return keys[0]


def tiny_image() -> bytes:
    """A one-file root file system for `docker import`: 3 MiB that do not compress."""
    data = os.urandom(3 << 20)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("noise.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
