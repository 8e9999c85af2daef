"""A lab host that boots (tools/lab/nspawn.py) in a namespace of its own: systemd is its
PID 1, and a reboot is real: the host's init restarts and the kernel state it had goes.

The namespace has a random name and no link out (its eth0's peer is in a second namespace
of its own), so this runs beside `make lab` without the fwl lock."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.lab import nspawn as lab_nspawn
from tools.lab import rootfs as lab_rootfs
from tools.lab.machine import Machine
from tools.lab.namespaces import Namespaces

ADDRESS, GATEWAY, PORT = "192.0.2.10", "192.0.2.1", 2222
BASE = [
    ["addr", "add", f"{ADDRESS}/24", "dev", "eth0"],
    ["link", "set", "eth0", "up"],
    ["route", "add", "default", "via", GATEWAY],
]


def _in(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return Machine(netns, netns).execute(list(argv))


@pytest.fixture
def netns() -> Iterator[str]:
    """The host's namespace; its eth0's peer is in a second namespace of its own (no link out)."""
    with Namespaces("fwn") as made:
        host = made.add("host", name=f"fwn-{secrets.token_hex(3)}")
        assert host.netns is not None
        peer = made.add("peer", name=f"{host.netns}-p")
        made.link(host, "eth0", peer, "eth0p")
        made.address(peer, "eth0p")
        for argv in BASE:
            host.succeed(["ip", *argv])
        yield host.netns


def _sshd_answers(netns: str, host_key: str) -> bool:
    scan = _in(netns, "ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(PORT), ADDRESS)
    return host_key in scan.stdout


def _wait(what: str, done: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_a_reboot_restarts_systemd_and_the_namespace_forgets_its_runtime_state(netns: str, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(tmp_path / "key")], check=True)
    host_key = (tmp_path / "key.pub").read_text().split()[1]
    root, state, name = tmp_path / "root", tmp_path / "state", netns.removeprefix("fwn-")
    lab_rootfs.make_root(root, "booting", PORT, {"fwl-admin": "ssh-ed25519 AAAA unused"}, tmp_path / "key")
    # What the host configured to outlive a reboot: a sysctl.d file (systemd-sysctl applies it at boot).
    (root / "etc" / "sysctl.d" / "90-lab.conf").write_text("net.ipv4.ip_forward = 1\n")
    pid = lab_nspawn.start(name, netns, root, state, BASE)
    try:
        _wait("sshd answers with its own key", lambda: _sshd_answers(netns, host_key))
        running = lab_nspawn.inside(state, "systemctl", "is-system-running", "--wait")
        assert running.stdout.strip() == "running", lab_nspawn.inside(state, "systemctl", "--failed").stdout
        assert lab_nspawn.inside(state, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert _in(netns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
        # Runtime state only: a table, a policy rule, a link, a route, a sysctl, a process.
        for argv in (
            ["nft", "add", "table", "inet", "marker"],
            ["ip", "rule", "add", "pref", "4242", "lookup", "4242"],
            ["ip", "link", "add", "junk0", "type", "bridge"],
            ["ip", "route", "add", "198.18.0.0/15", "via", GATEWAY],
            ["ip", "route", "add", "198.18.0.0/15", "via", GATEWAY, "table", "4242"],
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"],
        ):
            assert _in(netns, *argv).returncode == 0, argv
        old_init = lab_nspawn.container_pid1(state)
        boots = lab_nspawn.boot_count(state)
        lab_nspawn.inside(state, "systemctl", "reboot")
        _wait("booted again", lambda: lab_nspawn.boot_count(state) > boots and _sshd_answers(netns, host_key))
        assert lab_nspawn.container_pid1(state) != old_init, "the same init: no reboot"
        assert "marker" not in _in(netns, "nft", "list", "ruleset").stdout
        assert "4242" not in _in(netns, "ip", "rule").stdout
        assert _in(netns, "ip", "link", "show", "junk0").returncode != 0
        assert _in(netns, "ip", "route", "show", "table", "4242").stdout == ""
        assert _in(netns, "ip", "route").stdout.split("\n")[0] == f"default via {GATEWAY} dev eth0 "
        assert "198.18.0.0" not in _in(netns, "ip", "route").stdout
        assert f"inet {ADDRESS}/24" in _in(netns, "ip", "-4", "addr", "show", "dev", "eth0").stdout
        assert _in(netns, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore").stdout.strip() == "0"
        assert _in(netns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1", "sysctl.d not applied"
    finally:
        lab_nspawn.stop(pid, state, root, name)
    assert not lab_nspawn.running(pid)
    assert not list(lab_nspawn.CGROUPS.glob(f"*/fwl-{name}")), "the host's cgroups are left"
    assert (
        _in(netns, "true").returncode == 0
        and not subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
        ).stdout.split()
    ), "processes left in the host's namespace"


# A unix socket's path has at most 107 bytes (sun_path). The host's docker socket under
# tmp_path is 109 under xdist (.../popen-gwN/test_a_docker_host_runs_docker0/root/var/lib/
# forgeway-lab/docker.sock): the client could never connect, and "dockerd answers" timed out.
SOCKET_PATH_MAX = 107


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory of a short path, for a link to the host's docker socket."""
    made = Path(tempfile.mkdtemp(prefix="fwn-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _docker_socket(root: Path, short_dir: Path) -> Path:
    """A short link to the docker socket in the host's root (connect follows it)."""
    link = short_dir / "docker.sock"
    link.symlink_to(root / lab_rootfs.DOCKER_SOCKET.lstrip("/"))
    assert len(str(link)) <= SOCKET_PATH_MAX, link
    return link


def _docker(socket: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The docker client against the host's dockerd, through its socket in the host's root."""
    return subprocess.run(
        ["docker", "-H", f"unix://{socket}", *args], input=stdin, capture_output=True, check=False, timeout=300
    )


def test_a_docker_host_runs_dockerd_under_its_systemd_and_keeps_its_images_across_a_reboot(
    netns: str, tmp_path: Path, short_dir: Path
) -> None:
    """dockerd started by systemd in the host (cgroup2, CAP_NET_ADMIN, runc's syscalls: the
    nspawn recipe); a container runs and publishes a port; binfmt_misc is mounted, and
    unmounted before each shutdown empties it (systemd-shutdown);
    forgeway's proxy drop-in is in docker's environment (`systemctl show`); an image
    imported before a reboot is there after it, dockerd back by itself, the drop-in read."""
    from components.render.docker_client import DockerClientSettings, render_docker_client
    from components.scripts import script
    from tools.lab.docker import storage_driver
    from tools.lab.images import SUITE, _minbase

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(tmp_path / "key")], check=True)
    host_key = (tmp_path / "key.pub").read_text().split()[1]
    root, state, name = tmp_path / "root", tmp_path / "state", netns.removeprefix("fwn-")
    setup = lab_rootfs.DockerSetup("172.30.9.1/24", "172.31.144.0/20", storage_driver(tmp_path))
    lab_rootfs.make_root(root, "dockerhost", PORT, {"fwl-forgeway": "ssh-ed25519 AAAA unused"}, tmp_path / "key",
                         groups=("docker",), docker=setup)  # fmt: skip
    sock = _docker_socket(root, short_dir)
    pid = lab_nspawn.start(name, netns, root, state, BASE)
    try:
        _wait("sshd answers", lambda: _sshd_answers(netns, host_key))
        _wait("dockerd answers", lambda: _docker(sock, "info").returncode == 0)
        info = _docker(sock, "info", "--format", "{{.CgroupVersion}} {{.Driver}}").stdout.decode().split()
        assert info == ["2", setup.storage_driver], info
        running = lab_nspawn.inside(state, "systemctl", "is-system-running", "--wait")
        assert running.stdout.strip() == "running", lab_nspawn.inside(state, "systemctl", "--failed").stdout
        assert lab_nspawn.inside(state, "systemctl", "is-active", "docker").stdout.strip() == "active"
        mounts = lab_nspawn.inside(state, "findmnt", "-n", "-o", "FSTYPE", "/proc/sys/fs/binfmt_misc").stdout
        assert set(mounts.split()) == {"binfmt_misc"}, mounts
        imported = _docker(sock, "import", "-", "lab/minbase:1", stdin=_minbase(SUITE, {}).read_bytes())
        assert imported.returncode == 0, imported.stderr
        ran = _docker(sock, "run", "--rm", "-p", "8080:80", "lab/minbase:1", "sh", "-c", "echo ran; cat /proc/1/cgroup")
        assert ran.returncode == 0 and ran.stdout.startswith(b"ran"), ran.stderr
        assert "DOCKER" in _in(netns, "nft", "list", "ruleset").stdout, "no docker rules in the host's netfilter"
        # forgeway's proxy drop-in for docker (docker-client-up.sh): systemd reloads and docker has it.
        files = render_docker_client(
            DockerClientSettings(("gitlab.forgeway.test:5050",), None, "gitlab.forgeway.test", "10.8.0.0/24",
                                 http_proxy="http://proxy.example:3128")
        ).staged()  # fmt: skip
        (root / "stage").mkdir()
        for filename, text in {**files, "docker-client-up.sh": script("docker-client-up.sh")}.items():
            (root / "stage" / filename).write_text(text)
        client = lab_nspawn.inside(state, "sh", "/stage/docker-client-up.sh", "/stage")
        assert client.returncode == 0, client.stdout + client.stderr

        def environment() -> str:
            return lab_nspawn.inside(state, "systemctl", "show", "docker", "-p", "Environment").stdout

        assert "HTTP_PROXY=http://proxy.example:3128" in environment(), environment()
        boots = lab_nspawn.boot_count(state)
        lab_nspawn.inside(state, "systemctl", "reboot")
        _wait("booted again", lambda: lab_nspawn.boot_count(state) > boots and _sshd_answers(netns, host_key))
        _wait("dockerd answers again", lambda: _docker(sock, "info").returncode == 0)
        assert _docker(sock, "image", "inspect", "lab/minbase:1").returncode == 0, "the image is gone after a reboot"
        assert "HTTP_PROXY=http://proxy.example:3128" in environment(), "the proxy drop-in is not read at boot"
        again = _docker(sock, "run", "--rm", "lab/minbase:1", "echo", "again")
        assert again.stdout == b"again\n", again.stderr
    finally:
        lab_nspawn.stop(pid, state, root, name)
    assert not lab_nspawn.running(pid)
    assert not list(lab_nspawn.CGROUPS.glob(f"*/fwl-{name}")), "the host's cgroups are left"
    # Its binfmt_misc was detached on the way down, at the reboot and at the poweroff, so
    # systemd-shutdown found none to empty: the machine's handlers (and other hosts') stay.
    console = (state / "console.log").read_text(errors="replace")
    assert console.count(lab_rootfs.BINFMT_DETACHED) == 2, "binfmt_misc was still mounted at a shutdown"


def test_on_a_booting_host_the_endpoint_watch_is_a_unit_that_boots_after_the_tunnel_and_down_removes_it(
    netns: str, tmp_path: Path
) -> None:
    """tunnel-up.sh on a host whose PID 1 is systemd: the endpoint memory's watch is
    forgeway-tunnel-watch@wg0.service (enabled, started by the deploy, the only watch),
    a second deploy changes nothing, both units are active after a real reboot, and
    tunnel-down.sh stops it and removes exactly what up made."""
    import ipaddress

    from components.config import Tunnel
    from components.render.wgconf import TunnelHost, endpoint_interface, tunnel_files
    from components.render.wireguard import wg_public_key
    from components.scripts import script

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(tmp_path / "key")], check=True)
    host_key = (tmp_path / "key.pub").read_text().split()[1]
    root, state, name = tmp_path / "root", tmp_path / "state", netns.removeprefix("fwn-")
    lab_rootfs.make_root(root, "vps", PORT, {"fwl-admin": "ssh-ed25519 AAAA unused"}, tmp_path / "key")
    key, home = (subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout for _ in "ab")
    vps_id = TunnelHost("vps", wg_public_key(key.strip()), ipaddress.IPv4Address("10.8.0.1"))
    home_id = TunnelHost("home", wg_public_key(home.strip()), ipaddress.IPv4Address("10.8.0.2"))
    interface = endpoint_interface(tunnel=Tunnel(), address=vps_id.address, peers=[home_id])
    (root / "stage").mkdir()
    files = {**tunnel_files(interface), **{n: script(n) for n in ("tunnel-up.sh", "tunnel-down.sh")}}
    for filename, text in files.items():
        (root / "stage" / filename).write_text(text)
    unit = "forgeway-tunnel-watch@wg0.service"

    def deploy() -> subprocess.CompletedProcess[str]:
        init = str(lab_nspawn.container_pid1(state))
        return subprocess.run(
            ["nsenter", "-t", init, "-a", "sh", "/stage/tunnel-up.sh", "wg0", "/stage"],
            input=key, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    def active(*units: str) -> list[str]:
        return lab_nspawn.inside(state, "systemctl", "is-active", *units).stdout.split()

    pid = lab_nspawn.start(name, netns, root, state, BASE)
    try:
        _wait("sshd answers", lambda: _sshd_answers(netns, host_key))
        before = sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*"))  # as booted (etc/mtab)
        done = deploy()
        assert done.returncode == 0 and f"changed wg0: started {unit}" in done.stdout, done.stdout + done.stderr
        assert lab_nspawn.inside(state, "systemctl", "is-enabled", unit).stdout.strip() == "enabled"
        main = lab_nspawn.inside(state, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
        assert lab_nspawn.inside(state, "cat", "/run/forgeway/wg0.watch.pid").stdout.strip() == main != "0"
        assert lab_nspawn.inside(state, "pgrep", "-f", "tunnel-up.sh --watch").stdout.split() == [main]
        assert deploy().stdout == "ok wg0: nothing to change\n"
        boots = lab_nspawn.boot_count(state)
        lab_nspawn.inside(state, "systemctl", "reboot")
        _wait("booted again", lambda: lab_nspawn.boot_count(state) > boots and _sshd_answers(netns, host_key))
        _wait("tunnel and watch active", lambda: active("forgeway-tunnel@wg0.service", unit) == ["active"] * 2, 30)
        down = lab_nspawn.inside(state, "sh", "/stage/tunnel-down.sh", "wg0")
        assert down.returncode == 0 and f"removed wg0: stopped {unit}" in down.stdout, down.stdout + down.stderr
        assert active(unit) == ["inactive"]
        after = sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*"))
        assert [p for p in after if p not in before] == [], "tunnel-down left files up made"
    finally:
        lab_nspawn.stop(pid, state, root, name)


def test_on_a_booting_host_install_timer_starts_its_timer_and_remove_timer_undoes_it(
    netns: str, tmp_path: Path
) -> None:
    """install_timer (host-files.sh) where systemd is PID 1: the timer enabled and started, its
    service runs the program, a second install changes nothing, a new calendar restarts the
    timer; FORGEWAY_SYSTEMD=no stops it and swaps the units for the cron file; remove_timer
    leaves /etc as it booted."""
    from components.scripts import LIBRARY, SOURCE_LINE, script

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(tmp_path / "key")], check=True)
    host_key = (tmp_path / "key.pub").read_text().split()[1]
    root, state, name = tmp_path / "root", tmp_path / "state", netns.removeprefix("fwn-")
    lab_rootfs.make_root(root, "booting", PORT, {"fwl-admin": "ssh-ed25519 AAAA unused"}, tmp_path / "key")
    stage = root / "stage"
    stage.mkdir()
    (stage / LIBRARY).write_text(script(LIBRARY))
    (stage / "t.sh").write_text(f'#!/bin/sh\nset -eu\nme=t tag=t\n{SOURCE_LINE}\n"$@"\nsave_dirs /stage/dirs\n')
    (stage / "ran.sh").write_text("#!/bin/sh\necho ran >>/var/tmp/forgeway-t.ran\n")
    (stage / "ran.sh").chmod(0o755)
    install = ["install_timer", "forgeway-t", "*-*-* 03:15:00", "/stage/ran.sh", "a test", "1", "5", "0 * * * *"]

    def t(*argv: str, systemd: str = "auto") -> list[str]:
        done = lab_nspawn.inside(state, "env", f"FORGEWAY_SYSTEMD={systemd}", "sh", "/stage/t.sh", *argv)
        assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
        return done.stdout.splitlines()

    def systemctl(*argv: str) -> str:
        return lab_nspawn.inside(state, "systemctl", *argv).stdout.strip()

    pid = lab_nspawn.start(name, netns, root, state, BASE)
    try:
        _wait("sshd answers", lambda: _sshd_answers(netns, host_key))
        before = sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*"))  # as booted (etc/mtab)
        first = t(*install)
        assert first[-1] == "changed t: started forgeway-t.timer", first
        assert (systemctl("is-enabled", "forgeway-t.timer"), systemctl("is-active", "forgeway-t.timer")) == (
            "enabled",
            "active",
        )
        assert t(*install) == [], "a second install changed something"
        assert systemctl("show", "-p", "TimeoutStartUSec", "--value", "forgeway-t.service") == "5min"
        hourly = t(*install[:2], "hourly", *install[3:])  # a new calendar reaches the running timer
        assert hourly[-1] == "changed t: restarted forgeway-t.timer", hourly
        assert "OnCalendar=*-*-* *:00:00" in systemctl("show", "-p", "TimersCalendar", "--value", "forgeway-t.timer")
        assert lab_nspawn.inside(state, "systemctl", "start", "forgeway-t.service").returncode == 0
        assert (root / "var/tmp/forgeway-t.ran").read_text() == "ran\n"

        cron = t(*install, systemd="no")
        assert "changed t: stopped forgeway-t.timer" in cron, cron
        assert systemctl("is-active", "forgeway-t.timer") == "inactive"
        assert not (root / "etc/systemd/system/forgeway-t.timer").exists(), "the units stay beside the cron file"
        assert (root / "etc/cron.d/forgeway-t").read_text().splitlines()[-1].startswith("15 3 * * * root timeout 5m")
        t(*install)  # back to systemd: started again, the cron file gone
        assert systemctl("is-active", "forgeway-t.timer") == "active"
        assert not (root / "etc/cron.d/forgeway-t").exists()

        down = t("remove_timer", "forgeway-t")
        assert down[0] == "changed t: stopped forgeway-t.timer", down
        assert systemctl("is-active", "forgeway-t.timer") == "inactive"
        assert "forgeway-t" not in systemctl("list-units", "--all", "--no-legend", "forgeway-t*")
        assert t("remove_timer", "forgeway-t") == []
        t("remove_saved_dirs", "/stage/dirs")  # what the scripts' downs do with the directories up made
        after = sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*"))
        assert [p for p in after if p not in before] == [], "remove_timer left files install_timer made"
    finally:
        lab_nspawn.stop(pid, state, root, name)
