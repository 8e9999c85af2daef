"""IPv6 forwarding (forwarding.ipv6): table ip6 forgeway beside table ip forgeway, in the
same file and transaction, checked by the real nft; the home side's IPv6 return path."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from components.config import parse_stack
from components.render.nftables import (
    HomeRoutingSettings,
    forwarding_settings,
    render_forwarding,
    render_home_routing,
)
from components.tunnel import tunnel_addresses, tunnel_addresses6
from tests.stacks import prod_stack
from tests.unit.test_nftables import HOME, _nft_check, _require, _rules, _with

pytestmark = pytest.mark.unit

HOME6 = ipaddress.IPv6Address("fd77:6179:7761::2")
VPS6 = ipaddress.IPv6Address("fd77:6179:7761::1")


def _ip6_table(text: str) -> str:
    return text[text.index("table ip6 forgeway {") :]


def _ip_table(text: str) -> str:
    start = text.index("table ip forgeway {")
    return text[start : text.index("\n}\n", start) + 3]


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_dual_stack_ruleset_passes_nft_check(tmp_path: Path, mode: str) -> None:
    done = _nft_check(tmp_path, render_forwarding(_with(mode=mode, home_address6=HOME6)))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_ipv4_table_is_unchanged_by_ipv6(mode: str) -> None:
    # The regression net: IPv6 only adds a table; IPv4's rules are the same text.
    assert _ip_table(render_forwarding(_with(mode=mode, home_address6=HOME6))) == _ip_table(
        render_forwarding(_with(mode=mode))
    )
    assert "ip6" not in render_forwarding(_with(mode=mode))


def test_same_public_ports_dnat_to_the_forge_tunnel_ipv6_address() -> None:
    rules = _rules(_ip6_table(render_forwarding(_with(home_address6=HOME6))))
    assert 'iifname "eth0" tcp dport 80 dnat to [fd77:6179:7761::2]:80 comment "http"' in rules
    assert 'iifname "eth0" tcp dport 443 dnat to [fd77:6179:7761::2]:443 comment "https"' in rules
    assert 'iifname "eth0" tcp dport 22 dnat to [fd77:6179:7761::2]:2222 comment "ssh"' in rules
    assert not any("dport 2202" in r and "dnat" in r for r in rules)  # the admin's SSH is never forwarded


def test_ipv6_mss_is_mtu_minus_60_both_ways() -> None:
    rules = _rules(_ip6_table(render_forwarding(_with(tunnel_mtu=1400, home_address6=HOME6))))
    clamps = [r for r in rules if "maxseg size set" in r]
    assert clamps == [
        'oifname "wg0" tcp flags syn / syn,rst tcp option maxseg size > 1340 tcp option maxseg size set 1340',
        'iifname "wg0" tcp flags syn / syn,rst tcp option maxseg size > 1340 tcp option maxseg size set 1340',
    ]
    # IPv4 keeps MTU - 40.
    assert "maxseg size set 1360" in _ip_table(render_forwarding(_with(tunnel_mtu=1400, home_address6=HOME6)))


@pytest.mark.parametrize(("mode", "masquerade"), [("snat", True), ("preserve-source", False)])
def test_ipv6_snat_masquerades_into_the_tunnel_and_preserve_source_does_not(mode: str, masquerade: bool) -> None:
    rules = _rules(_ip6_table(render_forwarding(_with(mode=mode, home_address6=HOME6))))
    want = 'oifname "wg0" ct status dnat ip6 daddr fd77:6179:7761::2 masquerade'
    assert (want in rules) is masquerade
    assert sum("masquerade" in r for r in rules) == int(masquerade)


def test_facts_for_the_script_name_both_families() -> None:
    text = render_forwarding(_with(home_address6=HOME6))
    facts = [line for line in text.splitlines() if line.startswith("# forgeway-")]
    assert "# forgeway-home-address6 fd77:6179:7761::2" in facts
    assert "# forgeway-public-interface eth0" in facts
    assert "# forgeway-dnat6 tcp 443 fd77:6179:7761::2 443 snat" in facts
    assert "# forgeway-dnat tcp 443 10.8.0.2 443 snat" in facts
    # Both tables declared and deleted before either is defined: one transaction replaces both.
    lines = text.splitlines()
    first_definition = lines.index("table ip forgeway {")
    for line in ("table ip forgeway", "delete table ip forgeway", "table ip6 forgeway", "delete table ip6 forgeway"):
        assert lines.index(line) < first_definition


def test_bad_ipv6_home_address_is_refused() -> None:
    with pytest.raises(ValueError, match=r"home_address6 ff02::1 is not a unicast address"):
        render_forwarding(_with(home_address6=ipaddress.IPv6Address("ff02::1")))


def test_home_routing_marks_ipv6_the_same_and_routes_it_by_ip6(tmp_path: Path) -> None:
    home = render_home_routing(HomeRoutingSettings("wg0", HOME.vps_tunnel_address, vps_tunnel_address6=VPS6))
    assert home.script_args()[-1] == "fd77:6179:7761::1"
    assert len(home.script_args()) == 6
    ip6 = _ip6_table(home.nftables)
    ip4 = home.nftables[home.nftables.index("table ip forgeway {") : home.nftables.index("table ip6 forgeway {")]
    assert ip6.replace("table ip6", "table ip").strip() == ip4.strip()
    done = _nft_check(tmp_path, home.nftables)
    assert done.returncode == 0, done.stderr
    # IPv4 only: five arguments and one table, as before.
    assert len(render_home_routing(HOME).script_args()) == 5
    assert "ip6" not in render_home_routing(HOME).nftables


def test_stack_settings_carry_the_forge_ipv6_address_only_with_forwarding_ipv6() -> None:
    config, secret_keys = prod_stack()
    config = {
        **config,
        "forgeway:tunnel": {**config.get("forgeway:tunnel", {}), "ipv6": True},
        "forgeway:forwarding": {**config.get("forgeway:forwarding", {}), "ipv6": True},
    }
    stack = parse_stack(config, secret_keys)[0]
    forge = stack.gitlab_host.name
    settings = forwarding_settings(stack, tunnel_addresses(stack)[forge], home_address6=tunnel_addresses6(stack)[forge])
    assert settings.home_address6 == HOME6
    with pytest.raises(ValueError, match=r"forwarding\.ipv6 is on"):
        forwarding_settings(stack, tunnel_addresses(stack)[forge])


def test_the_forwarding_script_refuses_an_ip6_table_without_its_fact(tmp_path: Path) -> None:
    # forwarding-up.sh checks the facts before it touches anything; run it as far as that.
    text = render_forwarding(_with(home_address6=HOME6)).replace("# forgeway-home-address6 ", "# (dropped) ")
    done = subprocess.run(
        [_require("unshare"), "-rn", "sh", "components/scripts/forwarding-up.sh", "2202"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        env={"FORGEWAY_ETC": str(tmp_path / "etc"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode != 0
    assert "defines table ip6 forgeway without a '# forgeway-home-address6' line" in done.stderr, done.stderr
    assert not (tmp_path / "etc").exists()  # nothing changed
