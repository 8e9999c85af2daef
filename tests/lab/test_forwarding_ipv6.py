"""IPv6 forwarding (forwarding.ipv6) on the namespace chain of forwarding_chain.py, with
IPv6 added beside IPv4::

    client 2001:db8::100 --eth0-- 2001:db8::10 vps fd77:6179:7761::1 --wg0-- ::2 home
                                                       home: default via fe80::1 dev lan0
                                                       (nothing there, as behind a CGNAT)

A client reaches the home listener over IPv6 in both modes and sees the forge see its
address in preserve-source; a bulk upload crosses a narrower tunnel with ICMPv6
packet-too-big dropped on the VPS (and fails without the clamp, the negative control);
down restores both families' rulesets and sysctls exactly.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.render.nftables import (
    HomeRoutingSettings,
    render_home_routing,
)
from tests.lab.forwarding_chain import (
    HOME_PORT,
    PUBLIC_PORT,
    TUNNEL_MTU,
    VPS_TUNNEL,
    Chain,
    chain_in_namespaces,
    files_in,
    forward_ruleset,
    only_ok,
)

pytestmark = pytest.mark.lab

CLIENT6, VPS_PUBLIC6 = "2001:db8::100", "2001:db8::10"
VPS_TUNNEL6, HOME_TUNNEL6 = "fd77:6179:7761::1", "fd77:6179:7761::2"
BULK_BYTES = 4 * 1024 * 1024

# Tells each client the address it sees and the MSS; or, for "bulk", counts what it got.
SERVER6 = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); print("ready", flush=True)
while True:
    c, a = s.accept()
    c.settimeout(20)
    first = c.recv(5)
    if first == b"bulk:":
        n = 0
        try:
            while (chunk := c.recv(65536)):
                n += len(chunk)
        except OSError:
            pass
        c.sendall(f"{n}\\n".encode())
    else:
        c.sendall(f"{a[0]} {c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)}\\n".encode())
    c.close()
"""
CLIENT6_SCRIPT = """
import socket, sys
host, port, timeout, bulk = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
try:
    c = socket.create_connection((host, port), timeout=timeout)
    if bulk:
        c.sendall(b"bulk:" + b"x" * bulk)
        c.shutdown(socket.SHUT_WR)
    else:
        c.sendall(b"hello")
    print(c.recv(100).decode().strip(), c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
except OSError as exc:
    print("failed", type(exc).__name__)
"""


def ruleset6(mode: str = "snat") -> str:
    return forward_ruleset(mode, home_address6=HOME_TUNNEL6)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with chain_in_namespaces(tmp_path) as made:
        for netns, dev, cidr in [
            (made.client, "eth0", f"{CLIENT6}/64"),
            (made.vps, "eth0", f"{VPS_PUBLIC6}/64"),
            (made.vps, "wg0", f"{VPS_TUNNEL6}/64"),
            (made.home, "wg0", f"{HOME_TUNNEL6}/64"),
        ]:
            made.ns(netns, "ip", "-6", "addr", "add", cidr, "dev", dev, "nodad")
        # The home's IPv6 default route leads out of its own uplink too.
        made.ns(made.home, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "lan0")
        for netns in (made.client, made.vps, made.home):
            _wait_for_link_local(made, netns)
        yield made


def _wait_for_link_local(chain: Chain, netns: str, timeout: float = 15.0) -> None:
    """Until every link that is up has its kernel-made link-local address past DAD: the kernel
    adds it, and its local route, a second or so after the link comes up, so a snapshot of
    the routes taken earlier would differ from one taken later for no fault of the scripts."""
    deadline = time.monotonic() + timeout
    while True:
        links = chain.ns(netns, "ip", "-o", "link", "show", "up").stdout
        names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} - {"lo"}
        addrs = chain.ns(netns, "ip", "-o", "-6", "addr", "show", "scope", "link").stdout.splitlines()
        settled = {line.split()[1] for line in addrs if "tentative" not in line}
        if names <= settled:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{netns}: links {sorted(names - settled)} have no settled link-local address")
        time.sleep(0.1)


def _start_server6(chain: Chain) -> None:
    chain.start_server(server=SERVER6, address=HOME_TUNNEL6)


def _connect6(chain: Chain, bulk: int = 0, timeout: float = 3.0) -> str:
    cmd = [sys.executable, "-c", CLIENT6_SCRIPT, VPS_PUBLIC6, str(PUBLIC_PORT), str(timeout), str(bulk)]
    return chain.ns(chain.client, *cmd).stdout.strip()


def _home_up(chain: Chain, gateway6: bool = True) -> subprocess.CompletedProcess[str]:
    routing = render_home_routing(
        HomeRoutingSettings(
            "wg0",
            ipaddress.IPv4Address(VPS_TUNNEL),
            vps_tunnel_address6=ipaddress.IPv6Address(VPS_TUNNEL6) if gateway6 else None,
        )
    )
    return chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables)


def _sysctls(chain: Chain, netns: str) -> dict[str, str]:
    keys = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.eth0.accept_ra"]
    if netns == chain.home:
        keys = ["net.ipv4.conf.wg0.rp_filter"]
    return {k: chain.ns(netns, "sysctl", "-n", k).stdout.strip() for k in keys}


def _routing(chain: Chain) -> str:
    return "\n".join(
        chain.ns(chain.home, "ip", fam, *what).stdout
        for fam in ("-4", "-6")
        for what in (["rule"], ["route", "show", "table", "all"])
    )


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_a_client_reaches_the_home_listener_over_ipv6_through_the_vps(chain: Chain, mode: str) -> None:
    _start_server6(chain)
    assert _connect6(chain).startswith("failed"), "reached home before any forwarding: the test proves nothing"
    chain.up(ruleset6(mode))
    if mode == "preserve-source":
        # Without the return path the replies leave through the home's uplink and are lost.
        assert _connect6(chain).startswith("failed")
        _home_up(chain)
    seen, server_mss, client_mss = _connect6(chain).split()
    # snat: the forge sees the VPS's tunnel IPv6 address; preserve-source: the client's.
    assert seen == (VPS_TUNNEL6 if mode == "snat" else CLIENT6)
    assert int(server_mss) <= TUNNEL_MTU - 60 and int(client_mss) <= TUNNEL_MTU - 60, (server_mss, client_mss)


def test_up_twice_changes_nothing_and_down_restores_both_families_exactly(chain: Chain) -> None:
    vps_before, home_before = chain.nft(chain.vps, "list", "ruleset"), chain.nft(chain.home, "list", "ruleset")
    sys_before = {"vps": _sysctls(chain, chain.vps), "home": _sysctls(chain, chain.home)}
    routing_before = _routing(chain)
    assert sys_before["vps"]["net.ipv6.conf.eth0.accept_ra"] == "1"  # a fresh namespace takes RAs

    first = chain.up(ruleset6("preserve-source"))
    assert "changed table ip forgeway" in first.stdout
    assert "changed net.ipv6.conf.all.forwarding=1" in first.stdout
    assert "changed net.ipv6.conf.eth0.accept_ra=2" in first.stdout
    home_first = _home_up(chain)
    assert "changed ip -6 rule" in home_first.stdout and "changed ip -6 route" in home_first.stdout
    only_ok(chain.up(ruleset6("preserve-source")))
    only_ok(_home_up(chain))

    table6 = chain.nft(chain.vps, "list", "table", "ip6", "forgeway")
    assert f"dnat to [{HOME_TUNNEL6}]:{HOME_PORT}" in table6
    assert _sysctls(chain, chain.vps) == {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv6.conf.eth0.accept_ra": "2",
    }
    conf = (chain.etc["vps"] / "sysctl.d" / "60-forgeway-forwarding.conf").read_text()
    assert "net.ipv6.conf.all.forwarding = 1" in conf and "net.ipv6.conf.eth0.accept_ra = 2" in conf

    assert "removed table ip6 forgeway" in chain.down().stdout
    home_gone = chain.script("home", "home-routing-down.sh")
    assert "removed table ip6 forgeway" in home_gone.stdout and "removed ip -6 rule" in home_gone.stdout
    assert chain.nft(chain.vps, "list", "ruleset") == vps_before
    assert chain.nft(chain.home, "list", "ruleset") == home_before
    assert {"vps": _sysctls(chain, chain.vps), "home": _sysctls(chain, chain.home)} == sys_before
    assert _routing(chain) == routing_before
    assert files_in(chain.etc["vps"]) == [] and files_in(chain.etc["home"]) == []


def test_switching_ipv6_off_removes_its_table_rule_and_sysctls(chain: Chain) -> None:
    sys_before = _sysctls(chain, chain.vps)
    chain.up(ruleset6("preserve-source"))
    _home_up(chain)
    off = chain.up(forward_ruleset("preserve-source"))
    assert "changed removed table ip6 forgeway (IPv6 forwarding is off)" in off.stdout
    assert "ip6 forgeway" not in chain.nft(chain.vps, "list", "ruleset")
    now = _sysctls(chain, chain.vps)
    assert now["net.ipv6.conf.all.forwarding"] == sys_before["net.ipv6.conf.all.forwarding"]
    assert now["net.ipv6.conf.eth0.accept_ra"] == sys_before["net.ipv6.conf.eth0.accept_ra"]
    home_off = _home_up(chain, gateway6=False)
    assert "ip6 forgeway" not in chain.nft(chain.home, "list", "ruleset")
    assert chain.ns(chain.home, "ip", "-6", "rule", "show", "priority", "4680").stdout.strip() == "", home_off.stdout
    chain.down()
    chain.script("home", "home-routing-down.sh")


def _narrow_tunnel_and_drop_packet_too_big(chain: Chain) -> None:
    # Only the VPS's end narrows, as a real tunnel does behind a forge whose container
    # network has 1500: the forge's SYN-ACK offers 1440, which only the clamp lowers.
    chain.ns(chain.vps, "ip", "link", "set", "dev", "wg0", "mtu", str(TUNNEL_MTU))
    # A table of the test's own: the VPS never sends or forwards ICMPv6 packet-too-big.
    chain.ns(
        chain.vps,
        "nft",
        "-f",
        "-",
        stdin="table inet fwtest {\n"
        "\tchain ptb_out { type filter hook output priority 0; icmpv6 type packet-too-big drop; }\n"
        "\tchain ptb_forward { type filter hook forward priority 0; icmpv6 type packet-too-big drop; }\n"
        "}\n",
    )


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_bulk_upload_crosses_with_icmpv6_packet_too_big_dropped(chain: Chain, mode: str) -> None:
    _narrow_tunnel_and_drop_packet_too_big(chain)
    _start_server6(chain)
    chain.up(ruleset6(mode))
    if mode == "preserve-source":
        _home_up(chain)
    done = _connect6(chain, bulk=BULK_BYTES, timeout=20)
    assert done.split()[0] == str(BULK_BYTES), done  # every byte arrived (the 5-byte tag aside)


def test_without_the_ipv6_clamp_the_bulk_upload_stalls(chain: Chain) -> None:
    # The negative control: the same path with the IPv6 clamp rules taken out.
    _narrow_tunnel_and_drop_packet_too_big(chain)
    _start_server6(chain)
    text = ruleset6("snat")
    head, ip6 = text.split("table ip6 forgeway {", 1)
    ip6 = "\n".join(line for line in ip6.splitlines() if "maxseg size set" not in line)
    chain.up(head + "table ip6 forgeway {" + ip6 + "\n")
    assert _connect6(chain, bulk=BULK_BYTES, timeout=8).startswith("failed")
