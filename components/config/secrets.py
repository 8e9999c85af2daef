"""The secret keys of the stack config: each set with ``pulumi config set --secret``,
validated apart from the sections and never shown in a problem (``[secret]``)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter

from components.config.types import PROJECT, Name


def _pem_private_key(value: Any) -> Any:
    if isinstance(value, str) and "PRIVATE KEY-----" not in value:
        raise ValueError("expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    return value


def _runner_token(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("glrt-"):
        raise ValueError(
            "expected a runner authentication token (glrt-...): create the runner in GitLab "
            "(Admin > CI/CD > Runners > New instance runner) and use its token; registration "
            "tokens are deprecated and refused"
        )
    return value


def _wg_key(value: Any) -> Any:
    try:
        ok = isinstance(value, str) and len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError("expected a WireGuard private key: 32 bytes in base64 (`wg genkey`)")
    return value


def _one_line(value: Any) -> Any:
    if isinstance(value, str) and any(c in value for c in "\n\r\x00"):
        raise ValueError("one line of text: no newline or NUL (it is written to a file of one line per value)")
    return value


# forgeway sets these itself (forgeway-restic): the repository and its password file.
_OURS = re.compile(r"RESTIC_(REPOSITORY|REPOSITORY_FILE|PASSWORD|PASSWORD_FILE|PASSWORD_COMMAND)")


def _env_name(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", value):
        raise ValueError(
            "an environment variable name of A-Z, 0-9 and _ (not starting with a digit), e.g. AWS_ACCESS_KEY_ID"
        )
    if isinstance(value, str) and _OURS.fullmatch(value):
        raise ValueError(
            "a backend variable: forgeway sets RESTIC_REPOSITORY* from backup.repository and RESTIC_PASSWORD* "
            "from backup_password"
        )
    return value


@dataclass(frozen=True)
class SecretKey:
    """A config key that must be set with `pulumi config set --secret`."""

    key: str
    adapter: TypeAdapter[Any]
    description: str
    example: str  # the value placeholder in the fix command
    path_hint: str = ""  # for maps: the path form of the fix command


PemPrivateKey = Annotated[str, AfterValidator(_pem_private_key)]


def _per_host(key: str, validator: Callable[[Any], Any], description: str, example: str) -> SecretKey:
    """A secret that maps host names to values, set one host at a time with ``--path``."""
    return SecretKey(
        key, TypeAdapter(dict[Name, Annotated[str, AfterValidator(validator)]]), description, example, "<host>"
    )


SECRET_KEYS: dict[str, SecretKey] = {
    s.key: s
    for s in [
        SecretKey(
            "ssh_private_key",
            TypeAdapter(PemPrivateKey),
            "SSH private key for every host (omit to use ssh-agent)",
            '"$(cat ~/.ssh/id_ed25519)"',
        ),
        SecretKey(
            "gitlab_root_password",
            TypeAdapter(Annotated[str, Field(min_length=12)]),
            "GitLab root password (default: generated)",
            "<password>",
        ),
        SecretKey(
            "gitea_db_password",
            TypeAdapter(Annotated[str, Field(min_length=8), AfterValidator(_one_line)]),
            "Gitea's PostgreSQL password (forge gitea with gitea.database.type postgres)",
            "<password>",
        ),
        SecretKey(
            "ca_private_key",
            TypeAdapter(PemPrivateKey),
            "Private key of our own CA (tls own-ca; default: generated)",
            '"$(cat ca.key)"',
        ),
        _per_host(
            "wireguard_private_keys",
            _wg_key,
            "WireGuard private key per host name (default: generated)",
            '"$(wg genkey)"',
        ),
        SecretKey(
            "backup_password",
            TypeAdapter(Annotated[str, Field(min_length=12), AfterValidator(_one_line)]),
            "restic repository password of the backups (required while backup.enabled); keep a copy off the device",
            '"$(openssl rand -base64 32)"',
        ),
        SecretKey(
            "backup_environment",
            TypeAdapter(dict[Annotated[str, AfterValidator(_env_name)], Annotated[str, AfterValidator(_one_line)]]),
            "Environment of restic for the backup repository's backend, by variable name (e.g. "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3:)",
            "<value>",
            "<NAME>",
        ),
        _per_host(
            "runner_tokens",
            _runner_token,
            "Optional override per runner host name: the authentication token (glrt-...) of a runner created "
            "elsewhere; its protection is checked against GitLab's API (default: created through the API)",
            "<glrt-token>",
        ),
    ]
}


def fix_command(key: str, path: str = "") -> str:
    """The exact CLI command that stores a secret key encrypted."""
    spec = SECRET_KEYS[key]
    if spec.path_hint:
        sub = path or spec.path_hint
        return f"pulumi config set --secret --path '{PROJECT}:{key}.{sub}' {spec.example}"
    return f"pulumi config set --secret {PROJECT}:{key} {spec.example}"
