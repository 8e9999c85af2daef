"""TunnelSegmentation: default deny between tunnel peers, on every host of the tunnel.

One nftables table of our own per host (render/segment.py), loaded by segment-up.sh
from a staged file; its delete (segment-down.sh) removes the table, the boot unit and
the saved file. Kept apart from the tunnel's own scripts and resources: the filter is
about who may talk through wg0, not about bringing it up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.config import StackConfig
from components.forge import Forge
from components.hosts import Host
from components.render.segment import SegmentSettings, render_segment, segment_settings
from components.scripts import script, script_command, staged_command, unstaged_command
from components.tunnel import tunnel_addresses6

__all__ = ["TunnelSegmentation", "TunnelSegmentationArgs"]


@dataclass(frozen=True)
class TunnelSegmentationArgs:
    """Who is on the tunnel, in which role, and which ports each may reach."""

    settings: SegmentSettings  # render/segment.segment_settings, with the forge's host and services
    hosts: Mapping[str, Host]  # every host of the tunnel, by name

    @classmethod
    def for_forge(
        cls, cfg: StackConfig, forge: Forge, hosts: Mapping[str, Host], addresses: Mapping[str, ipaddress.IPv4Address]
    ) -> TunnelSegmentationArgs:
        """Every host's role and ports with ``forge`` as what runners and the VPS may reach."""
        six = tunnel_addresses6(cfg)  # tunnel.ipv6: every rule gets its IPv6 twin
        settings = segment_settings(
            cfg, addresses, forge_host=forge.host, services=forge.services, tunnel_ports=forge.tunnel_ports,
            addresses6=six,
        )  # fmt: skip
        return cls(settings, hosts)


class TunnelSegmentation(pulumi.ComponentResource):
    """table inet forgeway_segment on the VPS and on every peer."""

    rulesets: dict[str, str]
    commands: dict[str, remote.Command]

    def __init__(self, name: str, args: TunnelSegmentationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:segment:TunnelSegmentation", name, None, opts)
        members = [m.name for m in args.settings.members]
        self.rulesets = {host: render_segment(args.settings, host) for host in members}
        stage = "segment-up"
        create = staged_command(stage, {"segment-up.sh": script("segment-up.sh")}, "segment-up.sh", [], pass_dir=False)
        # No dependency on the tunnel either way: the table names wg0 by name (iifname),
        # so it can be loaded before the interface exists, and outlives it on delete.
        self.commands = {
            host: args.hosts[host].command(
                f"{host}-segment",
                parent=self,
                create=create,
                delete=unstaged_command(stage, script_command("segment-down.sh")),
                stdin=self.rulesets[host],
            )
            for host in members
        }
        self.register_outputs({"admin_peers": list(args.settings.admins)})
