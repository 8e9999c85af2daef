"""Cross-checks of the backup section: a repository off the device, and its password."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from components.config.backup import repository_host
from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT

# What names the machine a script runs on, whatever its config says.
_SELF = ("localhost", "localhost.localdomain", "ip6-localhost")


def _own_addresses(cfg: StackConfig) -> dict[str, str]:
    """The GitLab host's addresses forgeway knows (its address, its tunnel address), lowercase -> what."""
    from components.render.wireguard import assign_tunnel_addresses

    host = cfg.gitlab_host
    found = {host.address.lower().strip("[]"): "its hosts[].address"}
    subnet = cfg.tunnel.subnet
    if isinstance(subnet, ipaddress.IPv4Network):
        tunnel = assign_tunnel_addresses(subnet, [(h.name, "vps" in h.roles, h.tunnel_address) for h in cfg.hosts])
        found[str(tunnel[host.name])] = "its tunnel address"
    return found


def check_backup_repository(cfg: StackConfig) -> list[Problem]:
    """backup.repository must not be the GitLab host itself (sftp: or rest: to one of its
    addresses, or a loopback name): a backup there dies with the device."""
    backup = cfg.backup
    if not backup.enabled or cfg.forge != "gitlab" or backup.repository is None or len(cfg.hosts_with("gitlab")) != 1:
        return []
    host = repository_host(backup.repository)
    if host is None:
        return []
    name = host.lower().rstrip(".")
    why = None
    if name in _SELF:
        why = "a loopback name"
    else:
        try:
            if ipaddress.ip_address(name).is_loopback:
                why = "a loopback address"
        except ValueError:
            pass
        why = why or _own_addresses(cfg).get(name)
    if why is None:
        return []
    gitlab = cfg.gitlab_host.name
    return [
        Problem(
            f"{PROJECT}:backup.repository",
            show(backup.repository),
            f"a repository off the GitLab host: {host} is {why} of '{gitlab}', so the backup would die with "
            "the device; leave backup.repository unset (SFTP on the VPS) or name another machine",
        )
    ]


def missing_backup_password(cfg: StackConfig, secrets: Mapping[str, Any]) -> list[Problem]:
    """backup.enabled needs backup_password: restic encrypts every backup with it, and a copy
    must live off the device (in the stack), or a dead device takes the key with it."""
    if not cfg.backup.enabled or cfg.forge != "gitlab" or "backup_password" in secrets or not cfg.hosts_with("gitlab"):
        return []
    return [
        Problem(
            f"{PROJECT}:backup_password",
            "nothing",
            "the restic repository password, required while backup.enabled is true (the default): it encrypts "
            "every backup and must be kept off the device (in the stack's secret config, and a copy in your "
            "password manager), since a backup whose key died with the device cannot be restored; set it: "
            f'pulumi config set --secret {PROJECT}:backup_password "$(openssl rand -base64 32)", '
            f"or turn backups off: pulumi config set --path '{PROJECT}:backup.enabled' false",
        )
    ]
