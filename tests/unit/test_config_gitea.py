"""`forge: gitlab | gitea` and the `gitea` section (docs/gitea.md): the example loads, the
default stays GitLab, and every bad Gitea config is refused by key, value and expectation
before anything is registered."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, Problem, StackConfig, parse_stack
from components.forge import gitea_forge, gitlab_forge, stack_forge
from tests.stacks import gitea_stack, prod_stack
from tests.unit.config_patches import Config, apply_patch

pytestmark = pytest.mark.unit

GITEA = "forgeway:gitea"


def _load(patch: dict[str, Any]) -> tuple[StackConfig, dict[str, Any]]:
    patched = apply_patch(gitea_stack(), patch)
    return parse_stack(patched.config, patched.secret_keys)


def _refused(patch: dict[str, Any], base: tuple[Config, list[str]] | None = None) -> list[Problem]:
    patched = apply_patch(base or gitea_stack(), patch)
    with pytest.raises(ConfigError) as caught:
        parse_stack(patched.config, patched.secret_keys)
    return caught.value.problems


def _only(problems: list[Problem], key: str) -> Problem:
    assert [p.key for p in problems] == [key], problems
    return problems[0]


def test_the_example_is_a_gitea_stack_with_the_same_tunnel_and_forwarding() -> None:
    cfg, secrets = _load({})
    assert cfg.forge == "gitea" and cfg.gitlab_section is None and cfg.gitea is not None
    assert set(secrets) == {"ssh_private_key"}  # no GitLab root password, no backup password
    forge = stack_forge(cfg)
    assert forge == gitea_forge(cfg)
    assert (forge.kind, forge.host, forge.domain, forge.tls) == ("gitea", "jetson", "git.example.org", "own-ca")
    assert forge.url == "https://git.example.org"
    # Its registry is on its https port: no registry port forwarded, the endpoint is the domain.
    assert [p.service for p in forge.services] == ["http", "https", "ssh"]
    assert forge.registry_endpoints == ("git.example.org:443",)
    assert forge.certificate_names == forge.public_names == ("git.example.org",)
    with pytest.raises(ValueError, match="forge gitea and no gitlab section"):
        _ = cfg.gitlab


def test_a_gitea_stack_with_the_default_ports_forwards_no_registry_port() -> None:
    cfg, _ = _load({"delete": ["forgeway:forwarding"]})
    forge = gitea_forge(cfg)
    assert "registry" in [p.service for p in cfg.forwarding.ports]  # GitLab's default list...
    assert "registry" not in [p.service for p in forge.services]  # ...Gitea forwards none of it


def test_the_url_names_a_public_https_port_other_than_443() -> None:
    ports = [{"service": "https", "public": 8443}, {"service": "ssh", "public": 22, "home": 2222}]
    cfg, _ = _load({"set": {"forgeway:forwarding.ports": ports}})
    forge = gitea_forge(cfg)
    assert forge.url == "https://git.example.org:8443"
    assert forge.registry_endpoints == ("git.example.org:8443",)


def test_without_forge_a_stack_is_gitlab_as_before() -> None:
    cfg, _ = parse_stack(*prod_stack())
    assert cfg.forge == "gitlab" and cfg.gitea is None
    assert stack_forge(cfg) == gitlab_forge(cfg)


def test_an_unknown_forge_is_refused_by_key() -> None:
    (problem,) = [p for p in _refused({"set": {"forgeway:forge": "gogs"}}) if p.key == "forgeway:forge"]
    assert problem.value == '"gogs"' and "'gitlab' or 'gitea'" in problem.expected


def test_forge_gitea_without_its_section_is_refused() -> None:
    problem = _only(_refused({"delete": [GITEA]}), GITEA)
    assert problem.value == "nothing" and "required key is missing" in problem.expected


def test_forge_gitlab_without_its_section_names_the_gitlab_key() -> None:
    problems = {p.key: p for p in _refused({"delete": ["forgeway:forge"]})}
    assert "required key is missing" in problems["forgeway:gitlab"].expected
    assert "no gitea section with forge gitlab" in problems[GITEA].expected
    # And what GitLab needs beyond Gitea: the registry port, the backups' password.
    assert {"forgeway:forwarding.ports", "forgeway:backup_password"} <= set(problems)


def test_the_other_forges_section_is_refused_not_ignored() -> None:
    gitlab = {"domain": "gitlab.example.org", "images": {"arm64": "gitlab/gitlab-ce:18.5.1-ce.0"}}
    problem = _only(_refused({"set": {"forgeway:gitlab": gitlab}}), "forgeway:gitlab")
    assert "would be ignored" in problem.expected and "pulumi config rm forgeway:gitlab" in problem.expected


def test_a_registry_port_of_its_own_is_refused_with_gitea() -> None:
    ports = [
        {"service": "https", "public": 443},
        {"service": "ssh", "public": 22, "home": 2222},
        {"service": "registry", "public": 5050},
    ]
    problem = _only(_refused({"set": {"forgeway:forwarding.ports": ports}}), "forgeway:forwarding.ports[2].service")
    assert "on its https port" in problem.expected


def test_a_registry_domain_is_refused_with_gitea() -> None:
    problem = _only(_refused({"set": {"forgeway:registry": {"domain": "r.example.org"}}}), "forgeway:registry.domain")
    assert "gitea.domain" in problem.expected


def test_backups_default_off_with_gitea_and_on_is_refused() -> None:
    cfg, _ = _load({})
    assert cfg.backup.enabled and "enabled" not in cfg.backup.model_fields_set  # GitLab's default, unused here
    problem = _only(_refused({"set": {"forgeway:backup": {"enabled": True}}}), "forgeway:backup.enabled")
    assert "gitea dump" in problem.expected


def test_the_forge_hosts_arch_needs_an_image() -> None:
    problem = _only(
        _refused({"set": {"forgeway:gitea.images": {"amd64": "gitea/gitea:1.22.3"}}}), "forgeway:gitea.images.arm64"
    )
    assert problem.value == "nothing" and "Gitea image for arm64" in problem.expected


@pytest.mark.parametrize("image", ["gitea/gitea:latest", "gitea/gitea", "gitea/gitea:1"])
def test_a_floating_gitea_image_is_refused(image: str) -> None:
    problems = _refused({"set": {"forgeway:gitea.images.arm64": image}})
    assert "forgeway:gitea.images.arm64" in [p.key for p in problems], problems


def test_the_version_comes_from_the_tag_or_is_said() -> None:
    digest = "gitea/gitea@sha256:" + "a" * 64
    problem = _only(_refused({"set": {"forgeway:gitea.images.arm64": digest}}), "forgeway:gitea.images.arm64")
    assert "gitea.version" in problem.expected
    cfg, _ = _load({"set": {"forgeway:gitea.images.arm64": digest, "forgeway:gitea.version": "1.22.3"}})
    assert cfg.gitea_section.version == "1.22.3"
    mismatch = _refused({"set": {"forgeway:gitea.version": "1.23.0"}})
    assert {p.key for p in mismatch} == {"forgeway:gitea.images.arm64", "forgeway:gitea.images.amd64"}
    assert all("its tag says 1.22.3" in p.expected for p in mismatch)


def test_gitea_reserved_admin_names_are_refused() -> None:
    problem = _only(_refused({"set": {"forgeway:gitea.admin_username": "admin"}}), "forgeway:gitea.admin_username")
    assert "forgeway-admin" in problem.expected


def test_postgres_needs_a_host_and_a_secret_password() -> None:
    problems = _refused({"set": {"forgeway:gitea.database": {"type": "postgres"}}})
    keys = {p.key: p for p in problems}
    assert set(keys) == {"forgeway:gitea.database.host", "forgeway:gitea_db_password"}, problems
    assert "pulumi config set --secret forgeway:gitea_db_password" in keys["forgeway:gitea_db_password"].expected
    database = {"type": "postgres", "host": "db.home.arpa"}
    cfg, secrets = _load(
        {
            "set": {"forgeway:gitea.database": database, "forgeway:gitea_db_password": "correct-horse-battery"},
            "secret": ["forgeway:gitea_db_password"],
        }
    )
    assert cfg.gitea_section.database.host == "db.home.arpa" and secrets["gitea_db_password"]


def test_a_plaintext_db_password_is_refused_without_showing_it() -> None:
    database = {"type": "postgres", "host": "db.home.arpa"}
    patch = {"set": {"forgeway:gitea.database": database, "forgeway:gitea_db_password": "correct-horse-battery"}}
    problem = _only(_refused(patch), "forgeway:gitea_db_password")
    assert problem.value == "[secret]" and "correct-horse" not in problem.expected


def test_gitlab_secrets_are_refused_with_gitea() -> None:
    patch = {"set": {"forgeway:gitlab_root_password": "long-enough-pass"}, "secret": ["forgeway:gitlab_root_password"]}
    problem = _only(_refused(patch), "forgeway:gitlab_root_password")
    assert problem.expected == "only with forge gitlab"


def test_letsencrypt_needs_an_address_and_port_80() -> None:
    problems = _refused({"set": {"forgeway:gitea.tls": "letsencrypt"}})
    assert [p.key for p in problems] == ["forgeway:gitea.acme_email"], problems
    ports = [{"service": "https", "public": 443}, {"service": "ssh", "public": 22, "home": 2222}]
    values: dict[str, Any] = {"forgeway:gitea.tls": "letsencrypt", "forgeway:gitea.acme_email": "a@example.org"}
    patch = {"set": {**values, "forgeway:forwarding.ports": ports}}
    problem = _only(_refused(patch), "forgeway:forwarding.ports")
    assert "gitea.tls=letsencrypt" in problem.expected
