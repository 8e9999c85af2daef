"""Shared test helpers: the example stacks, decrypted as the Pulumi CLI would."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ROOT = Path(__file__).resolve().parent.parent
# The passphrase of the example prod stack; README documents it. No other is written down.
EXAMPLE_PASSPHRASE = "forgeway-example-only"  # noqa: S105 (published on purpose)


def new_host_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def new_ssh_private_key() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()


def prod_stack() -> tuple[dict[str, Any], list[str]]:
    from tools.stackfile import load_stack_file

    return load_stack_file(ROOT / "Pulumi.prod.yaml", EXAMPLE_PASSPHRASE)


def lab_stack() -> tuple[dict[str, Any], list[str]]:
    """Pulumi.lab.yaml with what the lab makes per run filled in (keys, tokens)."""
    from tools.stackfile import load_stack_file

    config, secret_keys = load_stack_file(ROOT / "Pulumi.lab.yaml", None)
    for host in config["forgeway:hosts"]:
        host["host_key"] = new_host_key()
    config["forgeway:ssh_private_key"] = new_ssh_private_key()
    runners = [h["name"] for h in config["forgeway:hosts"] if "runner" in h["roles"]]
    config["forgeway:runner_tokens"] = {name: "glrt-" + secrets.token_urlsafe(15) for name in runners}
    return config, [*secret_keys, "forgeway:ssh_private_key", "forgeway:runner_tokens"]


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
