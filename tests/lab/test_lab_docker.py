"""A real dockerd in a namespace host (tools/lab/docker.py) and the lab's images (tools/lab/images.py).

Needs root, docker.io and debootstrap: the lab tier fails loudly without them, never skips.
The first run on a machine builds the image cache (~1 min); later runs reuse it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netns import isolated_netns, require_docker_tools
from tools.lab.docker import DaemonInfo, docker, storage_driver
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import BASE, ensure_image
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.77"  # only inside the test's own namespace, which has no link out
PORT = 8080
SERVER = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))
s.listen()
while True:
    c, a = s.accept()
    c.sendall(b"hello from the container\\n")
    c.close()
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of our own with an eth0 (a veth whose peer stays in it) at ADDRESS."""
    require_docker_tools()
    with isolated_netns("fwdk", ADDRESS) as name:
        yield name
    assert not Path("/run/netns", name).exists()


@pytest.fixture
def work() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="fwdk-"))
    yield directory / "docker"
    shutil.rmtree(directory, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def test_dockerd_in_a_namespace_runs_the_base_image(netns: str, work: Path) -> None:
    started = time.monotonic()
    daemon: DaemonInfo | None = start_dockerd(netns, work, index=7)
    print(f"\ndockerd start: {time.monotonic() - started:.2f}s")
    assert daemon is not None
    try:
        # overlay2 where this machine's kernel mounts overlayfs there, else vfs: the one asked for
        driver = storage_driver(work)
        print(f"storage driver: {driver}")
        assert docker(daemon, "info", "--format", "{{.Driver}}").stdout.decode().strip() == driver

        first = ensure_image(daemon, BASE)
        print(f"ensure_image (first): {first}")
        second = ensure_image(daemon, BASE)
        print(f"ensure_image (again): {second}")
        assert set(second) == {"total"}, second  # nothing built, nothing imported
        assert second["total"] < 2.0

        started = time.monotonic()
        run = docker(daemon, "run", "--rm", BASE, "python3", "-c", "print(42)")
        print(f"docker run --rm: {time.monotonic() - started:.2f}s")
        assert run.stdout == b"42\n"

        # a published port on the host's address, reached from inside the host
        docker(daemon, "run", "-d", "--name", "server", "-p", f"{ADDRESS}:{PORT}:{PORT}", BASE, "python3", "-c", SERVER)
        probe = f"import socket; print(socket.create_connection(('{ADDRESS}', {PORT}), 2).recv(100).decode())"
        deadline = time.monotonic() + 20
        host = Machine("host", netns)
        while True:
            done = host.execute(["python3", "-c", probe], timeout=30)
            if "hello from the container" in done.stdout:
                break
            assert time.monotonic() < deadline, f"published port not reachable: {done.stderr}"
            time.sleep(0.2)
        # docker's rules are in the namespace's netfilter (and not in the root namespace's)
        rules = host.succeed(["iptables", "-t", "nat", "-S", "DOCKER"])
        assert f"-d {ADDRESS}/32" in rules and "172.30.7." in rules, rules
        # dockerd's mounts stay in its own mount namespace
        assert _mounts_under(work) == []
    finally:
        started = time.monotonic()
        stop_dockerd(daemon)
        print(f"dockerd stop: {time.monotonic() - started:.2f}s")

    assert not Path(f"/proc/{daemon.pid}").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True, check=False).stdout
    assert leftovers.split() == [], f"processes left: {leftovers}"
    assert (
        subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout.split() == []
    )
    assert _mounts_under(work) == []
    assert not work.exists()
