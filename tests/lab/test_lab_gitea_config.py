"""The lab stack's Gitea variant (tools/lab/config.py, `make lab FORGE=gitea`) as the program
takes it, under Pulumi's mock monitor: no namespace, no lock, seconds."""

from __future__ import annotations

from typing import Any

import pytest

from tools.lab.config import CI_PORT, GITEA_DOMAIN, _set, lab_config
from tools.lab.images import GITEA_STANDIN, WOODPECKER_AGENT_STANDIN, WOODPECKER_SERVER_STANDIN
from tools.stack.configs import lab_placeholder_stack
from tools.stack.synth import synthesize_in_subprocess


def _topology(config: dict[str, Any]) -> dict[str, Any]:
    """What lab_config reads of a topology: each host booting, with its key (the placeholders' here)."""
    return {"hosts": [{"name": h["name"], "host_key": h["host_key"], "boots": True} for h in config["forgeway:hosts"]]}


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    placeholder, _ = lab_placeholder_stack()
    lab_dir = tmp_path_factory.mktemp("lab")
    (lab_dir / "deployer").write_text(placeholder["forgeway:ssh_private_key"])
    monkeypatch_module.setattr("tools.lab.config.LAB_DIR", lab_dir)
    config, secret_keys = lab_config(_topology(placeholder), None, ["allow_forge_change=true"], "gitea")
    synth = synthesize_in_subprocess("lab-gitea", config, secret_keys)
    return {"config": config, "resources": {r.name: r for r in synth.resources if r.custom}}


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_gitea_variant_is_the_lab_with_gitea_and_woodpecker(variant: dict[str, Any]) -> None:
    config, resources = variant["config"], variant["resources"]
    assert "forgeway:gitlab" not in config and config["forgeway:forge"] == "gitea"
    assert config["forgeway:allow_forge_change"] == "true"
    assert {"service": "ci", "public": CI_PORT} in config["forgeway:forwarding"]["ports"]
    assert resources["home-gitea-image"].inputs["name"] == GITEA_STANDIN
    assert resources["home-gitea"].inputs["hostname"] == GITEA_DOMAIN
    assert resources["home-woodpecker-server-image"].inputs["name"] == WOODPECKER_SERVER_STANDIN
    for host, arch in (("runner-arm", "arm64"), ("runner-amd", "amd64")):
        image = resources[f"{host}-woodpecker-agent-image"].inputs
        assert (image["name"], image["platform"]) == (WOODPECKER_AGENT_STANDIN, f"linux/{arch}")
        assert f"{host}-woodpecker-agent" in resources
    assert not [name for name in resources if "gitlab" in name and "gitea" not in name]


def test_a_bad_forge_or_set_is_named_and_nested_sets_work_as_before() -> None:
    placeholder, _ = lab_placeholder_stack()
    with pytest.raises(ValueError, match="forge 'forgejo': expected one of gitlab, gitea"):
        lab_config(_topology(placeholder), None, None, "forgejo")
    with pytest.raises(ValueError, match=r"expected \[SECTION\.\]KEY"):
        _set({}, "=x")
    target: dict[str, Any] = {}
    _set(target, "gitlab.images.amd64=x")
    assert target == {"forgeway:gitlab": {"images": {"amd64": "x"}}}
