"""Orderings a parallel apply needs, as the program declares them (mock monitor).

The engine (and the lab's applier, tools/applier/apply.py) runs every resource as soon as its
dependencies are done, so whatever must happen first has to be a dependency. The lab
tier applies the lab stack under several seeds (tests/lab/test_lab_apply.py); these
tests pin the dependencies for the configurations the lab does not build.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import PROJECT
from tests.program.conftest import Stack
from tests.stacks import prod_stack
from tools.stack.synth import Registration, Synthesis, synthesize_in_subprocess

CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
GITLAB = "forgeway:gitlab:GitLabServer"


def _gitlab(synth: Synthesis, type_: str) -> Registration:
    (reg,) = [r for r in synth.of_type(type_) if GITLAB in r.parent]
    return reg


def _named(synth: Synthesis, name: str) -> Registration:
    (reg,) = [r for r in synth.resources if r.name == name and r.custom]
    return reg


def _gitlab_host(config: dict[str, Any]) -> dict[str, Any]:
    host: dict[str, Any] = next(h for h in config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"])
    return host


@pytest.fixture(scope="module")
def prod_with_proxy_on_gitlab_host() -> Synthesis:
    """prod with a proxy on the GitLab host: its registry trust installs docker's proxy
    drop-in, and a changed drop-in restarts docker (docker-client-up.sh)."""
    config, secret_keys = prod_stack()
    config = copy.deepcopy(config)
    _gitlab_host(config)["proxy"] = {"http_proxy": "http://proxy.home.arpa:3128"}
    return synthesize_in_subprocess("prod", config, secret_keys)


def test_gitlab_image_and_container_wait_for_the_docker_proxy_drop_in_and_its_restart(
    prod_with_proxy_on_gitlab_host: Synthesis, lab: Stack
) -> None:
    for synth, config in ((prod_with_proxy_on_gitlab_host, None), (lab.synth, lab.config)):
        host = _gitlab_host(config or prod_stack()[0])["name"]
        trust = _named(synth, f"{host}-docker-client")  # the one resource that restarts docker there
        for type_ in (REMOTE_IMAGE, CONTAINER):
            assert trust.urn in _gitlab(synth, type_).dependencies, f"{synth.stack}: {type_} before {trust.name}"


def test_with_letsencrypt_gitlab_first_boots_after_the_forwarding_its_challenge_needs(prod: Stack) -> None:
    assert prod.config[f"{PROJECT}:gitlab"]["tls"] == "letsencrypt"
    assert prod.config[f"{PROJECT}:forwarding"]["mode"] == "preserve-source"
    container = _gitlab(prod.synth, CONTAINER)
    vps = next(h for h in prod.config[f"{PROJECT}:hosts"] if "vps" in h["roles"])["name"]
    # The VPS's DNAT of port 80 and, in preserve-source mode, the GitLab host's return path.
    for name in (f"{vps}-forwarding", f"{_gitlab_host(prod.config)['name']}-return-path"):
        assert _named(prod.synth, name).urn in container.dependencies, name


def test_with_its_own_ca_gitlab_does_not_wait_for_the_forwarding(lab: Stack) -> None:
    assert lab.config[f"{PROJECT}:gitlab"]["tls"] == "own-ca"
    forwarding = {r.urn for r in lab.synth.resources if "forgeway:forwarding:PortForwarding" in r.parent}
    assert forwarding
    assert not forwarding & set(_gitlab(lab.synth, CONTAINER).dependencies)
