"""A Host: how forgeway reaches one machine, for remote commands and for docker.

Every host gets pulumi-command connection args (host key pinned, jump host as proxy,
private key as a secret) and, where docker runs (roles gitlab and runner), one
``docker.Provider`` over SSH whose ssh options pin the same host key.

Every remote command forgeway runs on a host is made by :meth:`Host.command`: its
scripts run as root through ``hosts[].become`` (``sudo -n``, with the environment the
scripts read; components/scripts become_command), after every host's read-only check
(``<host>-arch``), and without ``add_previous_output_in_env``. The check itself runs as
the login user: it is what finds out whether sudo and docker work for that user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.config import Host as HostConfig
from components.render.ssh import SshTarget, ssh_options, ssh_url
from components.scripts import become_command, script_command

__all__ = ["DOCKER_ROLES", "Host", "HostArgs", "add_preflight", "connect_hosts", "per_host"]

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


def sudoers_line(user: str) -> str:
    """The sudoers line hosts[].become sudo needs (README, "Deploy for real")."""
    return f"{user} ALL=(ALL:ALL) NOPASSWD: ALL"


def sudo_refused(host: str, user: str) -> str:
    """What a command says when sudo refuses (the arch check says the same first)."""
    return (
        f"host '{host}': user '{user}' cannot run commands as root with `sudo -n` (hosts[].become is sudo): "
        f"as root, add the line '{sudoers_line(user)}' to /etc/sudoers.d/forgeway "
        "(`visudo -f /etc/sudoers.d/forgeway`, mode 0440), or connect as root"
    )


class Host(pulumi.ComponentResource):
    """One managed machine: its SSH connection and, if it runs docker, its provider."""

    connection: remote.ConnectionArgs
    docker: docker.Provider | None
    arch_check: remote.Command  # read-only: arch, sudo and docker access; changes nothing
    # What every change on this host waits for: this host's check, and (connect_hosts)
    # every other host's, so that one host failing its check changes no host at all.
    preflight: tuple[pulumi.Resource, ...]
    settings: HostConfig  # this host's entry of the hosts section

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:hosts:Host", name, None, opts)
        self.settings = args.settings
        proxy = None
        if args.jump is not None:
            proxy = remote.ProxyConnectionArgs(**_connection_fields(args.jump, args.private_key))
        self.connection = remote.ConnectionArgs(**_connection_fields(args.settings, args.private_key), proxy=proxy)
        child = pulumi.ResourceOptions(parent=self)
        needs_docker = bool(DOCKER_ROLES & set(args.settings.roles))
        # As the login user, not through become: it checks that become and docker work.
        self.arch_check = remote.Command(
            f"{name}-arch",
            connection=self.connection,
            create=script_command(
                "check-arch.sh",
                args.settings.arch,
                args.settings.name,
                args.settings.escalation,
                "docker" if needs_docker else "no-docker",
            ),
            triggers=[args.settings.arch],
            add_previous_output_in_env=False,
            opts=child,
        )
        self.preflight = (self.arch_check,)
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

    def command(
        self,
        name: str,
        *,
        parent: pulumi.Resource,
        create: pulumi.Input[str],
        delete: str | None = None,
        stdin: pulumi.Input[str] | None = None,
        logging: remote.Logging | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
        additional_secret_outputs: Sequence[str] = (),
    ) -> remote.Command:
        """A change on this host: ``create``/``delete`` run as root (``become``), after preflight.

        ``add_previous_output_in_env`` is off: no delete reads PULUMI_COMMAND_STDOUT, and
        with it on, every update and delete of a command that printed anything sends it
        by SSH setenv, which a host without AcceptEnv refuses with a warning
        (pulumi-command provider/pkg/provider/remote/commandOutputs.go).
        """
        become = self.settings.escalation
        refused = sudo_refused(self.settings.name, self.settings.ssh_user)
        wrapped: pulumi.Input[str] = (
            become_command(create, become, refused)
            if isinstance(create, str)
            else pulumi.Output.from_input(create).apply(  # type: ignore[arg-type]  # an Input, awaitables included
                lambda text: become_command(text, become, refused)
            )
        )
        return remote.Command(
            name,
            connection=self.connection,
            create=wrapped,
            delete=become_command(delete, become, refused) if delete is not None else None,
            stdin=stdin,
            logging=logging,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=parent,
                depends_on=list(dict.fromkeys([*self.preflight, *depends_on])),
                additional_secret_outputs=list(additional_secret_outputs) or None,
            ),
        )


def connect_hosts(
    settings: Sequence[HostConfig], private_key: pulumi.Output[str] | None, opts: pulumi.ResourceOptions | None = None
) -> dict[str, Host]:
    """A Host per entry of the ``hosts`` section, keyed by host name."""
    by_name = {h.name: h for h in settings}
    hosts = {
        h.name: Host(
            h.name,
            HostArgs(
                settings=h,
                jump=by_name[h.jump_host] if h.jump_host else None,
                private_key=private_key,
            ),
            opts,
        )
        for h in settings
    }
    # Every host's checks before any host's change: a check that fails (no sudo right,
    # no docker access, wrong arch) then leaves every host as it was.
    checks = tuple(host.arch_check for host in hosts.values())
    for host in hosts.values():
        host.preflight = checks
    return hosts


def add_preflight(hosts: Mapping[str, Host], check: pulumi.Resource) -> None:
    """One more read-only check (the upgrade guard, components/upgrade.py) that every
    change on every host registered after this waits for, as for the arch checks."""
    for host in hosts.values():
        host.preflight = (*host.preflight, check)


def per_host(names: Sequence[str], *sources: Mapping[str, pulumi.Resource]) -> dict[str, list[pulumi.Resource]]:
    """For each host name, its resource of each source that has one (e.g. its wg0, its
    registry trust), in the sources' order: what a host's service waits for."""
    return {name: [source[name] for source in sources if name in source] for name in names}
