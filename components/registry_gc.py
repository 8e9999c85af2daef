"""Registry garbage collection: a timer on the GitLab host that frees untagged images' space.

Deleting a tag in GitLab (by hand, or by a cleanup policy) frees nothing on disk: the
blobs stay until the registry's garbage collection runs, and omnibus runs it only when
asked. ``<gitlab host>-registry-gc`` (the host-service seam: registry-gc-up.sh and
registry-gc-down.sh) installs ``forgeway-registry-gc`` and its timer
(``registry.garbage_collection.schedule``): ``gitlab-ctl registry-garbage-collect -m`` in the
GitLab container, which stops the registry, removes untagged manifests and unreferenced
blobs, and starts it again; the run's log goes to the journal, the space it freed to
``/var/lib/forgeway/registry-gc/status.json`` (docs/gitlab.md). No registry, or a forge that
is not GitLab: nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.config import StackConfig
from components.config.sections import RegistryGarbageCollection
from components.forge import Forge
from components.gitlab import CONTAINER_NAME
from components.host_service import HostService, host_service
from components.hosts import Host
from components.scripts import script

__all__ = ["BACKUP_LOCK", "STATUS", "STORAGE", "RegistryGc", "RegistryGcArgs", "settings_file", "stack_registry_gc"]

# omnibus's registry storage (gitlab_rails['registry_path']), in the GitLab container.
STORAGE = "/var/opt/gitlab/gitlab-rails/shared/registry"
# forgeway-backup's lock (components/scripts/forgeway-backup.sh): no collection while a backup copies the registry.
BACKUP_LOCK = "/var/lib/forgeway/backup/lock"
STATUS = "/var/lib/forgeway/registry-gc/status.json"


def settings_file(container: str = CONTAINER_NAME, storage: str = STORAGE, backup_lock: str = BACKUP_LOCK) -> str:
    """$FORGEWAY_ETC/forgeway/registry-gc/settings as staged (registry-gc-up.sh adds STATE and DOCKER_HOST)."""
    return "\n".join([
        "# forgeway-registry-gc settings, written by registry-gc-up.sh: change the stack config instead",
        f"CONTAINER={container}",
        f"STORAGE={storage}",
        f"BACKUP_LOCK={backup_lock}",
    ]) + "\n"  # fmt: skip


@dataclass(frozen=True)
class RegistryGcArgs:
    settings: RegistryGarbageCollection  # registry.garbage_collection
    gitlab: Host  # the GitLab host
    after: Sequence[pulumi.Resource] = ()  # the GitLab container (the timer runs in it)


class RegistryGc(pulumi.ComponentResource):
    """The GitLab host's registry garbage collection timer."""

    service: remote.Command

    def __init__(self, name: str, args: RegistryGcArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:registry_gc:RegistryGc", name, None, opts)
        s, g = args.settings, args.gitlab.settings.name
        service = HostService(
            stage="registry-gc",
            up="registry-gc-up.sh",
            down="registry-gc-down.sh",
            args=[s.schedule, str(s.timeout_minutes)],
            files={"forgeway-registry-gc.sh": script("forgeway-registry-gc.sh"), "settings": settings_file()},
        )
        self.service = host_service(args.gitlab, f"{g}-registry-gc", service, parent=self, depends_on=args.after)
        self.register_outputs({"schedule": s.schedule, "status": STATUS})


def stack_registry_gc(
    cfg: StackConfig, forge: Forge, hosts: Mapping[str, Host], *, after: Sequence[pulumi.Resource] = ()
) -> RegistryGc | None:
    """The stack's RegistryGc: a GitLab forge with its registry and registry.garbage_collection.enabled."""
    gc = cfg.registry.garbage_collection
    if forge.kind != "gitlab" or not cfg.registry.enabled or not gc.enabled:
        return None
    return RegistryGc("registry-gc", RegistryGcArgs(gc, hosts[cfg.gitlab_host.name], after))
