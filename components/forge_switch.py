"""The forge-switch guard: changing ``forge`` on a stack whose forge holds data is refused
unless ``allow_forge_change`` is set (docs/gitea.md, Switching forges).

``<host>-forge-check`` (components/scripts/forge-switch-check.sh) is a read-only command
on the forge host, added to every host's preflight as the upgrade guard is
(components/hosts.py add_preflight): a refused switch changes no host. It looks at the
other forge's volumes, which ``protect`` and ``retain_on_delete`` keep: one that exists and
is not empty holds that forge's data, which a switch does not move.

Both ways: a Gitea stack looks at GitLab's volumes, a GitLab stack at Gitea's and
Woodpecker's. Pulumi alone would stop a Gitea-to-GitLab switch too late: on the protected
Gitea volume's delete, which the engine does last, after GitLab's container was created and
every host changed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pulumi_command import remote

from components.config import StackConfig
from components.forge import Forge
from components.gitea import DATA_VOLUME as GITEA_DATA_VOLUME
from components.gitlab import CONTAINER_NAME as GITLAB_CONTAINER
from components.gitlab import VOLUME_ROLES as GITLAB_VOLUME_ROLES
from components.hosts import Host, add_preflight
from components.scripts import script_command
from components.woodpecker import DATA_VOLUME as WOODPECKER_DATA_VOLUME

__all__ = ["OTHER_FORGE_VOLUMES", "guard_forge_switch"]

# The volumes each forge leaves behind, by the forge a stack switches to.
OTHER_FORGE_VOLUMES: dict[str, tuple[str, ...]] = {
    "gitea": tuple(f"{GITLAB_CONTAINER}-{role}" for role in GITLAB_VOLUME_ROLES),
    # Woodpecker's server data (its pipelines, secrets, the agents' registrations) only comes
    # with Gitea; its volume alone is data a switch to GitLab leaves behind too.
    "gitlab": (GITEA_DATA_VOLUME, WOODPECKER_DATA_VOLUME),
}


def guard_forge_switch(cfg: StackConfig, forge: Forge, hosts: Mapping[str, Host]) -> remote.Command | None:
    """``<forge host>-forge-check`` in every host's preflight (None for a forge with no guard)."""
    volumes = OTHER_FORGE_VOLUMES.get(forge.kind)
    if not volumes:
        return None
    host = hosts[forge.host]
    allow = "yes" if cfg.allow_forge_change else "no"
    check = host.command(
        f"{forge.host}-forge-check",
        parent=host,
        create=script_command("forge-switch-check.sh", forge.host, forge.kind, allow, *volumes),
    )
    add_preflight(hosts, check)
    return check
