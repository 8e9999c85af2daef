"""PortForwarding: the VPS's public ports through the tunnel to the GitLab host.

On the VPS, one nftables table of our own (render/nftables.py), loaded by
forwarding-up.sh; in preserve-source mode, the GitLab host's return path by
connection mark (home-routing-up.sh). Both converge and their deletes undo them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.config import StackConfig
from components.hosts import Host
from components.render.nftables import (
    HomeRoutingSettings,
    forwarding_settings,
    render_forwarding,
    render_home_routing,
)
from components.render.wgconf import DEFAULT_INTERFACE
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = ["PortForwarding", "PortForwardingArgs"]


@dataclass(frozen=True)
class PortForwardingArgs:
    config: StackConfig
    vps: Host
    gitlab: Host
    vps_address: ipaddress.IPv4Address  # tunnel addresses
    gitlab_address: ipaddress.IPv4Address
    vps_tunnel: pulumi.Resource  # wg0 on the VPS, which the rules name
    gitlab_tunnel: pulumi.Resource  # wg0 on the GitLab host, which its return path names


class PortForwarding(pulumi.ComponentResource):
    """DNAT on the VPS (+ the GitLab host's return path in preserve-source mode)."""

    ruleset: str
    vps_rules: remote.Command
    home_routing: remote.Command | None

    def __init__(self, name: str, args: PortForwardingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:forwarding:PortForwarding", name, None, opts)
        settings = forwarding_settings(args.config, args.gitlab_address, DEFAULT_INTERFACE)
        self.ruleset = render_forwarding(settings)
        # Run from a staged file: the script then saves a copy its boot unit re-runs
        # (which re-applies the accept rules other firewalls need, see its header).
        self.vps_rules = args.vps.command(
            f"{args.config.vps.name}-forwarding",
            parent=self,
            create=_staged("forwarding-up.sh", [str(settings.admin_ssh_port)]),
            delete=unstaged_command("forwarding-up", script_command("forwarding-down.sh")),
            stdin=self.ruleset,
            depends_on=[args.vps_tunnel],
        )
        self.home_routing = None
        if args.config.forwarding.mode == "preserve-source":
            home = render_home_routing(HomeRoutingSettings(DEFAULT_INTERFACE, args.vps_address))
            self.home_routing = args.gitlab.command(
                f"{args.config.gitlab_host.name}-return-path",
                parent=self,
                create=_staged("home-routing-up.sh", home.script_args()),
                delete=unstaged_command("home-routing-up", script_command("home-routing-down.sh")),
                stdin=home.nftables,
                depends_on=[args.gitlab_tunnel],
            )
        self.register_outputs({"ports": [p.public for p in args.config.forwarding.ports]})

    @property
    def resources(self) -> list[pulumi.Resource]:
        """What a client's packet to a public port needs: the VPS's rules and, in
        preserve-source mode, the GitLab host's return path."""
        return [self.vps_rules, *([self.home_routing] if self.home_routing is not None else [])]


def _staged(entry: str, args: Sequence[str]) -> str:
    return staged_command(entry.removesuffix(".sh"), {entry: script(entry)}, entry, args, pass_dir=False)
