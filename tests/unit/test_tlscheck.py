"""components/tlscheck.py: the Let's Encrypt DNS check and the certificate-coverage guard."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from components.config import PROJECT, StackConfig, parse_stack
from components.forge import stack_forge
from components.tlscheck import forge_dns_problems, letsencrypt_dns_problems, uncovered_names
from tests.stacks import prod_stack

pytestmark = pytest.mark.unit


def _prod() -> StackConfig:
    config, _ = parse_stack(*prod_stack())
    return config


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(name: str) -> Sequence[str]:
        return table.get(name, [])

    return resolve


def test_names_pointing_at_the_vps_pass() -> None:
    cfg = _prod()
    assert cfg.gitlab.tls == "letsencrypt"
    vps = "198.51.100.77"
    table = {cfg.vps.public_address or "": [vps], cfg.gitlab.domain: [vps], cfg.registry.domain or "": [vps]}
    assert letsencrypt_dns_problems(cfg, _resolver(table)) == []


def test_each_missing_or_wrong_name_is_said() -> None:
    cfg = _prod()
    vps = "198.51.100.77"
    table = {cfg.vps.public_address or "": [vps], cfg.gitlab.domain: ["192.0.2.9"]}
    problems = letsencrypt_dns_problems(cfg, _resolver(table))
    assert len(problems) == 2
    assert problems[0] == (
        f"{cfg.gitlab.domain} resolves to 192.0.2.9, not to the VPS (198.51.100.77): "
        f"Let's Encrypt's HTTP-01 challenge would not reach gitlab on {cfg.gitlab_host.name}"
    )
    assert problems[1] == f"{cfg.registry.domain} does not resolve; point it at the VPS (198.51.100.77)"


def test_own_ca_stacks_are_not_looked_up() -> None:
    raw, secret_keys = prod_stack()
    raw[f"{PROJECT}:gitlab"] = {**raw[f"{PROJECT}:gitlab"], "tls": "own-ca"}
    cfg, _ = parse_stack(raw, secret_keys)

    def fail(name: str) -> Sequence[str]:
        raise AssertionError(f"looked up {name}")

    assert letsencrypt_dns_problems(cfg, fail) == []


def test_the_coverage_guard_names_what_a_certificate_misses() -> None:
    assert uncovered_names(["gitlab.example.org"], ["10.8.0.2"], ["gitlab.example.org", "10.8.0.2"]) == []
    assert uncovered_names(["*.example.org"], [], ["registry.example.org", "a.b.example.org"]) == ["a.b.example.org"]
    assert uncovered_names(["gitlab.example.org"], [], ["registry.example.org"]) == ["registry.example.org"]


def test_the_warning_names_the_forge_it_is_about() -> None:
    """Another forge (a Gitea, say) on another host is named as itself, never as GitLab."""
    cfg = _prod()
    forge = dataclasses.replace(stack_forge(cfg), kind="gitea", host="nas", public_names=("git.example.org",))
    problems = forge_dns_problems(forge, "198.51.100.77", _resolver({"git.example.org": ["192.0.2.9"]}))
    assert problems == [
        "git.example.org resolves to 192.0.2.9, not to the VPS (198.51.100.77): "
        "Let's Encrypt's HTTP-01 challenge would not reach gitea on nas"
    ]
