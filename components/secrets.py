"""Secret config values, handed to resources only as secret Outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

__all__ = ["StackSecrets"]


class StackSecrets:
    """The validated secret config; every accessor returns ``Output.secret`` or None."""

    def __init__(self, plain: Mapping[str, Any]) -> None:
        self._plain = dict(plain)

    def _get(self, key: str) -> pulumi.Output[str] | None:
        value = self._plain.get(key)
        return None if value is None else pulumi.Output.secret(value)

    @property
    def ssh_private_key(self) -> pulumi.Output[str] | None:
        return self._get("ssh_private_key")

    @property
    def gitlab_root_password(self) -> pulumi.Output[str] | None:
        return self._get("gitlab_root_password")

    @property
    def gitea_db_password(self) -> pulumi.Output[str] | None:
        return self._get("gitea_db_password")

    @property
    def ca_private_key(self) -> pulumi.Output[str] | None:
        return self._get("ca_private_key")

    @property
    def backup_password(self) -> pulumi.Output[str] | None:
        return self._get("backup_password")

    def backup_environment(self) -> dict[str, pulumi.Output[str]]:
        """restic's backend environment (backup_environment), by variable name."""
        return self._all_in("backup_environment")

    def wireguard_private_keys(self) -> dict[str, pulumi.Output[str]]:
        """The supplied WireGuard private keys, by host name (hosts without one get a generated key)."""
        return self._all_in("wireguard_private_keys")

    def runner_tokens(self, hosts: Sequence[str]) -> dict[str, pulumi.Output[str]]:
        """The runner tokens of ``hosts`` that have one, by host name."""
        tokens = self._all_in("runner_tokens")
        return {host: tokens[host] for host in hosts if host in tokens}

    def _all_in(self, key: str) -> dict[str, pulumi.Output[str]]:
        return {
            name: pulumi.Output.secret(value)
            for name, value in (self._plain.get(key) or {}).items()
            if value is not None
        }

    def __repr__(self) -> str:  # never print values, even by accident
        return f"StackSecrets(keys={sorted(self._plain)})"
