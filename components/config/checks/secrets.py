"""Cross-checks of the secrets against the config: a token per runner, a key per host."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from components.config.checks.backup import missing_backup_password
from components.config.checks.forge import forge_secret_problems
from components.config.problems import Problem, path_part
from components.config.secrets import fix_command
from components.config.sections import StackConfig
from components.config.types import PROJECT


def duplicate_wireguard_keys(secrets: Mapping[str, Any]) -> list[Problem]:
    """A private key is a peer's identity on the tunnel: two hosts with one key are one peer."""
    keys = secrets.get("wireguard_private_keys")
    if not isinstance(keys, dict):
        return []
    from components.render.wireguard import wg_public_key

    problems = []
    first: dict[str, str] = {}
    for name, private in keys.items():
        try:
            # By public key: X25519 clamps the private key, so keys that differ only in
            # clamped bits are one key.
            key = wg_public_key(private)
        except (TypeError, ValueError):
            continue  # not a key: reported by its own check
        if key in first:
            problems.append(
                Problem(
                    f"{PROJECT}:wireguard_private_keys{path_part(str(name))}",
                    "[secret]",
                    f"a key of its own: host '{first[key]}' has the same WireGuard private key, and WireGuard "
                    f"tells peers apart by key; {fix_command('wireguard_private_keys', str(name))}",
                )
            )
        first.setdefault(key, str(name))
    return problems


def missing_runner_tokens(runner_names: Iterable[str], secrets: Mapping[str, Any]) -> list[Problem]:
    """None since issue 17: a runner host without a runner_tokens override gets its runner
    created through GitLab's API. Kept (empty) for the loader's partial-config path."""
    del runner_names, secrets
    return []


def check_secrets(cfg: StackConfig, secrets: Mapping[str, Any]) -> list[Problem]:
    """Secrets that match the config: tokens for runner hosts and keys for hosts only, a
    CA key only for tls own-ca (a runner without a token override is created through the API)."""
    runner_names = {h.name for h in cfg.hosts_with("runner")}
    tokens = secrets.get("runner_tokens") or {}
    problems = missing_runner_tokens(runner_names, secrets)
    for name in sorted(set(tokens) - runner_names):
        problems.append(
            Problem(
                f"{PROJECT}:runner_tokens{path_part(str(name))}",
                "[secret]",
                "a token only for a host with role 'runner': no runner host has that name (hosts[].name)",
            )
        )
    for name in sorted(set(secrets.get("wireguard_private_keys") or {}) - {h.name for h in cfg.hosts}):
        problems.append(
            Problem(
                f"{PROJECT}:wireguard_private_keys{path_part(str(name))}", "[secret]", "a key only for a host in hosts"
            )
        )
    section = cfg.forge_settings
    if "ca_private_key" in secrets and section is not None and section.tls != "own-ca":
        problems.append(Problem(f"{PROJECT}:ca_private_key", "[secret]", f"only with {cfg.forge}.tls=own-ca"))
    problems += forge_secret_problems(cfg, secrets)
    return problems + missing_backup_password(cfg, secrets)
