"""The home device's IPv6 return path by source (render_home_routing, home_tunnel_address6):
a home without an IPv6 default route finds no route for a reply before the mark applies,
so home-routing-up.sh gets the home's tunnel address as SOURCE6 for `ip -6 rule from`.
IPv4-only stacks render as before. (The script itself: tests/lab/test_home_routing_ipv6_source.py.)"""

from __future__ import annotations

import ipaddress

import pytest

from components.render.nftables import HomeRoutingSettings, render_home_routing
from tests.unit.test_nftables import HOME

VPS6 = ipaddress.IPv6Address("fd77:6179:7761::1")
HOME6 = ipaddress.IPv6Address("fd77:6179:7761::2")


def test_the_home_tunnel_address_is_the_seventh_argument_and_named_in_the_ruleset() -> None:
    home = render_home_routing(
        HomeRoutingSettings("wg0", HOME.vps_tunnel_address, vps_tunnel_address6=VPS6, home_tunnel_address6=HOME6)
    )
    assert home.script_args() == (
        "wg0",
        "0x10000000/0x10000000",
        "4680",
        "4680",
        str(HOME.vps_tunnel_address),
        "fd77:6179:7761::1",
        "fd77:6179:7761::2",
    )
    assert "# forgeway-source6 fd77:6179:7761::2\n" in home.nftables
    # Only the header differs from the IPv6 rendering without it: the tables are the same.
    without = render_home_routing(HomeRoutingSettings("wg0", HOME.vps_tunnel_address, vps_tunnel_address6=VPS6))
    body = home.nftables[home.nftables.index("table ip forgeway {") :]
    assert body == without.nftables[without.nftables.index("table ip forgeway {") :]


def test_ipv4_only_renders_as_before() -> None:
    home = render_home_routing(HOME)
    assert home.source6 is None and len(home.script_args()) == 5
    assert "source6" not in home.nftables and "ip6" not in home.nftables


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            HomeRoutingSettings("wg0", HOME.vps_tunnel_address, home_tunnel_address6=HOME6),
            r"home_tunnel_address6 fd77:6179:7761::2 is given without vps_tunnel_address6",
        ),
        (
            HomeRoutingSettings(
                "wg0",
                HOME.vps_tunnel_address,
                vps_tunnel_address6=VPS6,
                home_tunnel_address6=ipaddress.IPv6Address("fe80::2"),
            ),
            r"home_tunnel_address6 fe80::2 is not a unicast address other than the VPS's",
        ),
        (
            HomeRoutingSettings("wg0", HOME.vps_tunnel_address, vps_tunnel_address6=VPS6, home_tunnel_address6=VPS6),
            r"home_tunnel_address6 fd77:6179:7761::1 is not a unicast address other than the VPS's",
        ),
    ],
)
def test_bad_home_tunnel_address6_is_refused(settings: HomeRoutingSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_home_routing(settings)
