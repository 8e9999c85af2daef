"""The whole program under Pulumi's mock monitor (tools/stack/synth): what it registers.

No provider runs here: these tests check what the program asks the engine for
(resources, parents, providers, options, inputs, secrets, outputs).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shlex
from typing import Any

from components.config import PROJECT
from components.outputs import OUTPUTS
from components.scripts import decode_staged
from tests.program.conftest import Stack, as_root
from tests.program.leaks import plaintext_leaks
from tools.stack.synth import Registration, contains_secret, is_secret_value, unwrap

HOST = "forgeway:hosts:Host"
COMMAND = "command:remote:Command"
DOCKER_PROVIDER = "pulumi:providers:docker"


def _hosts(stack: Stack) -> list[dict[str, Any]]:
    hosts: list[dict[str, Any]] = stack.config[f"{PROJECT}:hosts"]
    return hosts


def _parent_name(reg: Registration) -> str:
    return reg.parent.rsplit("::", 1)[-1]


def _children(stack: Stack, parent: Registration, type_: str) -> list[Registration]:
    return [r for r in stack.synth.of_type(type_) if r.parent == parent.urn]


def test_one_host_component_per_configured_host(stack: Stack) -> None:
    names = sorted(r.name for r in stack.synth.of_type(HOST))
    assert names == sorted(h["name"] for h in _hosts(stack))


def test_every_resource_sits_under_a_forgeway_component(stack: Stack) -> None:
    by_urn = stack.synth.by_urn()
    for reg in stack.synth.resources:
        if reg.type.startswith("forgeway:"):
            continue
        parent = by_urn.get(reg.parent)
        assert parent is not None and parent.type.startswith("forgeway:"), f"{reg.urn} has parent {reg.parent}"


def test_one_docker_provider_per_docker_host_and_none_on_the_vps(stack: Stack) -> None:
    expected = sorted(h["name"] for h in _hosts(stack) if {"gitlab", "runner"} & set(h["roles"]))
    providers = stack.synth.of_type(DOCKER_PROVIDER)
    assert sorted(_parent_name(p) for p in providers) == expected
    for p in providers:
        assert p.name == f"{_parent_name(p)}-docker", p.urn


def test_docker_provider_reaches_its_own_host_with_the_pinned_key(stack: Stack) -> None:
    hosts = {h["name"]: h for h in _hosts(stack)}
    for p in stack.synth.of_type(DOCKER_PROVIDER):
        host = hosts[_parent_name(p)]
        address = f"[{host['address']}]" if ":" in host["address"] else host["address"]  # IPv6 in brackets
        assert p.inputs["host"] == f"ssh://{host.get('ssh_user', 'root')}@{address}", p.urn
        opts = json.loads(p.inputs["sshOpts"])
        key_type, key_b64 = host["host_key"].split()[:2]
        assert f"KnownHostsCommand=/bin/echo %H {key_type} {key_b64}" in opts, p.urn
        assert "StrictHostKeyChecking=yes" in opts, p.urn
        assert opts[opts.index("-p") + 1] == str(host.get("ssh_port", 22)), p.urn


def test_each_hosts_commands_use_that_hosts_connection(stack: Stack) -> None:
    hosts = {h["name"]: h for h in _hosts(stack)}
    for host_reg in stack.synth.of_type(HOST):
        host = hosts[host_reg.name]
        commands = _children(stack, host_reg, COMMAND)
        assert commands, f"no command under {host_reg.urn}"
        for cmd in commands:
            conn = unwrap(cmd.inputs["connection"])
            assert conn["host"] == host["address"], cmd.urn
            assert int(conn["port"]) == host.get("ssh_port", 22), cmd.urn
            assert conn["hostKey"] == " ".join(host["host_key"].split()[:2]), cmd.urn


def test_connection_with_its_private_key_is_secret(stack: Stack) -> None:
    key = stack.config[f"{PROJECT}:ssh_private_key"]
    for cmd in stack.synth.of_type(COMMAND):
        assert is_secret_value(cmd.inputs["connection"]), cmd.urn
        assert unwrap(cmd.inputs["connection"])["privateKey"] == key, cmd.urn


def test_arch_check_runs_on_every_host_with_its_configured_arch(stack: Stack) -> None:
    hosts = {h["name"]: h for h in _hosts(stack)}
    for cmd in stack.synth.of_type(COMMAND):
        if not cmd.name.endswith("-arch"):
            continue
        name = cmd.name.removesuffix("-arch")
        arch = {"aarch64": "arm64", "x86_64": "amd64"}.get(hosts[name]["arch"], hosts[name]["arch"])
        become = "none" if hosts[name].get("ssh_user", "root") == "root" else "sudo"
        docker = "docker" if {"gitlab", "runner"} & set(hosts[name]["roles"]) else "no-docker"
        # As the login user (it checks sudo and docker for that user), never through sudo.
        assert cmd.inputs["create"].startswith("sh -c "), cmd.urn
        assert cmd.inputs["create"].endswith(f"check-arch.sh {arch} {name} {become} {docker}"), cmd.urn
        assert cmd.inputs["triggers"] == [arch], cmd.urn
    assert len([c for c in stack.synth.of_type(COMMAND) if c.name.endswith("-arch")]) == len(hosts)


def test_no_secret_appears_in_plaintext_in_any_input_or_output(stack: Stack) -> None:
    assert stack.secrets, "the stack under test has no secrets: the check would prove nothing"
    assert plaintext_leaks(stack.synth, stack.secrets) == []


def test_leak_finder_flags_a_planted_plaintext_secret(prod: Stack) -> None:
    # The leak test above is only as good as its finder: plant one leak in a copy.
    planted = copy.deepcopy(prod.synth)
    token = prod.config[f"{PROJECT}:runner_tokens"]["pi5"]
    planted.outputs["oops"] = f"token={token}"
    planted.resources[0].inputs["create"] = prod.config[f"{PROJECT}:gitlab_root_password"]
    leaks = plaintext_leaks(planted, prod.secrets)
    assert "stack outputs.oops" in leaks and f"{planted.resources[0].type}::{planted.resources[0].name}.create" in leaks


def test_outputs_match_the_documented_contract(stack: Stack) -> None:
    documented = {o.name: o for o in OUTPUTS}
    exported = stack.synth.outputs
    assert set(exported) <= set(documented), f"undocumented outputs: {set(exported) - set(documented)}"
    missing = {name for name, o in documented.items() if o.when == "always"} - set(exported)
    assert not missing, f"outputs the contract promises always: {missing}"
    for name, value in exported.items():
        assert contains_secret(value) == documented[name].secret, f"output {name}: secret flag differs from contract"


def test_ca_certificate_is_exported_exactly_for_own_ca(stack: Stack) -> None:
    own_ca = stack.config[f"{PROJECT}:gitlab"].get("tls", "own-ca") == "own-ca"
    assert ("ca_certificate" in stack.synth.outputs) == own_ca
    assert bool(stack.synth.of_type("tls:index/selfSignedCert:SelfSignedCert")) == own_ca
    if own_ca:
        (cert,) = stack.synth.of_type("tls:index/selfSignedCert:SelfSignedCert")
        assert cert.inputs["isCaCertificate"] is True
        assert is_secret_value(cert.inputs["privateKeyPem"]), "the CA key must reach the cert as a secret"


def test_tunnel_peers_have_distinct_valid_public_keys_and_addresses(stack: Stack) -> None:
    peers = unwrap(stack.synth.outputs["tunnel_peers"])
    assert sorted(peers) == sorted(h["name"] for h in _hosts(stack))
    keys = [p["public_key"] for p in peers.values()]
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)
    assert len(set(keys)) == len(keys)
    addresses = [p["address"] for p in peers.values()]
    assert len(set(addresses)) == len(addresses)
    vps = next(h["name"] for h in _hosts(stack) if "vps" in h["roles"])
    assert peers[vps]["address"] == "10.8.0.1" and peers[vps]["role"] == "vps"


def test_wireguard_private_keys_are_generated_and_secret(stack: Stack) -> None:
    generated = stack.synth.of_type("random:index/randomBytes:RandomBytes")
    assert sorted(r.name for r in generated) == sorted(f"{h['name']}-wg-private" for h in _hosts(stack))
    assert all(int(r.inputs["length"]) == 32 for r in generated)


def test_runner_hosts_are_listed_per_architecture(stack: Stack) -> None:
    runners = stack.synth.outputs["runners"]
    for arch in ("arm64", "amd64"):
        expected = [h["name"] for h in _hosts(stack) if "runner" in h["roles"] and h["arch"] == arch]
        assert runners[arch] == expected


def test_prod_outputs_read_as_a_user_expects(prod: Stack) -> None:
    out = prod.synth.outputs
    assert out["gitlab_url"] == "https://gitlab.example.org"
    assert (out["ssh_clone_host"], int(out["ssh_clone_port"])) == ("gitlab.example.org", 22)
    assert out["registry"] == "registry.example.org:5050"
    assert out["tunnel_endpoint"] == "vps.example.org:51820"


def _wg_command(stack: Stack, host: str) -> Registration:
    vps = next(h["name"] for h in _hosts(stack) if "vps" in h["roles"])
    name = "tunnel-wg0" if host == vps else f"{host}-tunnel-wg0"
    (cmd,) = [c for c in stack.synth.of_type(COMMAND) if c.name == name]
    return cmd


def test_every_host_converges_wg0_on_its_own_connection_after_its_arch_check(stack: Stack) -> None:
    by_urn = stack.synth.by_urn()
    arch_checks = {
        c.name.removesuffix("-arch"): c.urn for c in stack.synth.of_type(COMMAND) if c.name.endswith("-arch")
    }
    for host in _hosts(stack):
        cmd = _wg_command(stack, host["name"])
        assert unwrap(cmd.inputs["connection"])["host"] == host["address"], cmd.urn
        assert arch_checks[host["name"]] in cmd.dependencies, f"{cmd.urn} must wait for the arch check"
        assert by_urn[cmd.parent].type in {"forgeway:tunnel:TunnelEndpoint", "forgeway:tunnel:TunnelPeer"}
        assert "tunnel-up.sh" in cmd.inputs["create"] and "tunnel-down.sh" in cmd.inputs["delete"]


def test_wireguard_private_keys_travel_only_on_stdin_as_secrets(stack: Stack) -> None:
    for host in _hosts(stack):
        cmd = _wg_command(stack, host["name"])
        assert is_secret_value(cmd.inputs["stdin"]), f"{cmd.urn}: the private key must be a secret input"
        key = unwrap(cmd.inputs["stdin"]).strip()
        assert len(base64.b64decode(key, validate=True)) == 32
        assert key not in cmd.inputs["create"], f"{cmd.urn}: private key on the command line"


def test_vps_allows_each_peer_its_address_and_peers_dial_the_endpoint(stack: Stack) -> None:
    peers = unwrap(stack.synth.outputs["tunnel_peers"])
    vps = next(h for h in _hosts(stack) if "vps" in h["roles"])
    endpoint_files = _staged_files(_wg_command(stack, vps["name"]))
    for name, peer in peers.items():
        if name == vps["name"]:
            continue
        assert f"PublicKey = {peer['public_key']}" in endpoint_files["wg0.conf"]
        assert f"AllowedIPs = {peer['address']}/32" in endpoint_files["wg0.conf"]
        peer_files = _staged_files(_wg_command(stack, name))
        endpoint = stack.synth.outputs["tunnel_endpoint"]
        assert f"Endpoint = {endpoint}" in peer_files["wg0.conf"], name
        keepalive = stack.config[f"{PROJECT}:tunnel"].get("keepalive", 25)
        assert f"PersistentKeepalive = {keepalive}" in peer_files["wg0.conf"], name
        assert not re.search(r"^PrivateKey", peer_files["wg0.conf"], re.M)


def _staged_files(cmd: Registration) -> dict[str, str]:
    """The files a staged command ships (NAME B64 pairs after the stage directory)."""
    words = shlex.split(as_root(cmd.inputs["create"]).split("&&")[1])
    pairs = words[words.index('"$d"') + 1 :] if '"$d"' in words else words[5:]
    return {pairs[i]: decode_staged(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


def test_own_ca_stacks_get_a_registry_certificate_and_trust_on_every_docker_host(stack: Stack) -> None:
    own_ca = stack.config[f"{PROJECT}:gitlab"].get("tls", "own-ca") == "own-ca"
    trust = {
        c.name.removesuffix("-docker-client"): c
        for c in stack.synth.of_type(COMMAND)
        if c.name.endswith("-docker-client")
    }
    if not own_ca:
        # Let's Encrypt certificates are trusted already: only hosts with a proxy get a
        # command, and it installs the daemon's proxy drop-in alone.
        proxied = {h["name"] for h in _hosts(stack) if h.get("proxy")}
        assert set(trust) == proxied and not stack.synth.of_type("tls:index/locallySignedCert:LocallySignedCert")
        for name, cmd in trust.items():
            manifest = _staged_files(cmd)["manifest"]
            assert manifest.split()[0] == "dropin" and "ca.crt" not in manifest, name
            dropin = _staged_files(cmd)["forgeway-proxy.conf"]
            gitlab_host = next(h for h in _hosts(stack) if "gitlab" in h["roles"])
            for must in (stack.config[f"{PROJECT}:registry"]["domain"], gitlab_host["address"], "10.8.0.0/24"):
                assert must in dropin, f"{name}: NO_PROXY lacks {must}"
        return
    docker_hosts = {h["name"] for h in _hosts(stack) if {"gitlab", "runner"} & set(h["roles"])}
    assert set(trust) == docker_hosts
    (request,) = stack.synth.of_type("tls:index/certRequest:CertRequest")
    gitlab = stack.config[f"{PROJECT}:gitlab"]["domain"]
    assert gitlab in request.inputs["dnsNames"]
    registry = stack.synth.outputs["registry"]
    for name, cmd in trust.items():
        files = _staged_files(cmd)
        assert f"etc/docker/certs.d/{registry}/ca.crt" in files["manifest"], name
        assert any(text.startswith("-----BEGIN CERTIFICATE-----") for text in files.values()), name
        assert unwrap(cmd.inputs["connection"])["host"] == next(
            h["address"] for h in _hosts(stack) if h["name"] == name
        )


def test_every_host_loads_its_own_segmentation_table_from_stdin(stack: Stack) -> None:
    """Default deny between tunnel peers: each host's `<host>-segment` command ships
    segment-up.sh, gets that host's table on stdin (no other table), and deletes with
    segment-down.sh; the VPS's drops in forward and input, a peer's at prerouting."""
    by_urn = stack.synth.by_urn()
    for host in _hosts(stack):
        (cmd,) = [c for c in stack.synth.of_type(COMMAND) if c.name == f"{host['name']}-segment"]
        assert by_urn[cmd.parent].type == "forgeway:segment:TunnelSegmentation"
        assert unwrap(cmd.inputs["connection"])["host"] == host["address"], cmd.urn
        assert "segment-up.sh" in cmd.inputs["create"] and "segment-down.sh" in cmd.inputs["delete"]
        table = unwrap(cmd.inputs["stdin"])
        assert f"on {host['name']} (" in table, f"{cmd.urn} carries another host's table"
        assert set(re.findall(r"^table (\S+ \S+)", table, re.M)) == {"inet forgeway_segment"}
        chains = re.findall(r"^\tchain (\w+) \{", table, re.M)
        assert chains == (["forward", "input"] if "vps" in host["roles"] else ["prerouting"]), chains
        assert table.count("counter drop") == len(chains) + ("vps" in host["roles"])
