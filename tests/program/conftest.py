"""Synthesize the example stacks once per session under Pulumi's mock monitor."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import pytest

from tests.stacks import gitea_stack, lab_stack, prod_stack, secret_strings
from tools.stack.synth import Synthesis, synthesize_in_subprocess


@dataclass
class Stack:
    name: str
    config: dict[str, Any]
    secret_keys: list[str]
    synth: Synthesis

    @property
    def secrets(self) -> list[str]:
        return secret_strings(self.config, self.secret_keys)


def as_root(command: str) -> str:
    """What a Command runs as root: the inner command of a ``sudo -n -- env ... sh -c CMD``
    wrapper (components/scripts become_command), or the command as it is (become none)."""
    start = command.find("sudo -n -- env ")
    if start < 0:
        return command
    words = shlex.split(command[start:])
    assert words[-3:-1] == ["sh", "-c"], command[:200]
    return words[-1]


def _synth(name: str, loaded: tuple[dict[str, Any], list[str]]) -> Stack:
    config, secret_keys = loaded
    return Stack(name, config, secret_keys, synthesize_in_subprocess(name, config, secret_keys))


@pytest.fixture(scope="session")
def prod() -> Stack:
    return _synth("prod", prod_stack())


@pytest.fixture(scope="session")
def lab() -> Stack:
    return _synth("lab", lab_stack())


@pytest.fixture(scope="session")
def gitea() -> Stack:
    """Pulumi.gitea-example.yaml (forge: gitea), synthesized."""
    return _synth("gitea-example", gitea_stack())


@pytest.fixture(scope="session")
def gitea_woodpecker() -> Stack:
    """Pulumi.gitea-example.yaml with Woodpecker CI (tests/program/test_woodpecker.py)."""
    from tests.program.test_woodpecker import with_woodpecker

    return _synth("gitea-woodpecker", with_woodpecker(gitea_stack()))


@pytest.fixture(scope="session", params=["prod", "lab"])
def stack(request: pytest.FixtureRequest) -> Stack:
    fixture: Stack = request.getfixturevalue(request.param)
    return fixture


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/program" in str(item.path):
            item.add_marker(pytest.mark.program)
