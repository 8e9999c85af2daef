"""A Host: how forgeway reaches one machine, for remote commands and for docker.

Every host gets pulumi-command connection args (host key pinned, jump host as proxy,
private key as a secret) and, where docker runs (roles gitlab and runner), one
``docker.Provider`` over SSH whose ssh options pin the same host key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.config import Host as HostConfig
from components.config import StackConfig
from components.render.ssh import SshTarget, ssh_options, ssh_url
from components.scripts import script_command

__all__ = ["DOCKER_ROLES", "Host", "HostArgs", "connect_hosts"]

# Roles whose host runs containers that forgeway manages through a docker provider.
DOCKER_ROLES = frozenset({"gitlab", "runner"})


@dataclass(frozen=True)
class HostArgs:
    settings: HostConfig
    jump: HostConfig | None = None
    private_key: pulumi.Output[str] | None = None  # secret; None: the ssh agent's keys


def _target(host: HostConfig) -> SshTarget:
    return SshTarget(address=host.address, port=host.ssh_port, user=host.ssh_user, host_key=host.host_key)


def _connection_fields(host: HostConfig, private_key: pulumi.Output[str] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "host": host.address,
        "port": float(host.ssh_port),
        "user": host.ssh_user,
        "host_key": host.host_key,
        # A host that is rebooting or whose tunnel is reconnecting answers again soon.
        "dial_error_limit": 20,
        "per_dial_timeout": 15,
    }
    if private_key is not None:
        fields["private_key"] = private_key
    return fields


class Host(pulumi.ComponentResource):
    """One managed machine: its SSH connection and, if it runs docker, its provider."""

    connection: remote.ConnectionArgs
    docker: docker.Provider | None
    arch_check: remote.Command  # every change on this host depends on it

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:hosts:Host", name, None, opts)
        self.settings = args.settings
        proxy = None
        if args.jump is not None:
            proxy = remote.ProxyConnectionArgs(**_connection_fields(args.jump, args.private_key))
        self.connection = remote.ConnectionArgs(**_connection_fields(args.settings, args.private_key), proxy=proxy)
        child = pulumi.ResourceOptions(parent=self)
        self.arch_check = remote.Command(
            f"{name}-arch",
            connection=self.connection,
            create=script_command("check-arch.sh", args.settings.arch, args.settings.name),
            triggers=[args.settings.arch],
            opts=child,
        )
        self.docker = None
        if DOCKER_ROLES & set(args.settings.roles):
            jump = _target(args.jump) if args.jump is not None else None
            self.docker = docker.Provider(
                f"{name}-docker",
                # The port travels in ssh_opts (-p): docker hands options to ssh verbatim.
                host=ssh_url(_target(args.settings)),  # an IPv6 address in brackets
                ssh_opts=ssh_options(_target(args.settings), jump),
                opts=child,
            )
        self.register_outputs({"address": args.settings.address, "arch": args.settings.arch})


def connect_hosts(
    cfg: StackConfig, private_key: pulumi.Output[str] | None, opts: pulumi.ResourceOptions | None = None
) -> dict[str, Host]:
    """A Host per configured machine, keyed by host name."""
    return {
        h.name: Host(
            h.name,
            HostArgs(
                settings=h,
                jump=cfg.host(h.jump_host) if h.jump_host else None,
                private_key=private_key,
            ),
            opts,
        )
        for h in cfg.hosts
    }
