"""Shared test helpers: the example stacks, decrypted as the Pulumi CLI would."""

from __future__ import annotations

from typing import Any

from tools.stack.configs import (
    EXAMPLE_PASSPHRASE,
    ROOT,
    lab_placeholder_stack,
    new_host_key,
    new_ssh_private_key,
    prod_stack,
)
from tools.stack.file import load_stack_file

__all__ = [
    "EXAMPLE_PASSPHRASE",
    "ROOT",
    "gitea_stack",
    "lab_stack",
    "new_host_key",
    "new_ssh_private_key",
    "prod_stack",
    "secret_strings",
]


def gitea_stack() -> tuple[dict[str, Any], list[str]]:
    """Pulumi.gitea-example.yaml decrypted (config, secret keys): the example Gitea stack."""
    return load_stack_file(ROOT / "Pulumi.gitea-example.yaml", EXAMPLE_PASSPHRASE)


def lab_stack() -> tuple[dict[str, Any], list[str]]:
    """Pulumi.lab.yaml with what the lab makes per run filled in (keys, tokens)."""
    return lab_placeholder_stack()


def secret_strings(config: dict[str, Any], secret_keys: list[str]) -> list[str]:
    """Every secret leaf value of a config (to search outputs and inputs for leaks)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            found.append(value)

    for key in secret_keys:
        walk(config[key])
    return found
