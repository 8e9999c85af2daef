"""The dual-stack tunnel (tunnel.ipv6) from tunnel-up.sh, on two namespaces whose uplink is
IPv6 only: home dials the VPS at [2001:db8::1], and both families cross the tunnel; a
second run changes nothing; down removes the interface with both addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.tunnel_hosts import IFACE, Pair, tunnel_pair

pytestmark = pytest.mark.lab


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with tunnel_pair(tmp_path, ipv6_only_uplink=True) as made:
        yield made


def test_an_ipv6_only_peer_dials_over_ipv6_and_both_families_cross(pair: Pair) -> None:
    assert pair.home.machine.execute(["ip", "-4", "addr", "show", "dev", "eth1"]).stdout.count("inet ") == 0
    assert pair.home.ping("fd77:6179:7761::1"), "home cannot ping the VPS's tunnel IPv6 address"
    assert pair.vps.ping("fd77:6179:7761::2"), "the VPS cannot ping home's tunnel IPv6 address"
    assert pair.home.ping("10.8.0.1"), "IPv4 inside a tunnel carried over IPv6"
    # The VPS learned home's endpoint from its IPv6 packets.
    assert "[2001:db8::2]:" in pair.vps.wg("show", IFACE, "endpoints")
    assert "endpoint = [2001:db8::1]:51820" in pair.home.showconf().lower()


def test_both_addresses_are_on_wg0_and_a_second_up_changes_nothing(pair: Pair) -> None:
    assert pair.home.ping("fd77:6179:7761::1")
    for host, v4, v6 in (
        (pair.vps, "10.8.0.1/24", "fd77:6179:7761::1/64"),
        (pair.home, "10.8.0.2/24", "fd77:6179:7761::2/64"),
    ):
        shown = host.machine.succeed(["ip", "-o", "addr", "show", "dev", IFACE, "scope", "global"])
        assert f" {v4} " in shown and f" {v6} " in shown, shown
        done = host.up()
        assert done.stdout == f"ok {IFACE}: nothing to change\n", f"{host.name}: {done.stdout}{done.stderr}"


def test_a_lost_ipv6_address_is_put_back_and_down_removes_the_interface(pair: Pair) -> None:
    pair.home.machine.succeed(["ip", "-6", "addr", "del", "fd77:6179:7761::2/64", "dev", IFACE])
    repaired = pair.home.up()
    assert "address fd77:6179:7761::2/64" in repaired.stdout, repaired.stdout
    assert pair.home.ping("fd77:6179:7761::1")
    for host in pair.hosts:
        host.down()
        assert host.ifindex() is None
