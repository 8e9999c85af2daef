"""The forge seam (components/forge.py) and the program's shape around it.

A made-up second forge drives the tunnel, the segmentation and the forwarding without
any GitLab module (fake_forge_program.py); GitLab's own Forge says what the program
used to hard-wire; __main__.py stays a short composition; the Tunnel's children keep
their names and carry an alias to their old root parent, so a stack made before the
Tunnel component existed does not replace them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from components.config import PROJECT, parse_stack
from components.forge import Forge, gitlab_forge
from components.pki import ForgeTls, ForgeTlsArgs
from components.registry import registry_endpoints
from tests.program.conftest import Stack
from tests.program.test_program import _staged_files
from tests.stacks import ROOT, prod_stack
from tools.stack.synth import Registration, Synthesis, synthesize_in_subprocess, unwrap

COMMAND = "command:remote:Command"
TUNNEL_CHILDREN = ("forgeway:tunnel:WireGuardKey", "forgeway:tunnel:TunnelEndpoint", "forgeway:tunnel:TunnelPeer")


def test_main_is_a_short_composition() -> None:
    lines = (ROOT / "__main__.py").read_text().splitlines()
    assert len(lines) < 80, f"__main__.py has {len(lines)} lines: move decisions into the components"


def test_gitlab_forge_says_what_the_program_used_to_hard_wire() -> None:
    cfg, _ = parse_stack(*prod_stack())
    forge = gitlab_forge(cfg)
    assert (forge.kind, forge.host, forge.domain, forge.tls) == (
        "gitlab",
        cfg.gitlab_host.name,
        cfg.gitlab.domain,
        cfg.gitlab.tls,
    )
    assert forge.services == tuple(cfg.forwarding.ports)
    assert forge.url == cfg.gitlab_url == "https://gitlab.example.org"
    assert forge.registry_endpoints == registry_endpoints(cfg)
    assert forge.certificate_names == (cfg.gitlab.domain, cfg.registry_domain)
    assert forge.public_names == ("gitlab.example.org", "registry.example.org")
    assert forge.dialed_names[0] == forge.domain and "registry.example.org" in forge.dialed_names


@pytest.fixture(scope="module")
def fake_forge() -> tuple[Synthesis, dict[str, Any]]:
    config, secret_keys = prod_stack()
    program = Path(__file__).with_name("fake_forge_program.py")
    return synthesize_in_subprocess("prod", config, secret_keys, program=program, project=PROJECT), config


def _named(synth: Synthesis, name: str) -> Registration:
    (reg,) = [r for r in synth.resources if r.name == name and r.custom]
    return reg


def _wg_files(synth: Synthesis, host: str) -> str:
    """The text of the files ``<host>-tunnel-wg0`` stages (test_program._staged_files)."""
    return "\n".join(_staged_files(_named(synth, f"{host}-tunnel-wg0")).values())


def test_a_second_forge_drives_tunnel_and_forwarding_without_gitlab(
    fake_forge: tuple[Synthesis, dict[str, Any]],
) -> None:
    synth, config = fake_forge
    out = synth.outputs
    assert out["gitlab_modules"] == [], "the tunnel, segmentation or forwarding imported a GitLab module"
    forge_host, forge_address = out["forge_host"], out["forge_address"]
    gitlab_host = next(h["name"] for h in config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"])
    assert forge_host != gitlab_host
    # preserve-source: the forge's host (and no other peer) accepts packets from any source.
    assert config[f"{PROJECT}:forwarding"]["mode"] == "preserve-source"
    assert "0.0.0.0/0" in _wg_files(synth, forge_host)
    assert "0.0.0.0/0" not in _wg_files(synth, gitlab_host)
    # The VPS forwards the forge's services to the forge's host, on its home ports.
    ruleset = str(unwrap(_named(synth, "vps-forwarding").inputs["stdin"]))
    assert f"dnat to {forge_address}:3000" in ruleset and f"dnat to {forge_address}:2022" in ruleset, ruleset
    assert "5050" not in ruleset  # GitLab's registry port is not the fake forge's
    # Its return path runs on the forge's host.
    path = _named(synth, f"{forge_host}-return-path")
    assert unwrap(path.inputs["connection"])["host"] == next(
        h["address"] for h in config[f"{PROJECT}:hosts"] if h["name"] == forge_host
    )
    # The segmentation gives the forge's host the forge's role.
    segment = str(unwrap(_named(synth, f"{forge_host}-segment").inputs["stdin"]))
    assert f"on {forge_host} (gitlab)" in segment, segment[:300]


_ALIASES = """
import json, sys
from pulumi.runtime import mocks
from tests.stacks import prod_stack
from tools.stack.synth import stack_config_strings, synthesize

seen = []
register = mocks.MockMonitor.RegisterResource

def recording(self, request):
    seen.append({"type": request.type, "name": request.name, "parent": request.parent,
                 "aliases": [{"name": a.spec.name, "noParent": a.spec.noParent, "parentUrn": a.spec.parentUrn}
                             for a in request.aliases]})
    return register(self, request)

mocks.MockMonitor.RegisterResource = recording
config, secret_keys = prod_stack()
synthesize("prod", stack_config_strings(config), secret_keys)
json.dump(seen, sys.stdout)
"""


def test_the_tunnels_children_keep_their_names_with_an_alias_to_the_root(prod: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ALIASES], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    requests = [r for r in json.loads(done.stdout) if r["type"] in TUNNEL_CHILDREN]
    hosts = [h["name"] for h in prod.config[f"{PROJECT}:hosts"]]
    names = sorted(r["name"] for r in requests)
    assert names == sorted([*(f"{h}-wg" for h in hosts), "tunnel", *(f"{h}-tunnel" for h in hosts[1:])])
    for r in requests:
        assert r["parent"].endswith("forgeway:tunnel:Tunnel::tunnel"), r
        # Their old parent was the stack itself: an alias without a parent, same name.
        assert {"name": "", "noParent": True, "parentUrn": ""} in r["aliases"], r


def _letsencrypt_forge(**changes: Any) -> Forge:
    cfg, _ = parse_stack(*prod_stack())
    assert cfg.gitlab.tls == "letsencrypt"
    return replace(gitlab_forge(cfg), **changes)


def test_forge_tls_warns_of_names_that_do_not_reach_the_vps(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr("pulumi.log.warn", warnings.append)
    forge = _letsencrypt_forge()
    tls = ForgeTls(ForgeTlsArgs(forge, "203.0.113.7", IPv4Address("10.8.0.2"), check_dns=True, resolve=lambda _: []))
    assert (tls.ca, tls.certificate) == (None, None)  # Let's Encrypt: nothing of ours to register
    assert warnings == [
        f"gitlab.tls=letsencrypt: {name} does not resolve; point it at the VPS (203.0.113.7)"
        for name in forge.public_names
    ]


def test_forge_tls_refuses_a_certificate_that_misses_a_name_before_registering_anything() -> None:
    forge = _letsencrypt_forge(tls="own-ca", registry_endpoints=("elsewhere.example.org:5050",))
    with pytest.raises(RuntimeError, match=r"would not cover elsewhere\.example\.org \(a forgeway bug"):
        ForgeTls(ForgeTlsArgs(forge, "203.0.113.7", IPv4Address("10.8.0.2"), check_dns=False))
