"""The namespace chain the forwarding script tests run on (test_forwarding_scripts.py,
test_forwarding_other_firewalls.py): forwarding-up/-down.sh and home-routing-up/-down.sh
on namespace hosts.

Three network namespaces of our own per test
(``chain_in_namespaces``), linked by veths (no WireGuard: a plain
veth named wg0 stands in for the tunnel)::

    client 203.0.113.10 --eth0-- 203.0.113.1 vps 10.8.0.1 --wg0-- 10.8.0.2 home
                                                            home: lan0 192.0.2.2, default
                                                            via 192.0.2.1 (nothing there:
                                                            the "uplink" of a CGNAT home)

Only documentation addresses; nothing is routed out of the namespaces, and the root
namespace gets no link at all. The scripts run as the program runs them (inline,
``sh -c``, arguments quoted by ``script_command``) with FORGEWAY_ETC pointing at the
test's own directory, so no test writes the real /etc. Every process is stopped by PID
and every namespace deleted (with its veths) by name, pass or fail.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.render.nftables import ForwardingSettings, PortForward, render_forwarding
from components.scripts import script_command
from tools.lab.machine import CommandFailed, Machine
from tools.lab.namespaces import Namespaces

PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# tool -> Debian package
TOOLS = {
    "ip": "iproute2",
    "nft": "nftables",
    "conntrack": "conntrack",
    "iptables-nft": "iptables",
    "iptables-legacy": "iptables",
    "unshare": "util-linux",
    "sysctl": "procps",
}
CLIENT, VPS_PUBLIC, VPS_TUNNEL, HOME_TUNNEL = "203.0.113.10", "203.0.113.1", "10.8.0.1", "10.8.0.2"
PUBLIC_PORT, HOME_PORT, ADMIN_PORT = 8443, 8080, 22
TUNNEL_MTU = 1400  # the veths have 1500: only clamping brings the MSS down to 1360
FORGEWAY_COMMENT = 'comment "forgeway:'

# A TCP server that tells each client the address it sees and the MSS of the connection.
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); print("ready", flush=True)
while True:
    c, a = s.accept()
    c.sendall(f"{a[0]} {c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)}\\n".encode()); c.close()
"""
CLIENT_SCRIPT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(100).decode().strip(), c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
except OSError as exc:
    print("failed", type(exc).__name__)
"""


def require_tools() -> None:
    """Fail (never skip) without root or the tools, saying what to install."""
    problems = []
    missing = [t for t in TOOLS if not shutil.which(t, path=PATH)]
    if missing:
        packages = " ".join(sorted({TOOLS[t] for t in missing}))
        problems.append(f"missing tools {', '.join(missing)}: apt-get install -y {packages}")
    if os.geteuid() != 0:
        problems.append("not root: these tests create network namespaces and load nftables rules")
    if problems:
        pytest.fail("the forwarding lab tests cannot run here: " + "; ".join(problems))


@dataclass
class Chain:
    """client -- vps -- home, and where each host's scripts keep their files."""

    client: str
    vps: str
    home: str
    etc: dict[str, Path]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(
        self, netns: str, *cmd: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        machine = Machine(netns, netns, env={"PATH": PATH})
        done = machine.execute(cmd, stdin=stdin, timeout=30)
        if check and done.returncode != 0:
            raise CommandFailed(netns, cmd, done, "expected 0")
        return done

    def script(
        self, host: str, name: str, *args: str, stdin: str = "", systemd: str = "no", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a script inline (as the program does), on host 'vps' or 'home'."""
        env = [f"FORGEWAY_ETC={self.etc[host]}", f"FORGEWAY_SYSTEMD={systemd}", f"PATH={PATH}"]
        netns = self.vps if host == "vps" else self.home
        return self.ns(netns, "env", *env, "sh", "-c", script_command(name, *args), stdin=stdin, check=check)

    def up(self, ruleset: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.script("vps", "forwarding-up.sh", str(ADMIN_PORT), stdin=ruleset, check=check)

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.script("vps", "forwarding-down.sh")

    def nft(self, netns: str, *args: str) -> str:
        return self.ns(netns, "nft", *args).stdout

    def start_server(self, port: int = HOME_PORT, server: str = SERVER, address: str = HOME_TUNNEL) -> None:
        """``server`` (a Python program taking ADDRESS PORT, printing "ready") on home."""
        proc = subprocess.Popen(
            Machine(self.home, self.home).argv([sys.executable, "-c", server, address, str(port)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", "the test server on home did not start"

    def connect(self, timeout: float = 3.0) -> str:
        """From the client to the VPS's public port: 'PEER SERVER_MSS CLIENT_MSS' or 'failed ...'."""
        cmd = [sys.executable, "-c", CLIENT_SCRIPT, VPS_PUBLIC, str(PUBLIC_PORT), str(timeout)]
        return self.ns(self.client, *cmd).stdout.strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def chain_in_namespaces(tmp_path: Path) -> Iterator[Chain]:
    """client -- vps -- home in namespaces of their own, removed (with every process) on exit."""
    require_tools()
    with Namespaces("fwfwd") as made:
        client, vps, home = (made.add(role) for role in ("client", "vps", "home"))
        etc = {"vps": tmp_path / "vps-etc", "home": tmp_path / "home-etc"}
        the_chain = Chain(str(client.netns), str(vps.netns), str(home.netns), etc=etc)
        try:
            # The veths live in our namespaces only: deleting a namespace deletes them.
            made.link(client, "eth0", vps, "eth0")
            made.link(vps, "wg0", home, "wg0")
            made.link(home, "lan0", None, "lan0p")
            for machine, dev, addr in [
                (client, "eth0", f"{CLIENT}/24"),
                (vps, "eth0", f"{VPS_PUBLIC}/24"),
                (vps, "wg0", f"{VPS_TUNNEL}/24"),
                (home, "wg0", f"{HOME_TUNNEL}/24"),
                (home, "lan0", "192.0.2.2/24"),
            ]:
                made.address(machine, dev, addr)
            made.address(home, "lan0p")
            # The home's default route leads out of its own uplink, as behind a CGNAT; strict
            # reverse-path filtering, as many distributions set it.
            home.succeed(["ip", "route", "add", "default", "via", "192.0.2.1", "dev", "lan0"])
            home.succeed(["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1"])
            yield the_chain
        finally:
            errors = []
            for proc in the_chain.procs:
                try:
                    _stop(proc)
                except Exception as exc:  # every cleanup step gets its chance
                    errors.append(f"stop {proc.pid}: {exc}")
            if errors:
                raise RuntimeError("cleanup failed: " + "; ".join(errors))


def forward_ruleset(mode: str = "snat", home_port: int = HOME_PORT, home_address6: str | None = None) -> str:
    """The VPS's ruleset for the chain; ``home_address6``: with forwarding.ipv6 (test_forwarding_ipv6.py)."""
    return render_forwarding(
        ForwardingSettings(
            public_interface="eth0",
            tunnel_interface="wg0",
            home_address=ipaddress.IPv4Address(HOME_TUNNEL),
            ports=(PortForward(PUBLIC_PORT, home_port, "https"),),
            mode="snat" if mode == "snat" else "preserve-source",
            admin_ssh_port=ADMIN_PORT,
            wireguard_port=51820,
            tunnel_mtu=TUNNEL_MTU,
            home_address6=ipaddress.IPv6Address(home_address6) if home_address6 is not None else None,
        )
    )


def only_ok(done: subprocess.CompletedProcess[str]) -> None:
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("ok ") for line in lines), done.stdout


def files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())
