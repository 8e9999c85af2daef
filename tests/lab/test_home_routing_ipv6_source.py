"""preserve-source over IPv6 on a home device WITHOUT an IPv6 default route (the usual home:
IPv4 only, or IPv6 only through the tunnel), on the namespace chain of
test_forwarding_ipv6.py. There the kernel finds no route for the forge's reply before the
return-path mark applies, so home-routing-up.sh also routes by source: `ip -6 rule from`
the home's tunnel address. Converge, the boot unit and delete are checked here too.
"""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from components.render.nftables import HomeRoutingSettings, render_home_routing
from tests.lab import test_forwarding_ipv6
from tests.lab.forwarding_chain import VPS_TUNNEL, Chain, files_in, only_ok
from tests.lab.test_forwarding_ipv6 import (  # the chain with IPv6 beside IPv4
    CLIENT6,
    HOME_TUNNEL6,
    VPS_TUNNEL6,
    _connect6,
    _routing,
    _start_server6,
    ruleset6,
)

pytestmark = pytest.mark.lab
chain = test_forwarding_ipv6.chain  # the fixture: the chain with IPv6 beside IPv4

SOURCE_RULE = f"4680: from {HOME_TUNNEL6} lookup 4680"


def _home_up(chain: Chain, source6: bool = True, systemd: str = "no") -> subprocess.CompletedProcess[str]:
    routing = render_home_routing(
        HomeRoutingSettings(
            "wg0",
            ipaddress.IPv4Address(VPS_TUNNEL),
            vps_tunnel_address6=ipaddress.IPv6Address(VPS_TUNNEL6),
            home_tunnel_address6=ipaddress.IPv6Address(HOME_TUNNEL6) if source6 else None,
        )
    )
    return chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables, systemd=systemd)


def _rules6(chain: Chain) -> list[str]:
    out = chain.ns(chain.home, "ip", "-6", "rule", "show", "priority", "4680").stdout
    return [" ".join(line.split()) for line in out.splitlines()]


def test_without_an_ipv6_default_route_the_source_rule_brings_the_reply_back(chain: Chain) -> None:
    chain.ns(chain.home, "ip", "-6", "route", "del", "default", "via", "fe80::1", "dev", "lan0")
    routing_before = _routing(chain)
    _start_server6(chain)
    chain.up(ruleset6("preserve-source"))
    # The negative control: the fwmark rule alone (the earlier script) gets no answer here.
    _home_up(chain, source6=False)
    assert _connect6(chain).startswith("failed"), "answered without the source rule: the test proves nothing"

    first = _home_up(chain, systemd="yes")
    assert f"changed ip -6 rule {SOURCE_RULE}" in first.stdout, first.stdout
    seen = _connect6(chain).split()[0]
    assert seen == CLIENT6  # the forge sees the client's IPv6 address
    only_ok(_home_up(chain, systemd="yes"))
    assert _rules6(chain).count(SOURCE_RULE) == 1, _rules6(chain)
    unit = (chain.etc["home"] / "systemd" / "system" / "forgeway-home-routing.service").read_text()
    assert f"-6 rule add priority 4680 from {HOME_TUNNEL6} lookup 4680\n" in unit
    assert f"-6 rule del priority 4680 from {HOME_TUNNEL6} lookup 4680\n" in unit

    # Switching the source rule off (an older program) removes just it.
    back = _home_up(chain, source6=False)
    assert f"removed the old IPv6 rule: priority 4680 from {HOME_TUNNEL6} lookup 4680" in back.stdout
    assert SOURCE_RULE not in _rules6(chain) and len(_rules6(chain)) == 1, _rules6(chain)

    _home_up(chain)
    chain.down()
    gone = chain.script("home", "home-routing-down.sh")
    assert f"removed ip -6 rule 4680: from {HOME_TUNNEL6} lookup 4680" in gone.stdout, gone.stdout
    assert _rules6(chain) == []
    assert _routing(chain) == routing_before
    assert files_in(chain.etc["home"]) == []
    only_ok(chain.script("home", "home-routing-down.sh"))


def test_a_bad_source6_is_refused_before_anything_changes(chain: Chain) -> None:
    routing = render_home_routing(
        HomeRoutingSettings(
            "wg0", ipaddress.IPv4Address(VPS_TUNNEL), vps_tunnel_address6=ipaddress.IPv6Address(VPS_TUNNEL6)
        )
    )
    for args, message in [
        ((*routing.script_args(), "10.8.0.2"), "SOURCE6 '10.8.0.2' is not an IPv6 address"),
        ((*routing.script_args()[:5], "", HOME_TUNNEL6), f"SOURCE6 '{HOME_TUNNEL6}' is given without GATEWAY6"),
    ]:
        done = chain.script("home", "home-routing-up.sh", *args, stdin=routing.nftables, check=False)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    assert _rules6(chain) == [] and files_in(chain.etc["home"]) == []
