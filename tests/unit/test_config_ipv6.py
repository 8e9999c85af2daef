"""components.config: the IPv6 keys of a valid stack and what is derived from them (the
refused ones are in bad_configs/165-174)."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse_stack
from components.tunnel import tunnel_addresses, tunnel_addresses6
from tests.unit.config_patches import Config, apply_patch

pytestmark = pytest.mark.unit

DUAL = {
    "forgeway:tunnel.ipv6": True,
    "forgeway:forwarding.ipv6": True,
    "forgeway:hosts[0].public_address6": "2001:db8::10",
}


def _parse(prod: tuple[Config, list[str]], set_: dict[str, Any]) -> StackConfig:
    patched = apply_patch(prod, {"set": set_})
    try:
        return parse_stack(patched.config, patched.secret_keys)[0]
    except ConfigError as exc:
        pytest.fail(f"a valid IPv6 variant is refused:\n{exc}")


def test_defaults_keep_the_stack_ipv4_only(prod: tuple[Config, list[str]]) -> None:
    stack = _parse(prod, {"forgeway:tunnel.keepalive": 25})
    assert (stack.tunnel.ipv6, stack.forwarding.ipv6, stack.vps.public_address6) == (False, False, "auto")
    assert tunnel_addresses6(stack) == {}
    assert stack.vps_public_address6 is None  # prod's VPS: an IPv4 address and a DNS name


def test_dual_stack_addresses_mirror_ipv4_and_pinned_ones_are_kept(prod: tuple[Config, list[str]]) -> None:
    stack = _parse(prod, {**DUAL, "forgeway:hosts[3].tunnel_address6": "fd77:6179:7761::42"})
    v4, v6 = tunnel_addresses(stack), tunnel_addresses6(stack)
    assert {n: str(a) for n, a in v4.items()} == {
        "vps": "10.8.0.1",
        "jetson": "10.8.0.2",
        "pi5": "10.8.0.3",
        "builder": "10.8.0.4",
    }
    assert {n: str(a) for n, a in v6.items()} == {
        "vps": "fd77:6179:7761::1",
        "jetson": "fd77:6179:7761::2",
        "pi5": "fd77:6179:7761::3",
        "builder": "fd77:6179:7761::42",
    }
    assert stack.vps_public_address6 == "2001:db8::10"


@pytest.mark.parametrize(
    ("family", "extra", "dials"),
    [
        pytest.param("auto", {}, "vps.example.org", id="auto-dials-the-name"),
        pytest.param("ipv6", {}, "2001:db8::10", id="ipv6-dials-public_address6"),
        pytest.param("ipv4", {}, "203.0.113.10", id="ipv4-dials-the-ipv4-address"),
        pytest.param(
            "ipv6",
            {"forgeway:hosts[0].public_address6": "auto", "forgeway:tunnel.endpoint": "2001:db8::77"},
            "2001:db8::77",
            id="ipv6-dials-an-ipv6-endpoint",
        ),
    ],
)
def test_a_peer_dials_the_family_config_says(
    prod: tuple[Config, list[str]], family: str, extra: dict[str, Any], dials: str
) -> None:
    stack = _parse(prod, {**DUAL, "forgeway:hosts[2].tunnel_endpoint_family": family, **extra})
    assert stack.tunnel_endpoint_for(stack.host("pi5")) == dials
    assert stack.tunnel_endpoint_for(stack.host("builder")) == stack.tunnel_endpoint_host  # auto, untouched
