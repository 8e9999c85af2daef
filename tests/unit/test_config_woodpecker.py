"""The ``woodpecker`` section (forge gitea; docs/gitea.md): off unless written, its URL and
names, and every bad Woodpecker config refused by key, value and expectation before
anything is registered."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import StackConfig
from components.forge import gitea_forge, woodpecker_url
from components.render.segment import segment_settings
from components.tunnel import tunnel_addresses
from tests.stacks import prod_stack
from tests.unit.test_config_gitea import _load as load_gitea
from tests.unit.test_config_gitea import _only, _refused

pytestmark = pytest.mark.unit

SERVER = "woodpeckerci/woodpecker-server:v2.8.3"
AGENT = "woodpeckerci/woodpecker-agent:v2.8.3"
SECTION = {"server_images": {"arm64": SERVER, "amd64": SERVER}, "agent_images": {"arm64": AGENT, "amd64": AGENT}}
PORTS = [
    {"service": "http", "public": 80},
    {"service": "https", "public": 443},
    {"service": "ssh", "public": 22, "home": 2222},
    {"service": "ci", "public": 8443},
]


def _patch(section: dict[str, Any] | None = None, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"set": {"forgeway:woodpecker": section or SECTION, "forgeway:forwarding.ports": ports or PORTS}}


def _load(patch: dict[str, Any]) -> StackConfig:
    return load_gitea(patch)[0]


def test_without_the_section_there_is_no_woodpecker() -> None:
    cfg = _load({})
    forge = gitea_forge(cfg)
    assert cfg.woodpecker is None and woodpecker_url(cfg) is None and forge.tunnel_ports == ()


def test_its_url_is_gitea_name_on_the_ci_port_and_runners_reach_grpc() -> None:
    cfg = _load(_patch())
    forge = gitea_forge(cfg)
    assert woodpecker_url(cfg) == "https://git.example.org:8443"
    assert forge.certificate_names == ("git.example.org",) and forge.tunnel_ports == (9000,)
    settings = segment_settings(cfg, tunnel_addresses(cfg), forge_host=forge.host, services=forge.services)
    with_grpc = segment_settings(
        cfg, tunnel_addresses(cfg), forge_host=forge.host, services=forge.services, tunnel_ports=forge.tunnel_ports
    )
    assert set(with_grpc.runner_ports) - set(settings.runner_ports) == {9000}
    assert with_grpc.forwarded_ports == settings.forwarded_ports  # 9000 is never forwarded


def test_its_own_name_goes_on_the_certificate() -> None:
    cfg = _load(_patch({**SECTION, "domain": "ci.example.org"}))
    forge = gitea_forge(cfg)
    assert woodpecker_url(cfg) == "https://ci.example.org:8443"
    assert forge.certificate_names == ("git.example.org", "ci.example.org")


def test_woodpecker_without_a_ci_port_is_refused() -> None:
    ports = [p for p in PORTS if p["service"] != "ci"]
    problem = _only(_refused(_patch(ports=ports)), "forgeway:forwarding.ports")
    assert "a ci entry with woodpecker" in problem.expected


def test_a_ci_port_without_woodpecker_is_refused() -> None:
    problem = _only(_refused({"set": {"forgeway:forwarding.ports": PORTS}}), "forgeway:forwarding.ports[3].service")
    assert "only with a woodpecker section" in problem.expected


def test_woodpecker_on_a_gitlab_stack_is_refused() -> None:
    problem = _only(_refused({"set": {"forgeway:woodpecker": SECTION}}, prod_stack()), "forgeway:woodpecker")
    assert "forge gitlab" in problem.expected


def test_a_runner_arch_without_an_agent_image_is_refused() -> None:
    section = {**SECTION, "agent_images": {"arm64": AGENT}}
    problem = _only(_refused(_patch(section)), "forgeway:woodpecker.agent_images.amd64")
    assert "amd64" in problem.expected


def test_a_grpc_port_a_forwarded_service_lands_on_is_refused() -> None:
    problem = _only(_refused(_patch({**SECTION, "grpc_port": 2222})), "forgeway:woodpecker.grpc_port")
    assert problem.value == "2222" and "no forwarded service" in problem.expected


def test_letsencrypt_is_refused_with_woodpecker() -> None:
    patch = _patch()
    patch["set"]["forgeway:gitea.tls"] = "letsencrypt"
    patch["set"]["forgeway:gitea.acme_email"] = "ops@example.org"
    assert "forgeway:gitea.tls" in [p.key for p in _refused(patch)]


def test_an_unknown_key_is_refused_by_name() -> None:
    problems = _refused(_patch({**SECTION, "privileged": True}))
    assert "forgeway:woodpecker.privileged" in [p.key for p in problems], problems
