"""The two namespace hosts the tunnel script tests run on (test_tunnel_scripts.py;
test_tunnel_recovery.py builds its own NATed pair from the same parts): tunnel-up.sh /
tunnel-down.sh on two network namespaces joined by a veth.

    fwt-vps-<rand>                                   fwt-home-<rand>
    eth1 203.0.113.1/24  <-------- veth -------->   eth1 203.0.113.2/24
    wg0  10.8.0.1/24  udp 51820  <== WireGuard ==>  wg0  10.8.0.2/24  (dials vps.forgeway.test)

Nothing links the namespaces to the root namespace, so no packet leaves them. There
is no WireGuard kernel module here, so tunnel-up.sh falls back to wireguard-go, for
real. The namespaces share the root filesystem, so each host gets its own
FORGEWAY_ETC / FORGEWAY_RUN / FORGEWAY_WG_SOCKET_DIR under the test's tmp_path (the
real /etc is never written) and both can have a wg0. The home host resolves
vps.forgeway.test through an /etc/hosts bind-mounted in a private mount namespace
around each script run. Scripts run as the program runs them: ``sh -c
script_command(...)``, the private key on stdin. Processes are stopped by PID and the
namespaces deleted after every test, pass or fail.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.config import Tunnel
from components.render.wgconf import TunnelHost, endpoint_interface, peer_interface, tunnel_files
from components.render.wireguard import wg_public_key
from components.scripts import script, script_command
from tools.lab.machine import Machine
from tools.lab.namespaces import Namespaces

IFACE = "wg0"
VPS_NAME = "vps.forgeway.test"
# tool -> Debian package
TOOLS = {
    "ip": "iproute2",
    "wg": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "ping": "iputils-ping",
    "unshare": "util-linux",
    "setsid": "util-linux",
    "systemd-analyze": "systemd",
}
# Around a command: /etc/hosts from $0, in a mount namespace of its own.
_WITH_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'
_TIMEOUT = 30


def _require_root_and_tools() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: the test creates network namespaces and runs wireguard-go")
    missing = sorted(tool for tool in TOOLS if shutil.which(tool) is None)
    if missing:
        packages = " ".join(sorted({TOOLS[t] for t in missing}))
        problems.append(f"missing {', '.join(missing)}: apt-get install -y {packages}")
    if problems:
        pytest.fail("tunnel script lab test cannot run: " + "; ".join(problems))


def _run(
    cmd: list[str], *, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=input, env=env, capture_output=True, text=True, timeout=_TIMEOUT, check=False)


def _ok(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    done = _run(cmd)
    assert done.returncode == 0, f"`{shlex.join(cmd)[:200]}` failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _kill(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class ArgvWatch:
    """Scans every process's argv (/proc/*/cmdline) in a loop, recording any that holds a secret.

    A sampling check: it sees the processes alive at each pass (a pass takes a few ms),
    which catches a key passed on a command line to ip, wg, wireguard-go or a shell.
    """

    def __init__(self, secrets_: list[str]) -> None:
        self._needles = [s.encode() for s in secrets_]
        self.hits: list[str] = []
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # listdir, not glob: glob stats each entry and dies on a process that just exited.
            for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
                try:
                    data = Path("/proc", pid, "cmdline").read_bytes()
                except OSError:
                    continue  # gone meanwhile
                if any(n in data for n in self._needles):
                    self.hits.append(f"pid {pid}: {data[:60]!r}...")
            self.passes += 1

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        alive = self._thread.is_alive()
        self._stop.set()
        self._thread.join(5)
        assert alive, "the argv watch stopped early: its findings would be incomplete"


@dataclass
class Host:
    name: str
    netns: str
    address: str
    base: Path
    private_key: str
    hosts_file: Path
    outputs: list[str] = field(default_factory=list)

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def state(self) -> Path:
        return self.etc / "forgeway" / "wireguard"

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{IFACE}.pid"

    @property
    def rendered(self) -> Path:
        return self.base / "rendered"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "FORGEWAY_ETC": str(self.etc),
            "FORGEWAY_RUN": str(self.run_dir),
            "FORGEWAY_WG_SOCKET_DIR": str(self.run_dir / "wireguard"),
            "FORGEWAY_SYSTEMD": "yes",  # write the units here although systemd is not PID 1
        }

    def sh(
        self,
        command: list[str],
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in this host's namespace with its /etc/hosts; record its output."""
        cmd = ["unshare", "-m", "sh", "-c", _WITH_HOSTS, str(hosts or self.hosts_file), *command]
        done = self.machine.execute(cmd, stdin=stdin or "", env=env or self.env(), timeout=_TIMEOUT)
        self.outputs += [done.stdout, done.stderr]
        return done

    def up(self, key: str | None = None) -> subprocess.CompletedProcess[str]:
        line = script_command("tunnel-up.sh", IFACE, str(self.rendered))
        done = self.sh(["sh", "-c", line], stdin=(key or self.private_key) + "\n")
        assert done.returncode == 0, f"tunnel-up.sh on {self.name} failed:\n{done.stdout}{done.stderr}"
        return done

    def down(self) -> subprocess.CompletedProcess[str]:
        done = self.sh(["sh", "-c", script_command("tunnel-down.sh", IFACE)])
        assert done.returncode == 0, f"tunnel-down.sh on {self.name} failed:\n{done.stdout}{done.stderr}"
        return done

    @property
    def machine(self) -> Machine:
        return Machine(self.name, self.netns)

    def unit_command(self, unit: str) -> tuple[list[str], dict[str, str]]:
        """ExecStart and Environment of an installed unit, for instance IFACE (what systemd would run)."""
        text = (self.etc / "systemd" / "system" / unit).read_text()
        exec_start = re.search(r"^ExecStart=(.*)$", text, re.M)
        environment = re.search(r"^Environment=(.*)$", text, re.M)
        assert exec_start and environment, text
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        for item in shlex.split(environment.group(1)):
            name, _, value = item.partition("=")
            env[name] = value
        return shlex.split(exec_start.group(1).replace("%i", IFACE)), env

    def boot(self, hosts: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run what forgeway-tunnel@wg0.service runs at boot."""
        unit = (self.etc / "systemd" / "system" / "forgeway-tunnel@.service").read_text()
        # Containers bind tunnel addresses: the tunnel comes up before docker does.
        assert re.search(r"^Before=docker\.service$", unit, re.M), unit
        command, env = self.unit_command("forgeway-tunnel@.service")
        return self.sh(command, env={**env, **extra_env}, hosts=hosts)

    def wireguard_go_pid(self) -> int:
        return int(self.pidfile.read_text())

    def ifindex(self) -> int | None:
        done = self.machine.execute(["ip", "-o", "link", "show", "dev", IFACE])
        return int(done.stdout.split(":", 1)[0]) if done.returncode == 0 else None

    def wg(self, *args: str) -> str:
        """``wg ARGS`` in this host's namespace, seeing its wireguard-go sockets."""
        bind = 'mount --bind "$0" /run/wireguard && exec wg "$@"'
        sockets = str(self.run_dir / "wireguard")
        return self.machine.succeed(["unshare", "-m", "sh", "-c", bind, sockets, *args], timeout=_TIMEOUT)

    def showconf(self) -> str:
        return self.wg("showconf", IFACE)

    def ping(self, address: str, wait: float = 8.0) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if self.machine.execute(["ping", "-n", "-c", "1", "-W", "1", address]).returncode == 0:
                return True
            if time.monotonic() > deadline:
                return False

    def reboot(self) -> None:
        """Power loss: wireguard-go and the endpoint memory killed, the interface gone, /run (a tmpfs) empty."""
        watch = self.run_dir / f"{IFACE}.watch.pid"
        if watch.exists():  # the VPS's; its session: sh and its sleep
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(watch.read_text()), signal.SIGKILL)
        _kill(self.wireguard_go_pid(), signal.SIGKILL)
        # The tun device goes with its process (not persistent); delete it if it lingers.
        deadline = time.monotonic() + 2
        while self.ifindex() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.machine.execute(["ip", "link", "delete", IFACE])
        assert self.ifindex() is None
        shutil.rmtree(self.run_dir)


@dataclass
class Pair:
    vps: Host
    home: Host
    watch: ArgvWatch

    @property
    def hosts(self) -> tuple[Host, Host]:
        return self.vps, self.home


def _cleanup(netns: str, pidfile: Path) -> None:
    """Stop, by PID, wireguard-go and anything else left in the namespace; delete it (and the veth)."""
    pids = set()
    with contextlib.suppress(OSError, ValueError):
        pids.add(int(pidfile.read_text()))
    if Path("/run/netns", netns).exists():
        pids |= {int(p) for p in _run(["ip", "netns", "pids", netns]).stdout.split()}
        for pid in pids:
            _kill(pid)
        _run(["ip", "netns", "delete", netns])
    else:
        for pid in pids:
            # Only a wireguard-go of this test: never a reused PID.
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                    _kill(pid)


@contextlib.contextmanager
def tunnel_pair(tmp_path: Path, *, ipv6_only_uplink: bool = False) -> Iterator[Pair]:
    """vps and home in namespaces of their own, the tunnel up on both under an ArgvWatch;
    every process stopped and the namespaces deleted on exit.

    ``ipv6_only_uplink``: the veth between them has IPv6 addresses only (2001:db8::1 and ::2),
    the tunnel is dual-stack (tunnel.ipv6) and home dials the VPS at [2001:db8::1]."""
    _require_root_and_tools()
    token = secrets.token_hex(3)
    keys = {name: _ok(["wg", "genkey"]).stdout.strip() for name in ("vps", "home")}
    resolving = tmp_path / "hosts"
    resolving.write_text(f"127.0.0.1 localhost\n203.0.113.1 {VPS_NAME}\n")
    uplink = ("2001:db8::1", "2001:db8::2") if ipv6_only_uplink else ("203.0.113.1", "203.0.113.2")
    hosts = {
        name: Host(name, f"fwt-{name}-{token}", address, tmp_path / name, keys[name], resolving)
        for name, address in zip(("vps", "home"), uplink, strict=True)
    }
    vps, home = hosts["vps"], hosts["home"]
    with Namespaces("fwt") as made:
        for host in hosts.values():
            made.add(host.name, name=host.netns)
            (host.etc / "systemd" / "system").mkdir(parents=True)  # as on any systemd host
        made.link(vps.machine, "eth1", home.machine, "eth1")
        for host in hosts.values():
            if ipv6_only_uplink:
                host.machine.succeed(["ip", "-6", "addr", "add", f"{host.address}/64", "dev", "eth1", "nodad"])
                made.address(host.machine, "eth1")
            else:
                made.address(host.machine, "eth1", f"{host.address}/24")

        tunnel = Tunnel(ipv6=ipv6_only_uplink)
        v6 = ipaddress.IPv6Address
        vps_id = TunnelHost(
            "vps",
            wg_public_key(vps.private_key),
            ipaddress.IPv4Address("10.8.0.1"),
            v6("fd77:6179:7761::1") if ipv6_only_uplink else None,
        )
        home_id = TunnelHost(
            "home",
            wg_public_key(home.private_key),
            ipaddress.IPv4Address("10.8.0.2"),
            v6("fd77:6179:7761::2") if ipv6_only_uplink else None,
        )
        rendered = {
            "vps": endpoint_interface(tunnel=tunnel, address=vps_id.address, peers=[home_id], address6=vps_id.address6),
            "home": peer_interface(
                tunnel=tunnel,
                address=home_id.address,
                vps=vps_id,
                endpoint_host=vps.address if ipv6_only_uplink else VPS_NAME,
                address6=home_id.address6,
            ),
        }
        for name, host in hosts.items():
            host.rendered.mkdir(parents=True)
            files = {**tunnel_files(rendered[name]), "tunnel-up.sh": script("tunnel-up.sh")}
            for filename, text in files.items():
                (host.rendered / filename).write_text(text)

        with ArgvWatch([vps.private_key, home.private_key]) as watch:
            vps.up()
            home.up()
            yield Pair(vps, home, watch)
