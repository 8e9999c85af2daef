"""The applier's docker resources (tools/applier/apply.py, tools/applier/docker_api.py) against a real
dockerd, reached as pulumi-docker reaches it: ssh with the provider's ssh options, then
``docker system dial-stdio`` on the host, whose sshd sets DOCKER_HOST to its daemon.

``Applier.handle`` is driven directly, in the order the engine registers resources:
a Command (whose connection brings the ssh key), the host's docker provider, volumes,
the image, the container. Each "run" is a fresh Applier on the same state file.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from components.render.ssh import SshTarget, ssh_options
from tests.lab.netns import Lab, LabHost
from tools.applier.apply import Applier, ApplyError, Change, destroy
from tools.lab.docker import DaemonInfo, docker
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import BASE, ensure_image
from tools.stack.synth import RegistrationOptions

pytestmark = pytest.mark.lab

PORT = 18080
SECRET = f"s3cr3t-{secrets.token_hex(8)}"
# python3-minimal has no http module: a socket server that answers any request.
APP = """
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
while True:
    c, _ = s.accept()
    c.recv(1000)
    c.sendall(("HTTP/1.0 200 OK\\r\\n\\r\\nmode=" + os.environ["APP_MODE"]).encode())
    c.close()
"""
HEALTH = ["CMD", "python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8080), 1)"]


@dataclass
class Args:
    """What the mock monitor hands the handler (pulumi.runtime.MockResourceArgs), plus options."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str = ""
    custom: bool = True
    options: RegistrationOptions = field(default_factory=RegistrationOptions)


@dataclass
class DockerHostLab:
    host: LabHost
    daemon: DaemonInfo

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker(self.daemon, kind, "inspect", name).stdout)
        return data[0]

    def exists(self, kind: str, name: str) -> bool:
        return docker(self.daemon, kind, "inspect", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def dk() -> Iterator[DockerHostLab]:
    """One namespace host whose sshd points DOCKER_HOST at its own dockerd."""
    base = Path(tempfile.mkdtemp(prefix="fwad-"))
    work = base / "d"
    daemon = None
    with Lab() as lab:
        try:
            host = lab.add_host("dk", extra_env={"DOCKER_HOST": f"unix://{work}/docker.sock"})
            daemon = start_dockerd(host.netns, work, index=11)
            started = time.monotonic()
            ensure_image(daemon, BASE)
            print(f"\nensure_image: {time.monotonic() - started:.1f}s")
            yield DockerHostLab(host, daemon)
        finally:
            if daemon is not None:
                stop_dockerd(daemon)
            shutil.rmtree(base, ignore_errors=True)


def _command(host: LabHost) -> Args:
    connection = {
        "host": host.address,
        "port": float(host.port),
        "user": "root",
        "hostKey": host.host_key,
        "privateKey": host.client_key.read_text(),
    }
    return Args("command:remote:Command", "dk-arch", {"connection": connection, "create": "true"})


def _provider(host: LabHost) -> Args:
    opts = ssh_options(SshTarget(host.address, host.port, "root", host.host_key))
    return Args(
        "pulumi:providers:docker", "dk-docker", {"host": f"ssh://root@{host.address}", "sshOpts": json.dumps(opts)}
    )


def _run(state: Path, resources: list[Args], log: Callable[[str], None]) -> list[Change]:
    """One apply: every resource through handle (docker ones via the provider), then finish."""
    applier = Applier(state, log)
    try:
        reference = ""
        for resource in resources:
            args = replace(resource, provider=reference) if resource.typ.startswith("docker:") else resource
            resource_id, _ = applier.handle(args)
            if args.typ == "pulumi:providers:docker":
                reference = f"urn:pulumi:lab::forgeway::pulumi:providers:docker::{args.name}::{resource_id}"
        applier.finish()
    finally:
        applier.close()
    return applier.changes


def _ops(changes: list[Change]) -> dict[str, str]:
    return {c.name: c.op for c in changes}


def _container(host: LabHost, **overrides: Any) -> Args:
    inputs = {
        "name": "fw-app",
        "image": BASE,
        "envs": ["APP_MODE=lab", f"APP_TOKEN={SECRET}"],
        "ports": [{"internal": 8080, "external": PORT, "ip": host.address, "protocol": "tcp"}],
        "uploads": [{"file": "/srv/app.py", "content": APP}],
        "volumes": [{"volumeName": "fw-data", "containerPath": "/data"}],
        "labels": [{"label": "forgeway.role", "value": "app"}],
        "command": ["python3", "/srv/app.py"],
        "healthcheck": {"tests": HEALTH, "interval": "1s", "timeout": "2s", "startPeriod": "0s", "retries": 30},
        "memory": 64,
        "restart": "unless-stopped",
        "wait": True,
        "waitTimeout": 60,
        "destroyGraceSeconds": 2,
    }
    return Args("docker:index/container:Container", "dk-app", {**inputs, **overrides})


def _program(host: LabHost, **container: Any) -> list[Args]:
    return [
        _command(host),
        _provider(host),
        Args(
            "docker:index/volume:Volume",
            "dk-data",
            {"name": "fw-data", "labels": [{"label": "forgeway.role", "value": "data"}]},
        ),
        Args(
            "docker:index/remoteImage:RemoteImage",
            "dk-base",
            {"name": BASE, "platform": "linux/amd64", "keepLocally": True},
        ),
        _container(host, **container),
    ]


def _http(host: LabHost) -> str:
    probe = (
        f"import socket; s = socket.create_connection(('{host.address}', {PORT}), 2); "
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(1000).decode())"
    )
    done = host.machine.execute(["python3", "-c", probe], timeout=30)
    return done.stdout + done.stderr


def test_container_create_same_update_replace_destroy(
    dk: DockerHostLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            argvs.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    logs: list[str] = []
    state, host = tmp_path / "state.json", dk.host

    started = time.monotonic()
    changes = _run(state, _program(host), logs.append)
    print(f"\ncreate: {time.monotonic() - started:.1f}s")
    assert set(_ops(changes).values()) == {"create"}, changes
    app = dk.inspect("container", "fw-app")
    first_id = app["Id"]
    assert app["State"]["Health"]["Status"] == "healthy"
    assert f"APP_TOKEN={SECRET}" in app["Config"]["Env"]
    assert app["HostConfig"]["Memory"] == 64 << 20
    assert app["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": host.address, "HostPort": str(PORT)}]}
    assert [(m["Type"], m["Name"], m["Destination"]) for m in app["Mounts"]] == [("volume", "fw-data", "/data")]
    assert dk.inspect("volume", "fw-data")["Labels"] == {"forgeway.role": "data"}
    assert "mode=lab" in _http(host)
    assert json.loads(state.read_text())["entries"]["docker:index/container:Container::dk-app"]["id"] == first_id
    docker(dk.daemon, "exec", "fw-app", "sh", "-c", "echo kept > /data/marker")
    # the docker calls went through the provider's ssh options and dial-stdio
    dials = [a for a in argvs if a[0] == "ssh" and a[-3:] == ["docker", "system", "dial-stdio"]]
    assert dials and all(f"KnownHostsCommand=/bin/echo %H {host.host_key}" in a for a in dials)

    started = time.monotonic()
    changes = _run(state, _program(host), logs.append)
    print(f"same: {time.monotonic() - started:.1f}s")
    assert set(_ops(changes).values()) == {"same"}, changes

    changes = _run(state, _program(host, memory=96), logs.append)
    assert _ops(changes)["dk-app"] == "update"
    app = dk.inspect("container", "fw-app")
    assert (app["Id"], app["HostConfig"]["Memory"]) == (first_id, 96 << 20)

    started = time.monotonic()
    envs = ["APP_MODE=replaced", f"APP_TOKEN={SECRET}"]
    changes = _run(state, _program(host, memory=96, envs=envs), logs.append)
    print(f"replace: {time.monotonic() - started:.1f}s")
    assert _ops(changes)["dk-app"] == "replace"
    assert any("dk-app (delete before replace)" in line for line in logs)
    app = dk.inspect("container", "fw-app")
    assert app["Id"] != first_id and not dk.exists("container", first_id)
    assert docker(dk.daemon, "exec", "fw-app", "cat", "/data/marker").stdout == b"kept\n"
    assert "mode=replaced" in _http(host)

    # destroy: no Command runs, so the ssh key comes from the state's Command entry
    started = time.monotonic()
    changes = destroy(state, logs.append)
    print(f"destroy: {time.monotonic() - started:.1f}s")
    assert {c.op for c in changes} == {"delete"}
    assert not dk.exists("container", "fw-app") and not dk.exists("volume", "fw-data")
    assert dk.exists("image", BASE)  # keepLocally
    assert json.loads(state.read_text())["entries"] == {}

    assert not [a for a in argvs if any(SECRET in part for part in a)], "a secret reached a command line"
    assert not [line for line in logs if SECRET in line], "a secret reached the log"


def test_protect_retain_and_exclude_protected(dk: DockerHostLab, tmp_path: Path) -> None:
    logs: list[str] = []
    state, host = tmp_path / "state.json", dk.host
    protected = Args(
        "docker:index/volume:Volume",
        "dk-prot",
        {"name": "fw-prot", "labels": [{"label": "forgeway.role", "value": "gitlab-data"}]},
        options=RegistrationOptions(protect=True, retain_on_delete=True),
    )
    retained = Args(
        "docker:index/volume:Volume", "dk-ret", {"name": "fw-ret"}, options=RegistrationOptions(retain_on_delete=True)
    )
    base = [_command(host), _provider(host)]
    assert set(_ops(_run(state, [*base, protected, retained], logs.append)).values()) == {"create"}

    changed = replace(protected, inputs={"name": "fw-prot", "labels": []})
    with pytest.raises(ApplyError, match=r"unable to replace resource docker:index/volume:Volume::dk-prot .*protect"):
        _run(state, [*base, changed, retained], logs.append)

    with pytest.raises(ApplyError, match=r"unable to delete resource docker:index/volume:Volume::dk-prot .*protect"):
        _run(state, base, logs.append)
    entries = json.loads(state.read_text())["entries"]
    assert "docker:index/volume:Volume::dk-ret" not in entries  # retained: out of the state ...
    assert dk.exists("volume", "fw-ret")  # ... but still on the host
    assert any(line.startswith("retain") and "dk-ret" in line for line in logs)
    assert entries["docker:index/volume:Volume::dk-prot"]["protect"] is True
    assert dk.exists("volume", "fw-prot")

    with pytest.raises(ApplyError, match="protect"):
        destroy(state, logs.append)
    logs.clear()
    changes = destroy(state, logs.append, exclude_protected=True)
    assert {c.name for c in changes} == {"dk-arch", "dk-docker"}
    assert list(json.loads(state.read_text())["entries"]) == ["docker:index/volume:Volume::dk-prot"]
    assert any("protected" in line and "dk-prot" in line for line in logs), logs
    assert dk.exists("volume", "fw-prot")
    docker(dk.daemon, "volume", "rm", "fw-prot", "fw-ret")


def test_images_the_lab_cannot_pull_fail_clearly(dk: DockerHostLab, tmp_path: Path) -> None:
    host = dk.host
    base = [_command(host), _provider(host)]
    arm = Args("docker:index/remoteImage:RemoteImage", "dk-arm", {"name": BASE, "platform": "linux/arm64"})
    with pytest.raises(ApplyError) as wrong:
        _run(tmp_path / "a.json", [*base, arm], print)
    message = str(wrong.value)
    assert "dk-arm" in message and host.address in message
    assert "linux/amd64" in message and "linux/arm64" in message

    absent = Args("docker:index/remoteImage:RemoteImage", "dk-absent", {"name": "forgeway-lab/absent:0"})
    with pytest.raises(
        ApplyError, match=r"dk-absent: pull of image forgeway-lab/absent:0 failed .*cannot be pulled in the lab"
    ):
        _run(tmp_path / "b.json", [*base, absent], print)
