"""The stack files' config as the Pulumi CLI would hand it to the program.

Shared by the tests and the offline plan (tools/applier/plan.py): the prod example stack
decrypted with its published passphrase, and the lab stack with the values the lab
makes per run (host keys, the deployer's key, runner tokens) filled in with
placeholders, for when no lab has been built (tools.lab.config.lab_config fills in a built
lab's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tools.stack.file import load_stack_file

__all__ = [
    "EXAMPLE_PASSPHRASE",
    "LAB_BACKUP_PASSWORD",
    "ROOT",
    "lab_placeholder_stack",
    "new_host_key",
    "new_ssh_private_key",
    "prod_stack",
]

ROOT = Path(__file__).resolve().parent.parent.parent
# The passphrase of the example prod stack; README documents it. No other is written down.
EXAMPLE_PASSPHRASE = "forgeway-example-only"  # noqa: S105 (published on purpose)
# What the lab adds to Pulumi.lab.yaml, all secret.
LAB_SECRET_KEYS = ("forgeway:ssh_private_key", "forgeway:backup_password")  # runners: through GitLab's API
# The lab's restic repository password (backup.enabled is the default): lab only, written
# down on purpose like EXAMPLE_PASSPHRASE, so a drill can open the lab's repository.
LAB_BACKUP_PASSWORD = "forgeway-lab-backup-only"  # noqa: S105 (published on purpose)


def new_host_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def new_ssh_private_key() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()


def prod_stack(passphrase: str = EXAMPLE_PASSPHRASE) -> tuple[dict[str, Any], list[str]]:
    """Pulumi.prod.yaml decrypted (config, secret keys)."""
    return load_stack_file(ROOT / "Pulumi.prod.yaml", passphrase)


def lab_placeholder_stack() -> tuple[dict[str, Any], list[str]]:
    """Pulumi.lab.yaml with what the lab makes per run made up here (keys)."""
    config, secret_keys = load_stack_file(ROOT / "Pulumi.lab.yaml", None)
    for host in config["forgeway:hosts"]:
        host["host_key"] = new_host_key()
    config["forgeway:ssh_private_key"] = new_ssh_private_key()
    config["forgeway:backup_password"] = LAB_BACKUP_PASSWORD
    return config, [*secret_keys, *LAB_SECRET_KEYS]
