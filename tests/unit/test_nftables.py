"""The forwarding rulesets (components/render/nftables.py), checked by the real nft.

`nft -c` runs as an unprivileged user in a user and network namespace of its own
(``unshare -rn``): it parses and checks against the kernel without touching any host.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import parse_stack
from components.render.nftables import (
    DEFAULT_FWMARK,
    ForwardingSettings,
    HomeRoutingSettings,
    PortForward,
    forwarding_settings,
    render_forwarding,
    render_home_routing,
)
from components.scripts import script_command
from components.tunnel import tunnel_addresses
from tests.stacks import prod_stack

pytestmark = pytest.mark.unit

SETTINGS = ForwardingSettings(
    public_interface="eth0",
    tunnel_interface="wg0",
    home_address=ipaddress.IPv4Address("10.8.0.2"),
    ports=(PortForward(80, 80, "http"), PortForward(443, 443, "https"), PortForward(22, 2222, "ssh")),
    mode="snat",
    admin_ssh_port=2202,
    wireguard_port=51820,
    tunnel_mtu=1420,
)
HOME = HomeRoutingSettings(tunnel_interface="wg0", vps_tunnel_address=ipaddress.IPv4Address("10.8.0.1"))


def _with(**changes: object) -> ForwardingSettings:
    fields = {f: getattr(SETTINGS, f) for f in SETTINGS.__dataclass_fields__}
    return ForwardingSettings(**{**fields, **changes})


def _require(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make setup` (tools/ci/apt-packages.txt)")
    return path


def _nft_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "forgeway.nft"
    f.write_text(text)
    return subprocess.run(
        [_require("unshare"), "-rn", _require("nft"), "-c", "-f", str(f)], capture_output=True, text=True, check=False
    )


def _rules(text: str) -> list[str]:
    """The rule lines (no comments, headers, braces), stripped."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.startswith("\t\t") and not line.strip().startswith(("#", "type "))
    ]


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_ruleset_passes_nft_check(tmp_path: Path, mode: str) -> None:
    done = _nft_check(tmp_path, render_forwarding(_with(mode=mode)))
    assert done.returncode == 0, done.stderr


def test_home_routing_table_passes_nft_check(tmp_path: Path) -> None:
    done = _nft_check(tmp_path, render_home_routing(HOME).nftables)
    assert done.returncode == 0, done.stderr


def test_ruleset_replaces_only_our_table_atomically() -> None:
    text = render_forwarding(SETTINGS)
    top = [line for line in text.splitlines() if line and not line.startswith(("#", "\t", "}"))]
    # Declared first (so the delete never fails), deleted, defined: one nft -f transaction.
    assert top == ["table ip forgeway", "delete table ip forgeway", "table ip forgeway {"]
    assert "flush" not in text


def test_each_public_port_is_dnatted_on_the_public_interface_to_the_home() -> None:
    rules = _rules(render_forwarding(SETTINGS))
    assert 'iifname "eth0" tcp dport 80 dnat to 10.8.0.2:80 comment "http"' in rules
    assert 'iifname "eth0" tcp dport 22 dnat to 10.8.0.2:2222 comment "ssh"' in rules
    assert len([r for r in rules if " dnat to " in r]) == 3


def test_snat_mode_masquerades_dnatted_flows_into_the_tunnel() -> None:
    rules = _rules(render_forwarding(SETTINGS))
    assert 'oifname "wg0" ct status dnat ip daddr 10.8.0.2 masquerade' in rules


def test_preserve_source_mode_has_no_source_nat() -> None:
    text = render_forwarding(_with(mode="preserve-source"))
    assert not [r for r in _rules(text) if "masquerade" in r or " snat " in r]
    assert "chain postrouting {" in text  # registered, empty: replies are un-NATed on old kernels too


def test_mss_is_clamped_both_ways_through_the_tunnel_to_mtu_minus_40() -> None:
    rules = _rules(render_forwarding(_with(tunnel_mtu=1400)))
    clamp = "tcp flags syn / syn,rst tcp option maxseg size > 1360 tcp option maxseg size set 1360"
    assert f'oifname "wg0" {clamp}' in rules
    assert f'iifname "wg0" {clamp}' in rules


def test_our_flows_admin_ssh_and_wireguard_are_accepted() -> None:
    rules = _rules(render_forwarding(SETTINGS))
    assert any(r.startswith("ct status dnat ct reply ip saddr 10.8.0.2 counter accept") for r in rules)
    assert any(r.startswith("tcp dport 2202 counter accept") for r in rules)
    assert any(r.startswith("udp dport 51820 counter accept") for r in rules)
    # Policy accept everywhere: our table never drops anybody else's traffic.
    assert "policy drop" not in render_forwarding(SETTINGS)


def test_facts_for_the_scripts_are_in_comments() -> None:
    text = render_forwarding(SETTINGS)
    assert "# forgeway-home-address 10.8.0.2" in text.splitlines()
    assert "# forgeway-wireguard-port 51820" in text.splitlines()
    assert "# forgeway-dnat tcp 22 10.8.0.2 2222 snat" in text.splitlines()


@pytest.mark.parametrize("port", [22, 443])
def test_forwarding_the_admin_ssh_port_cannot_be_rendered(port: int) -> None:
    with pytest.raises(ValueError, match=rf"public TCP port {port}, the VPS admin SSH port"):
        render_forwarding(_with(admin_ssh_port=port))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"public_interface": 'eth0" accept; #'}, "not an interface name"),
        ({"tunnel_interface": "eth0"}, "both 'eth0'"),
        ({"ports": ((443, 443), (443, 8443))}, "forwards public TCP port 443 again"),
        ({"ports": ((0, 80),)}, r"ports\[0\].public 0 is not a port"),
        ({"tunnel_mtu": 1000}, "tunnel_mtu 1000"),
        ({"mode": "dnat-only"}, "mode 'dnat-only'"),
        ({"home_address": ipaddress.IPv4Address("127.0.0.1")}, "home_address 127.0.0.1"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_forwarding(_with(**changes))


def test_rendering_is_deterministic() -> None:
    again = _with(ports=[(80, 80, "http"), (443, 443, "https"), (22, 2222, "ssh")])  # plain tuples, a list
    assert render_forwarding(SETTINGS) == render_forwarding(again) == render_forwarding(SETTINGS)
    assert render_home_routing(HOME) == render_home_routing(HOME)


def test_home_routing_marks_tunnel_connections_and_their_replies() -> None:
    routing = render_home_routing(HOME)
    rules = _rules(routing.nftables)
    assert 'iifname "wg0" ct state new ct mark set ct mark | 0x10000000' in rules
    assert 'iifname != "wg0" ct mark & 0x10000000 == 0x10000000 meta mark set meta mark | 0x10000000' in rules
    assert "type route hook output priority mangle; policy accept;" in routing.nftables
    assert routing.script_args() == ("wg0", "0x10000000/0x10000000", "4680", "4680", "10.8.0.1")
    assert routing.rp_filter == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fwmark": 0x3}, "not a single bit"),
        ({"route_table": 254}, "reserved table"),
        ({"rule_priority": 32766}, "before the main table"),
        ({"tunnel_interface": "wg 0"}, "not an interface name"),
    ],
)
def test_bad_home_settings_are_refused(changes: dict[str, object], message: str) -> None:
    fields = {"tunnel_interface": "wg0", "vps_tunnel_address": "10.8.0.1", "fwmark": DEFAULT_FWMARK, **changes}
    with pytest.raises(ValueError, match=message):
        render_home_routing(HomeRoutingSettings(**fields))  # type: ignore[arg-type]


def test_settings_from_the_prod_stack_render_a_valid_ruleset(tmp_path: Path) -> None:
    cfg, _ = parse_stack(*prod_stack())
    home = tunnel_addresses(cfg)[cfg.gitlab_host.name]
    settings = forwarding_settings(cfg, home)
    assert settings.admin_ssh_port == 2202 and settings.mode == "preserve-source"
    assert settings.tunnel_mtu == 1420 and PortForward(22, 2222, "ssh") in settings.ports
    done = _nft_check(tmp_path, render_forwarding(settings))
    assert done.returncode == 0, done.stderr


def test_forwarding_up_refuses_a_ruleset_that_forwards_the_admin_port(tmp_path: Path) -> None:
    # Hand-edited text (the renderer cannot produce it): the script's own check must catch it.
    text = render_forwarding(SETTINGS).replace("tcp dport 443 dnat", "tcp dport { 443, 2200-2210 } dnat")
    etc = tmp_path / "etc"
    done = subprocess.run(
        [_require("unshare"), "-rn", "sh", "-c", script_command("forwarding-up.sh", "2202")],
        input=text,
        capture_output=True,
        text=True,
        env={**os.environ, "FORGEWAY_ETC": str(etc), "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin"},
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"forward TCP port 2202, this VPS's admin SSH port", done.stderr), done.stderr
    assert "2200-2210" in done.stderr
    assert not etc.exists(), "a refused ruleset changed files"
