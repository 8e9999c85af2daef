"""Names a server certificate of our own CA must carry (components.pki.server_names),
on the example prod and lab stacks and variants of them, and the matching rule a
config check uses (covers)."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from components.config import PROJECT, StackConfig, parse_stack
from components.pki import (
    SERVER_CERT_EARLY_RENEWAL_HOURS,
    SERVER_CERT_VALIDITY_HOURS,
    ServerCertificateArgs,
    covers,
    server_names,
)
from components.tunnel import tunnel_addresses
from tests.program.conftest import Stack
from tests.stacks import lab_stack, prod_stack


def _config(
    loaded: tuple[dict[str, Any], list[str]], change: Callable[[dict[str, Any]], None] | None = None
) -> StackConfig:
    raw, secret_keys = loaded
    raw = copy.deepcopy(raw)
    if change is not None:
        change(raw)
    config, _ = parse_stack(raw, secret_keys)
    return config


def _names(config: StackConfig) -> tuple[list[str], list[str]]:
    return server_names(config, tunnel_addresses(config))


def _host(raw: dict[str, Any], name: str) -> dict[str, Any]:
    host: dict[str, Any] = next(h for h in raw[f"{PROJECT}:hosts"] if h["name"] == name)
    return host


def test_prod_names_gitlab_registry_and_the_gitlab_hosts_tunnel_and_lan_addresses() -> None:
    config = _config(prod_stack())
    dns, ips = _names(config)
    assert dns == ["gitlab.example.org", "registry.example.org"]
    # The VPS's public address is a DNS name (vps.example.org): no IP of it; clients
    # use the GitLab and registry names, which point at the VPS.
    assert ips == [str(tunnel_addresses(config)["jetson"]), "192.168.1.50"]
    assert ips[0] == "10.8.0.2"


def test_lab_names_the_gitlab_domain_once_and_the_vps_public_ip() -> None:
    config = _config(lab_stack())
    dns, ips = _names(config)
    assert dns == ["gitlab.forgeway.test"]  # no registry.domain: the registry shares GitLab's
    assert ips == ["203.0.113.10", "10.8.0.2", "198.51.100.2"]  # VPS public, home tunnel, home LAN


def test_a_public_address_ip_is_named_not_the_vps_ssh_address() -> None:
    def change(raw: dict[str, Any]) -> None:
        _host(raw, "vps")["public_address"] = "198.18.0.7"

    _, ips = _names(_config(prod_stack(), change))
    assert "198.18.0.7" in ips and "203.0.113.10" not in ips


def test_a_gitlab_host_reached_by_name_on_the_lan_gets_that_name() -> None:
    def change(raw: dict[str, Any]) -> None:
        _host(raw, "jetson")["address"] = "Jetson.home.arpa"

    dns, ips = _names(_config(prod_stack(), change))
    assert dns == ["gitlab.example.org", "registry.example.org", "jetson.home.arpa"]
    assert ips == ["10.8.0.2"]


def test_a_pinned_tunnel_address_is_the_one_named() -> None:
    def change(raw: dict[str, Any]) -> None:
        _host(raw, "home")["tunnel_address"] = "10.8.0.42"

    _, ips = _names(_config(lab_stack(), change))
    assert "10.8.0.42" in ips and "10.8.0.2" not in ips


@pytest.mark.parametrize("loaded", [prod_stack, lab_stack], ids=["prod", "lab"])
def test_names_are_unique_valid_and_split_by_kind(loaded: Callable[[], tuple[dict[str, Any], list[str]]]) -> None:
    dns, ips = _names(_config(loaded()))
    assert len(set(dns)) == len(dns) and len(set(ips)) == len(ips)
    for address in ips:
        ipaddress.ip_address(address)
    for name in dns:
        with pytest.raises(ValueError):
            ipaddress.ip_address(name)
        assert name == name.lower()
    ServerCertificateArgs(ca=None, common_name=dns[0], dns_names=dns, ip_addresses=ips)  # type: ignore[arg-type]


def test_the_names_cover_the_urls_the_stack_hands_users(stack: Stack) -> None:
    config = _config((stack.config, stack.secret_keys))
    dns, ips = _names(config)
    gitlab = urlsplit(stack.synth.outputs["gitlab_url"]).hostname
    registry = urlsplit("//" + stack.synth.outputs["registry"]).hostname
    assert gitlab is not None and registry is not None
    assert covers([*dns, *ips], gitlab) and covers([*dns, *ips], registry)


@pytest.mark.parametrize(
    ("names", "host", "expected"),
    [
        (["gitlab.example.org"], "gitlab.example.org", True),
        (["gitlab.example.org"], "GitLab.Example.org.", True),
        (["gitlab.example.org"], "registry.example.org", False),
        (["*.example.org"], "registry.example.org", True),
        (["*.example.org"], "example.org", False),
        (["*.example.org"], "a.b.example.org", False),
        (["*.example.org"], "10.8.0.2", False),
        (["10.8.0.2"], "10.8.0.2", True),
        (["10.8.0.2"], "10.8.0.3", False),
        (["2001:db8::1"], "2001:DB8:0::1", True),
        (["10.8.0.2"], "10-8-0-2.example.org", False),
        (["gitlab.example.org"], "10.8.0.2", False),
        ([], "gitlab.example.org", False),
    ],
)
def test_covers_matches_as_tls_clients_do(names: list[str], host: str, expected: bool) -> None:
    assert covers(names, host) is expected


def test_server_certificate_args_refuse_what_would_never_work() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ServerCertificateArgs(ca=None, common_name="x.test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ServerCertificateArgs(ca=None, common_name="x.test", ip_addresses=["gitlab.test"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="early_renewal_hours"):
        ServerCertificateArgs(
            ca=None,  # type: ignore[arg-type]
            common_name="x.test",
            dns_names=["x.test"],
            validity_hours=24,
            early_renewal_hours=24,
        )
    assert SERVER_CERT_EARLY_RENEWAL_HOURS < SERVER_CERT_VALIDITY_HOURS <= 398 * 24
