"""The dual-stack tunnel (tunnel.ipv6): addresses mirrored from IPv4, AllowedIPs of both
families in both forwarding modes, ADDRESS6 for tunnel-up.sh, and wg reading it back."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from components.config import Tunnel
from components.render.wgconf import endpoint_interface, peer_interface, render_setconf, render_settings
from components.render.wireguard import assign_tunnel_addresses6
from tests.unit.test_wgconf import HOME as HOME4
from tests.unit.test_wgconf import HOME_KEY, VPS_KEY, _showconf_peers, _wg_apply
from tests.unit.test_wgconf import RUNNER as RUNNER4
from tests.unit.test_wgconf import VPS as VPS4

pytestmark = pytest.mark.unit

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
DUAL = Tunnel(uplink_mtu=1420, ipv6=True)  # ipv6_subnet: the default fd77:6179:7761::/64

VPS = VPS4._replace(address6=V6("fd77:6179:7761::1"))
HOME = HOME4._replace(address6=V6("fd77:6179:7761::2"))
RUNNER = RUNNER4._replace(address6=V6("fd77:6179:7761::3"))


def test_ipv6_addresses_mirror_the_ipv4_host_part_and_keep_pinned_ones() -> None:
    v4 = {"vps": V4("10.8.0.1"), "home": V4("10.8.0.2"), "far": V4("10.8.1.7")}
    got = assign_tunnel_addresses6(
        ipaddress.IPv4Network("10.8.0.0/16"),
        ipaddress.IPv6Network("fd77:6179:7761::/64"),
        v4,
        {"home": V6("fd77:6179:7761::99")},
    )
    assert got == {
        "vps": V6("fd77:6179:7761::1"),
        "home": V6("fd77:6179:7761::99"),
        "far": V6("fd77:6179:7761::107"),  # 10.8.1.7 is host 263 = 0x107 of the /16
    }


def test_vps_gives_each_peer_its_32_and_its_128() -> None:
    vps = endpoint_interface(tunnel=DUAL, address=VPS.address, peers=[HOME, RUNNER], address6=VPS.address6)
    text = render_setconf(vps)
    assert f"PublicKey = {HOME.public_key}\nAllowedIPs = 10.8.0.2/32, fd77:6179:7761::2/128\n" in text
    assert f"PublicKey = {RUNNER.public_key}\nAllowedIPs = 10.8.0.3/32, fd77:6179:7761::3/128\n" in text
    settings = render_settings(vps).splitlines()
    assert "ADDRESS6=fd77:6179:7761::1/64" in settings
    assert "ROUTES=" in settings  # each /128 is inside the interface's own /64


@pytest.mark.parametrize(
    ("any_source", "any_source6", "allowed"),
    [
        pytest.param(False, False, "10.8.0.0/24, fd77:6179:7761::/64", id="snat-or-a-runner"),
        pytest.param(True, False, "0.0.0.0/0, fd77:6179:7761::/64", id="preserve-source-ipv4-forwarding-only"),
        pytest.param(True, True, "0.0.0.0/0, ::/0", id="preserve-source-both-families"),
    ],
)
def test_peer_allowed_ips_for_both_families_in_both_modes(any_source: bool, any_source6: bool, allowed: str) -> None:
    home = peer_interface(
        tunnel=DUAL,
        address=HOME.address,
        vps=VPS,
        endpoint_host="2001:db8::10",
        any_source=any_source,
        any_source6=any_source6,
        address6=HOME.address6,
    )
    text = render_setconf(home)
    assert f"AllowedIPs = {allowed}\n" in text
    assert "Endpoint = [2001:db8::10]:51820\n" in text
    # Neither /0 becomes a route: replies find the tunnel by policy routing (home-routing-up.sh).
    assert "ROUTES=\n" in render_settings(home)
    assert "ADDRESS6=fd77:6179:7761::2/64\n" in render_settings(home)


def test_ipv4_only_tunnel_renders_no_ipv6_at_all() -> None:
    # Existing stacks: byte for byte the IPv4-only files (their hash is in the command's triggers).
    home = peer_interface(
        tunnel=Tunnel(uplink_mtu=1420), address=HOME.address, vps=VPS, endpoint_host="vps.example.org"
    )
    assert "ADDRESS6" not in render_settings(home)
    assert "AllowedIPs = 10.8.0.0/24\n" in render_setconf(home)


def test_a_dual_stack_peer_without_an_ipv6_address_is_refused() -> None:
    with pytest.raises(ValueError, match=r"peer 'home' has no tunnel IPv6 address, and tunnel.ipv6 is on"):
        endpoint_interface(tunnel=DUAL, address=VPS.address, peers=[HOME4], address6=VPS.address6)
    with pytest.raises(ValueError, match=r"outside tunnel.ipv6_subnet fd77:6179:7761::/64"):
        peer_interface(
            tunnel=DUAL, address=HOME.address, vps=VPS, endpoint_host="vps.example.org", address6=V6("fd00::2")
        )


def test_wg_takes_the_dual_stack_vps_side(tmp_path: Path) -> None:
    vps = endpoint_interface(tunnel=DUAL, address=VPS.address, peers=[HOME, RUNNER], address6=VPS.address6)
    done = _wg_apply(tmp_path, render_setconf(vps), VPS_KEY)
    assert done.returncode == 0, done.stderr
    peers = _showconf_peers(done.stdout)
    assert peers[HOME.public_key]["AllowedIPs"] == "10.8.0.2/32, fd77:6179:7761::2/128"
    assert peers[RUNNER.public_key]["AllowedIPs"] == "10.8.0.3/32, fd77:6179:7761::3/128"


def test_wg_takes_the_forge_side_in_preserve_source_with_an_ipv6_endpoint(tmp_path: Path) -> None:
    home = peer_interface(
        tunnel=DUAL,
        address=HOME.address,
        vps=VPS,
        endpoint_host="2001:db8::10",
        any_source=True,
        any_source6=True,
        address6=HOME.address6,
    )
    done = _wg_apply(tmp_path, render_setconf(home), HOME_KEY)
    assert done.returncode == 0, done.stderr
    vps = _showconf_peers(done.stdout)[VPS.public_key]
    assert vps["AllowedIPs"] == "0.0.0.0/0, ::/0"
    assert vps["Endpoint"] == "[2001:db8::10]:51820"
