"""The example stacks, synthesized once per session under mocks, as the pack would see them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from tests.policies.harness import Spec, specs_from_synthesis
from tests.stacks import lab_stack, prod_stack
from tools.stack.synth import Synthesis, synthesize_in_subprocess


@dataclass
class SynthesizedStack:
    name: str
    config: dict[str, Any]
    synth: Synthesis

    @property
    def specs(self) -> list[Spec]:
        return specs_from_synthesis(self.synth.resources)


def synthesize(name: str, config: dict[str, Any], secret_keys: list[str]) -> SynthesizedStack:
    return SynthesizedStack(name, config, synthesize_in_subprocess(name, config, secret_keys))


@pytest.fixture(scope="session")
def prod_synth() -> SynthesizedStack:
    return synthesize("prod", *prod_stack())


@pytest.fixture(scope="session")
def lab_synth() -> SynthesizedStack:
    return synthesize("lab", *lab_stack())


@pytest.fixture(scope="session", params=["prod", "lab"])
def example_stack(request: pytest.FixtureRequest) -> SynthesizedStack:
    stack: SynthesizedStack = request.getfixturevalue(f"{request.param}_synth")
    return stack


@pytest.fixture(scope="session")
def lab_unpinned() -> SynthesizedStack:
    """A copy of the lab stack that opts out of host-key pinning: no host keys, the loud flag set."""
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config["forgeway:insecure_unpinned_host_keys"] = True
    for host in config["forgeway:hosts"]:
        host.pop("host_key", None)
    return synthesize("lab", config, secret_keys)


@pytest.fixture(scope="session")
def lab_bad_ports() -> SynthesizedStack:
    """A copy of the lab stack that forwards the registry on a docker API port and HTTPS off the allowlist."""
    config, secret_keys = lab_stack()
    config = copy.deepcopy(config)
    config["forgeway:forwarding"] = {
        **config.get("forgeway:forwarding", {}),
        "ports": [
            {"service": "http", "public": 80},
            {"service": "https", "public": 8444},
            {"service": "ssh", "public": 22, "home": 2222},
            {"service": "registry", "public": 2375, "home": 5050},
        ],
    }
    return synthesize("lab", config, secret_keys)
