"""The Let's Encrypt DNS check and AAAA records (components/tlscheck.py): a record not
pointing at the VPS is named; with forwarding.ipv6 off any AAAA record is a warning."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from components.config import PROJECT, StackConfig, parse_stack
from components.tlscheck import letsencrypt_dns_problems
from tests.stacks import prod_stack

pytestmark = pytest.mark.unit

VPS4, VPS6 = "198.51.100.77", "2001:db8::10"


def _cfg(ipv6: bool, public6: str | None = VPS6) -> StackConfig:
    raw, secret_keys = prod_stack()
    raw[f"{PROJECT}:tunnel"] = {**raw.get(f"{PROJECT}:tunnel", {}), "ipv6": ipv6}
    raw[f"{PROJECT}:forwarding"] = {**raw.get(f"{PROJECT}:forwarding", {}), "ipv6": ipv6}
    if public6 is not None:
        hosts = [dict(h) for h in raw[f"{PROJECT}:hosts"]]
        hosts[0]["public_address6"] = public6
        raw[f"{PROJECT}:hosts"] = hosts
    cfg, _ = parse_stack(raw, secret_keys)
    assert cfg.gitlab.tls == "letsencrypt"
    return cfg


def _check(cfg: StackConfig, gitlab: list[str], registry: list[str], vps: list[str] | None = None) -> list[str]:
    table = {
        cfg.vps.public_address or "": vps if vps is not None else [VPS4],
        cfg.gitlab.domain: gitlab,
        cfg.registry.domain or "": registry,
    }

    def resolve(name: str) -> Sequence[str]:
        return table.get(name, [])

    return letsencrypt_dns_problems(cfg, resolve)


def test_aaaa_records_pointing_at_the_vps_pass_with_forwarding_ipv6() -> None:
    assert _check(_cfg(ipv6=True), [VPS4, VPS6], [VPS4, VPS6]) == []


def test_an_aaaa_record_elsewhere_is_named() -> None:
    cfg = _cfg(ipv6=True)
    problems = _check(cfg, [VPS4, "2001:db8::99"], [VPS4, VPS6])
    assert problems == [
        f"{cfg.gitlab.domain} has the AAAA record 2001:db8::99, not the VPS's IPv6 address (2001:db8::10): "
        f"Let's Encrypt prefers IPv6 and its HTTP-01 challenge would not reach gitlab on {cfg.gitlab_host.name}"
    ]


def test_with_forwarding_ipv6_off_any_aaaa_record_is_a_warning() -> None:
    cfg = _cfg(ipv6=False)
    problems = _check(cfg, [VPS4, VPS6], [VPS4])
    assert problems == [
        f"{cfg.gitlab.domain} has the AAAA record {VPS6}, but forwarding.ipv6 is off: Let's Encrypt prefers "
        "IPv6 and its HTTP-01 challenge would fail; remove the AAAA record or set forwarding.ipv6: true"
    ]
    assert _check(cfg, [VPS4], [VPS4]) == []  # no AAAA record: nothing to say


def test_auto_takes_the_vps_names_aaaa_records_and_says_when_it_cannot_know() -> None:
    cfg = _cfg(ipv6=True, public6=None)
    assert cfg.vps.public_address6 == "auto"
    # The VPS's own name (public_address) has the AAAA record: that is what a name must point at.
    assert _check(cfg, [VPS4, VPS6], [VPS4, VPS6], vps=[VPS4, VPS6]) == []
    unknown = _check(cfg, [VPS4, VPS6], [VPS4], vps=[VPS4])
    assert unknown == [
        f"{cfg.gitlab.domain} has the AAAA record {VPS6}, and the VPS's IPv6 address is unknown: set "
        "hosts[vps].public_address6 so forgeway can check that it points at the VPS"
    ]


def test_a_name_with_only_the_vps_aaaa_record_is_not_called_wrong() -> None:
    # An IPv6-only name: reaches the VPS over IPv6; the IPv4 part of the check must not complain.
    assert _check(_cfg(ipv6=True), [VPS6], [VPS4]) == []
