"""GitLab's part of the program (``forge: gitlab``): the GitLab container, its runners
(created through its API), its backups and the registry's garbage collection, in the
order __main__.py registered them before the forge choice (no resource moves or renames)."""

from __future__ import annotations

from typing import Any

from components.backup import stack_backup
from components.docker_host import docker_changes
from components.gitlab import GitLabServer, GitLabServerArgs
from components.hosts import per_host
from components.outputs import stack_outputs
from components.registry_gc import stack_registry_gc
from components.runner_registration import RunnerRegistration, RunnerRegistrationArgs
from components.runners import RunnerDefaults, RunnerFleet, RunnerFleetArgs
from components.stack_base import StackBase

__all__ = ["gitlab_stack"]


def gitlab_stack(base: StackBase) -> dict[str, Any]:
    """GitLab and what hangs off it; the stack's outputs."""
    config, forge, hosts, tls, secrets = base.config, base.forge, base.hosts, base.tls, base.secrets
    runner_hosts = config.hosts_with("runner")
    gitlab_args = GitLabServerArgs.from_config(
        config,
        forge,
        hosts,
        base.addresses,
        tunnel=base.tunnel.commands,
        forwarding=base.forwarding.resources,
        certificate=tls.certificate,
        root_password=secrets.gitlab_root_password,
        docker_changes=docker_changes(base.docker_hosts),
    )
    gitlab = GitLabServer("gitlab", gitlab_args)

    # Each runner created through GitLab's API (or a runner_tokens override checked against it).
    hand_tokens = secrets.runner_tokens([h.name for h in runner_hosts])
    registration_args = RunnerRegistrationArgs.from_config(
        config, forge, hosts, gitlab.container, hand_tokens, tls.ca_pem, base.forwarding.resources
    )
    registration = RunnerRegistration("runner-registration", registration_args)
    ready = {name: [*base.tunnel_first.get(name, []), *registration.ready[name]] for name in registration.ready}
    fleet_args = RunnerFleetArgs(
        RunnerDefaults.of(config), runner_hosts, hosts, base.docker_hosts, registration.tokens, tls.ca_pem,
        forge.registry_endpoints, ready, registration=registration.names,
    )  # fmt: skip
    RunnerFleet("runners", fleet_args)

    # GitLab's backups off the device (docs/backup.md): after the tunnel and segmentation of both ends.
    ends = [config.gitlab_host.name, config.vps.name]
    after = [c for cs in per_host(ends, base.tunnel.commands, base.segmentation.commands).values() for c in cs]
    backup = stack_backup(config, forge, hosts, base.addresses, secrets, after=after)
    stack_registry_gc(config, forge, hosts, after=[gitlab.container])  # docs/gitlab.md
    return stack_outputs(config, forge, base.tunnel, tls.ca, gitlab.root_password, backup=backup)
