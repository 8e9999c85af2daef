"""The lab stack with IPv6 on (tunnel.ipv6, forwarding.ipv6, the VPS's public_address6), in
both forwarding modes, as the program registers it under the mock monitor: the dual-stack
tunnel, table ip6 forgeway on the VPS, the forge host's IPv6 return path, GitLab's ports
on the tunnel IPv6 address, and the certificate naming both families."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import PROJECT
from tests.program.conftest import as_root
from tests.program.test_forge import _named, _wg_files
from tests.program.test_program import _staged_files
from tests.stacks import lab_stack
from tools.stack.synth import Synthesis, synthesize_in_subprocess, unwrap

VPS6, VPS_TUNNEL6, FORGE_TUNNEL6 = "2001:db8::10", "fd77:6179:7761::1", "fd77:6179:7761::2"
GITLAB6 = "fd77:6179:7762::2"  # gitlab.container_subnet6's ::2


def _ipv6_lab(mode: str) -> tuple[dict[str, Any], list[str]]:
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config[f"{PROJECT}:tunnel"] = {**config[f"{PROJECT}:tunnel"], "ipv6": True}
    config[f"{PROJECT}:forwarding"] = {**config[f"{PROJECT}:forwarding"], "ipv6": True, "mode": mode}
    vps = next(h for h in config[f"{PROJECT}:hosts"] if "vps" in h["roles"])
    vps["public_address6"] = VPS6
    # One runner dials over IPv6 (as an IPv6-only host must: the lab's endpoint is an IPv4 address).
    runner = next(h for h in config[f"{PROJECT}:hosts"] if "runner" in h["roles"])
    runner["tunnel_endpoint_family"] = "ipv6"
    return config, secret_keys


@pytest.fixture(scope="module", params=["snat", "preserve-source"])
def synth(request: pytest.FixtureRequest) -> tuple[str, Synthesis, dict[str, Any]]:
    config, secret_keys = _ipv6_lab(request.param)
    return request.param, synthesize_in_subprocess(f"lab-ipv6-{request.param}", config, secret_keys), config


def _forge_host(config: dict[str, Any]) -> str:
    return str(next(h["name"] for h in config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"]))


def test_every_host_gets_a_tunnel_ipv6_address_and_the_vps_routes_each_peer_its_128(
    synth: tuple[str, Synthesis, dict[str, Any]],
) -> None:
    _mode, result, config = synth
    names = [h["name"] for h in config[f"{PROJECT}:hosts"]]
    vps_files = "\n".join(_staged_files(_named(result, "tunnel-wg0")).values())
    assert f"ADDRESS6={VPS_TUNNEL6}/64" in vps_files
    for i, name in enumerate(names[1:], start=2):
        assert f"/32, fd77:6179:7761::{i:x}/128" in vps_files, name
        assert f"ADDRESS6=fd77:6179:7761::{i:x}/64" in _wg_files(result, name), name


def test_the_forge_host_takes_any_ipv6_source_only_in_preserve_source(
    synth: tuple[str, Synthesis, dict[str, Any]],
) -> None:
    mode, result, config = synth
    forge = _forge_host(config)
    want = (
        "AllowedIPs = 0.0.0.0/0, ::/0" if mode == "preserve-source" else "AllowedIPs = 10.8.0.0/24, fd77:6179:7761::/64"
    )
    assert want in _wg_files(result, forge)
    runner = next(h["name"] for h in config[f"{PROJECT}:hosts"] if "runner" in h["roles"])
    assert "AllowedIPs = 10.8.0.0/24, fd77:6179:7761::/64" in _wg_files(result, runner)


def test_the_vps_forwards_ipv6_to_the_forge_and_the_forge_returns_it(
    synth: tuple[str, Synthesis, dict[str, Any]],
) -> None:
    mode, result, config = synth
    ruleset = str(unwrap(_named(result, "vps-forwarding").inputs["stdin"]))
    assert "table ip6 forgeway {" in ruleset
    assert f"dnat to [{FORGE_TUNNEL6}]:443" in ruleset and f"dnat to [{FORGE_TUNNEL6}]:2222" in ruleset
    assert (f"ct status dnat ip6 daddr {FORGE_TUNNEL6} masquerade" in ruleset) == (mode == "snat")
    returns = [r for r in result.resources if r.name == f"{_forge_host(config)}-return-path" and r.custom]
    if mode == "snat":
        assert returns == []
        return
    (path,) = returns
    assert "table ip6 forgeway {" in str(unwrap(path.inputs["stdin"]))
    assert as_root(path.inputs["create"]).rstrip().endswith(f"10.8.0.1 {VPS_TUNNEL6} {FORGE_TUNNEL6}")


def test_gitlab_is_reached_on_the_tunnel_ipv6_address_by_dnat_and_the_certificate_names_it(
    synth: tuple[str, Synthesis, dict[str, Any]],
) -> None:
    """One binding per port (the tunnel IPv4 address: issue 20's replace); the tunnel IPv6
    address is DNATed by the forge host to GitLab's fixed address on its dual-stack network."""
    _mode, result, config = synth
    (container,) = [
        r for r in result.of_type("docker:index/container:Container") if "forgeway:gitlab:GitLabServer" in r.parent
    ]
    ports = container.inputs["ports"]
    assert {p["ip"] for p in ports} == {"10.8.0.2"}
    assert len({p["internal"] for p in ports}) == len(ports)  # each internal port bound once
    assert "networkMode" not in container.inputs  # else docker attaches it without the fixed address
    (attached,) = container.inputs["networksAdvanced"]
    assert attached["ipv6Address"] == GITLAB6 and attached["ipv4Address"] == "172.31.254.2"
    (network,) = result.of_type("docker:index/network:Network")
    assert network.inputs["name"] == attached["name"] and network.inputs["ipv6"] is True
    assert {c["subnet"] for c in network.inputs["ipamConfigs"]} == {"172.31.254.0/29", "fd77:6179:7762::/64"}
    nat = _named(result, f"{_forge_host(config)}-gitlab-nat-tables")
    files = _staged_files(nat)
    assert set(files) == {"forge-nat-up.sh", "forge6.nft"}  # no LAN publishing in the lab stack
    for internal, home in ((443, 443), (22, 2222)):
        rule = f"ip6 daddr {FORGE_TUNNEL6} tcp dport {home} dnat to [{GITLAB6}]:{internal}"
        assert files["forge6.nft"].count(rule) == 2, rule  # clients (prerouting) and the host itself (output)
    assert as_root(nat.inputs["create"]).rstrip().endswith('forge-nat-up.sh ip6 "$d"')
    # dockerd turns IPv6 forwarding on with the network and never off: the table's command
    # records the host's value first, and its delete (after the network's) restores it
    assert nat.urn in network.dependencies
    (request,) = result.of_type("tls:index/certRequest:CertRequest")
    assert {FORGE_TUNNEL6, VPS6, "10.8.0.2"} <= set(request.inputs["ipAddresses"])


def test_a_peer_set_to_ipv6_dials_the_vps_ipv6_address_the_others_as_before(
    synth: tuple[str, Synthesis, dict[str, Any]],
) -> None:
    _mode, result, config = synth
    peers = [h for h in config[f"{PROJECT}:hosts"] if "vps" not in h["roles"]]
    for host in peers:
        files = _wg_files(result, host["name"])
        if host.get("tunnel_endpoint_family") == "ipv6":
            assert f"Endpoint = [{VPS6}]:51820" in files, host["name"]
        else:
            assert "Endpoint = 203.0.113.10:51820" in files, host["name"]
