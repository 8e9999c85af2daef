"""forwarding-up/-down.sh and home-routing-up/-down.sh on namespace hosts.

Three network namespaces of our own per test, linked by veths (no WireGuard: a plain
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

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.render.nftables import (
    ForwardingSettings,
    HomeRoutingSettings,
    PortForward,
    render_forwarding,
    render_home_routing,
)
from components.scripts import script, script_command
from tools.lab.machine import CommandFailed, Machine
from tools.lab.namespaces import Namespaces

pytestmark = pytest.mark.lab

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


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
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

    def start_server(self, port: int = HOME_PORT) -> None:
        proc = subprocess.Popen(
            Machine(self.home, self.home).argv([sys.executable, "-c", SERVER, HOME_TUNNEL, str(port)]),
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


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
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


def _ruleset(mode: str = "snat", home_port: int = HOME_PORT) -> str:
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
        )
    )


def _only_ok(done: subprocess.CompletedProcess[str]) -> None:
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("ok ") for line in lines), done.stdout


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _without_ours(listing: str) -> str:
    return "\n".join(line for line in listing.splitlines() if FORGEWAY_COMMENT not in line)


def _without_our_table(listing: str) -> str:
    """The listing without the block of table ip forgeway (a top-level `table ... {` to `}`)."""
    out, skip = [], False
    for line in listing.splitlines(keepends=True):
        if line.startswith("table ip forgeway {"):
            skip = True
        elif skip and line.startswith("}"):
            skip = False
        elif not skip:
            out.append(line)
    return "".join(out).strip("\n")


def _forward_without_our_help(chain: Chain) -> str:
    """What the client gets with our table loaded but nothing done about other tables."""
    chain.ns(chain.vps, "nft", "-f", "-", stdin=_ruleset())
    chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    try:
        return chain.connect(timeout=1.0)
    finally:
        chain.ns(chain.vps, "nft", "delete", "table", "ip", "forgeway")
        chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")


def _first_rule(listing: str, chain_name: str) -> str:
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"chain {chain_name} {{")
    return lines[start + 2].strip()  # after the chain line and its "type ... hook" line


# --- converge, idempotence, removal ------------------------------------------------------------


def test_up_twice_changes_nothing_the_second_time_and_down_restores_the_baseline(chain: Chain) -> None:
    baseline = chain.nft(chain.vps, "list", "ruleset")
    forward_before = chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    ruleset = _ruleset()

    first = chain.up(ruleset)
    assert "changed table ip forgeway" in first.stdout
    _only_ok(chain.up(ruleset))

    table = chain.nft(chain.vps, "list", "table", "ip", "forgeway")
    rules = [line.strip() for line in table.splitlines() if line.startswith("\t\t") and "type " not in line]
    assert len(rules) == len(set(rules)) == 7, table  # 1 dnat, 1 masquerade, 2 clamps, 1+2 accepts
    saved = chain.etc["vps"] / "forgeway" / "nftables" / "forgeway.nft"
    assert saved.read_text() == ruleset and saved.stat().st_mode & 0o777 == 0o600
    assert chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert (chain.etc["vps"] / "sysctl.d" / "60-forgeway-forwarding.conf").is_file()

    gone = chain.down()
    assert "removed table ip forgeway" in gone.stdout
    assert chain.nft(chain.vps, "list", "ruleset") == baseline
    assert chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == forward_before
    assert _files(chain.etc["vps"]) == []
    assert chain.down().stdout.strip() == "ok forwarding: nothing to remove"


def test_the_boot_unit_is_written_and_removed(chain: Chain) -> None:
    done = chain.script("vps", "forwarding-up.sh", str(ADMIN_PORT), stdin=_ruleset(), systemd="yes")
    units = chain.etc["vps"] / "systemd" / "system"
    unit = (units / "forgeway-nftables.service").read_text()
    # Run inline there is no copy of the script to run at boot: the unit loads the table.
    assert f"ExecStart={shutil.which('nft', path=PATH)} -f {chain.etc['vps']}/forgeway/nftables/forgeway.nft" in unit
    assert "After=nftables.service netfilter-persistent.service ufw.service" in unit
    assert (units / "multi-user.target.wants" / "forgeway-nftables.service").is_symlink()
    assert "changed enabled forgeway-nftables.service" in done.stdout
    _only_ok(chain.script("vps", "forwarding-up.sh", str(ADMIN_PORT), stdin=_ruleset(), systemd="yes"))
    chain.down()
    assert _files(chain.etc["vps"]) == []


# --- the data path -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_a_client_reaches_the_home_listener_through_the_vps(chain: Chain, mode: str) -> None:
    chain.start_server()
    chain.up(_ruleset(mode))
    if mode == "preserve-source":
        # Without the return path the replies leave through the home's uplink: no answer.
        assert chain.connect(timeout=1.0).startswith("failed"), "replies found a way back without policy routing"
        home_baseline = {
            "nft": chain.nft(chain.home, "list", "ruleset"),
            "rules": chain.ns(chain.home, "ip", "rule").stdout,
            "rp_filter": chain.ns(chain.home, "sysctl", "-n", "net.ipv4.conf.wg0.rp_filter").stdout,
        }
        routing = render_home_routing(HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL)))
        chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables)
        _only_ok(chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables))

    peer, server_mss, client_mss = chain.connect().split()
    assert peer == (VPS_TUNNEL if mode == "snat" else CLIENT)
    # Clamped in both directions (SYN and SYN-ACK) to 1400 - 40; timestamps take 12 more.
    assert int(server_mss) <= TUNNEL_MTU - 40 and int(client_mss) <= TUNNEL_MTU - 40

    if mode == "preserve-source":
        chain.script("home", "home-routing-down.sh")
        assert chain.nft(chain.home, "list", "ruleset") == home_baseline["nft"]
        assert chain.ns(chain.home, "ip", "rule").stdout == home_baseline["rules"]
        assert chain.ns(chain.home, "ip", "route", "show", "table", "4680").stdout == ""
        assert chain.ns(chain.home, "sysctl", "-n", "net.ipv4.conf.wg0.rp_filter").stdout == home_baseline["rp_filter"]
        assert _files(chain.etc["home"]) == []
        assert "nothing to remove" in chain.script("home", "home-routing-down.sh").stdout


def test_a_changed_dnat_target_drops_the_old_targets_conntrack_entries(chain: Chain) -> None:
    chain.start_server()
    chain.up(_ruleset())
    assert chain.connect().startswith(VPS_TUNNEL)
    entries = ["conntrack", "-L", "-p", "tcp", "--reply-src", HOME_TUNNEL, "--reply-port-src", str(HOME_PORT)]
    assert chain.ns(chain.vps, *entries).stdout.strip(), "no conntrack entry for the first connection"
    moved = chain.up(_ruleset(home_port=HOME_PORT + 1))
    assert re.search(rf"changed conntrack: [1-9]\d* entries of the old target tcp {PUBLIC_PORT} ->", moved.stdout)
    assert chain.ns(chain.vps, *entries).stdout.strip() == ""


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(f"tcp dport {PUBLIC_PORT} dnat", f"tcp dport {{ {PUBLIC_PORT}, 22 }} dnat"), "port 22"),
        (lambda t: t.replace("table ip forgeway\n", "flush ruleset\ntable ip forgeway\n", 1), "flush ruleset"),
        (lambda t: t + "table inet filter {\n}\n", "table inet filter"),
    ],
    ids=["admin-port", "flush-ruleset", "other-table"],
)
def test_a_dangerous_ruleset_is_refused_and_nothing_changes(
    chain: Chain, edit: Callable[[str], str], message: str
) -> None:
    baseline = chain.nft(chain.vps, "list", "ruleset")
    done = chain.up(edit(_ruleset()), check=False)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert chain.nft(chain.vps, "list", "ruleset") == baseline
    assert not chain.etc["vps"].exists()


# --- other tables that drop what we forward --------------------------------------------------------

HOSTILE_NFT = """
table inet hostile {
    chain forward {
        type filter hook forward priority filter + 10; policy drop;
        ct state established,related accept
        ip saddr 192.0.2.99 drop
    }
    chain input {
        type filter hook input priority filter; policy drop;
        tcp dport 22 accept
    }
}
table ip catchall {
    chain fwd_filter {
        type filter hook forward priority filter; policy accept;
        ip saddr 192.0.2.98 drop
        reject with icmp type admin-prohibited
    }
}
"""


def test_native_tables_with_a_drop_policy_or_a_catch_all_reject(chain: Chain) -> None:
    chain.start_server()
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    assert _forward_without_our_help(chain).startswith("failed"), "the hostile tables do not drop"
    baseline = chain.nft(chain.vps, "list", "ruleset")

    done = chain.up(_ruleset())
    assert "changed inet hostile forward (forward hook) drops by default" in done.stdout
    assert "changed inet hostile input (input hook) drops by default" in done.stdout
    assert "changed ip catchall fwd_filter (forward hook) drops by default" in done.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    _only_ok(chain.up(_ruleset()))

    listing = chain.nft(chain.vps, "list", "ruleset")
    ours = f'ct status dnat ct reply ip saddr {HOME_TUNNEL} accept comment "forgeway: forwarded to {HOME_TUNNEL}"'
    assert _first_rule(listing, "forward") == ours  # inet hostile
    assert _first_rule(listing, "fwd_filter").startswith("ct status dnat ct reply")
    assert _first_rule(listing, "input") == 'udp dport 51820 accept comment "forgeway: wireguard udp 51820"'
    assert listing.count(FORGEWAY_COMMENT) == 3
    # Theirs is as it was, but for our labelled rules (and our own table).
    assert _without_ours(_without_our_table(listing)) == baseline.strip("\n")

    chain.down()
    assert chain.nft(chain.vps, "list", "ruleset") == baseline  # byte for byte


def test_iptables_drop_policy_and_catch_all_reject_nft_and_legacy(chain: Chain) -> None:
    # As Docker or ufw leave FORWARD (policy DROP), as cloud images leave it (a final
    # REJECT), and legacy iptables beside them.
    chain.start_server()
    for cmd in (
        ["iptables-nft", "-P", "FORWARD", "DROP"],
        ["iptables-nft", "-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"],
        ["iptables-legacy", "-P", "FORWARD", "DROP"],
        ["iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        ["iptables-legacy", "-A", "INPUT", "-j", "REJECT"],
    ):
        chain.ns(chain.vps, *cmd)
    assert _forward_without_our_help(chain).startswith("failed"), "the iptables rules do not drop"

    def state() -> dict[str, str]:
        return {
            "nft": chain.nft(chain.vps, "list", "ruleset"),
            "iptables-nft": chain.ns(chain.vps, "iptables-nft", "-S").stdout,
            "iptables-legacy": chain.ns(chain.vps, "iptables-legacy", "-S").stdout,
        }

    baseline = state()
    done = chain.up(_ruleset())
    for what in ("iptables-nft filter FORWARD", "iptables-legacy filter FORWARD", "iptables-legacy filter INPUT"):
        assert f"changed {what} drops by default" in done.stdout, done.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    _only_ok(chain.up(_ruleset()))

    rules = chain.ns(chain.vps, "iptables-nft", "-S", "FORWARD").stdout.splitlines()
    assert rules[1] == (
        f"-A FORWARD -m conntrack --ctstate DNAT --ctreplsrc {HOME_TUNNEL}"
        f' -m comment --comment "forgeway: forwarded to {HOME_TUNNEL}" -j ACCEPT'
    )
    legacy_input = chain.ns(chain.vps, "iptables-legacy", "-S", "INPUT").stdout.splitlines()
    assert "--dport 51820" in legacy_input[1] and "forgeway: wireguard udp 51820" in legacy_input[1]

    chain.down()
    assert state() == baseline


def test_boot_mode_restores_everything_after_a_reboot(chain: Chain) -> None:
    chain.start_server()
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    # Run from a file as the program stages it (the library inlined), so the script saves a
    # copy of itself for the boot unit to run.
    env = [f"FORGEWAY_ETC={chain.etc['vps']}", "FORGEWAY_SYSTEMD=yes", f"PATH={PATH}"]
    staged = chain.etc["vps"].parent / "stage-vps" / "forwarding-up.sh"
    staged.parent.mkdir()
    staged.write_text(script("forwarding-up.sh"))
    chain.ns(chain.vps, "env", *env, "sh", str(staged), str(ADMIN_PORT), stdin=_ruleset())
    copy = chain.etc["vps"] / "forgeway" / "nftables" / "forwarding-up.sh"
    assert copy.read_text() == script("forwarding-up.sh")
    unit = (chain.etc["vps"] / "systemd" / "system" / "forgeway-nftables.service").read_text()
    assert f"ExecStart=/bin/sh {copy} --boot" in unit

    # "Reboot": no table of ours, the other firewall reloaded from its own file, no forwarding.
    chain.ns(chain.vps, "nft", "delete", "table", "ip", "forgeway")
    chain.ns(chain.vps, "nft", "delete", "table", "inet", "hostile")
    chain.ns(chain.vps, "nft", "delete", "table", "ip", "catchall")
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    assert chain.connect(timeout=1.0).startswith("failed")

    booted = chain.ns(chain.vps, "env", *env, "sh", str(copy), "--boot")
    assert "changed table ip forgeway" in booted.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    _only_ok(chain.ns(chain.vps, "env", *env, "sh", str(copy), "--boot"))
    chain.down()
    assert _files(chain.etc["vps"]) == []


def test_a_new_home_address_replaces_our_rules_in_other_tables(chain: Chain) -> None:
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    chain.ns(chain.vps, "iptables-nft", "-P", "FORWARD", "DROP")
    chain.ns(chain.vps, "iptables-nft", "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT")  # someone else's
    baseline = chain.nft(chain.vps, "list", "ruleset")
    chain.up(_ruleset())
    moved = _ruleset().replace(HOME_TUNNEL, "10.8.0.3")
    done = chain.up(moved)
    assert "changed iptables-nft filter FORWARD drops by default" in done.stdout
    _only_ok(chain.up(moved))
    forward = chain.ns(chain.vps, "iptables-nft", "-S", "FORWARD").stdout.splitlines()
    assert forward[1].startswith("-A FORWARD -m conntrack --ctstate DNAT --ctreplsrc 10.8.0.3 ")
    assert forward[2:] == ["-A FORWARD -i eth9 -j ACCEPT"]
    listing = chain.nft(chain.vps, "list", "ruleset")
    assert listing.count(FORGEWAY_COMMENT) == 3 and "forwarded to 10.8.0.2" not in listing
    chain.down()
    assert chain.nft(chain.vps, "list", "ruleset") == baseline


def test_changed_home_routing_parameters_remove_the_old_rule_and_route(chain: Chain) -> None:
    old = render_home_routing(HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL)))
    new = render_home_routing(
        HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL), route_table=4700, rule_priority=4700)
    )
    rules_before = chain.ns(chain.home, "ip", "rule").stdout
    chain.script("home", "home-routing-up.sh", *old.script_args(), stdin=old.nftables)
    done = chain.script("home", "home-routing-up.sh", *new.script_args(), stdin=new.nftables)
    assert "removed the old rule: priority 4680" in done.stdout
    assert "removed the old route: default via 10.8.0.1 dev wg0 table 4680" in done.stdout
    rules = chain.ns(chain.home, "ip", "rule").stdout
    assert "4700:\tfrom all fwmark 0x10000000/0x10000000 lookup 4700" in rules and "4680" not in rules
    assert chain.ns(chain.home, "ip", "route", "show", "table", "4680").stdout == ""
    chain.script("home", "home-routing-down.sh")
    assert chain.ns(chain.home, "ip", "rule").stdout == rules_before
    assert _files(chain.etc["home"]) == []
