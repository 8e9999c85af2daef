"""PortForwarding: the VPS's public ports through the tunnel to the forge's host.

On the VPS, one nftables table of our own (render/nftables.py), loaded by
forwarding-up.sh; in preserve-source mode, the forge host's return path by
connection mark (home-routing-up.sh). Both converge and their deletes undo them.
Nothing here knows which forge it is: the ports come from ``Forge.services``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.config import StackConfig
from components.forge import Forge
from components.hosts import Host
from components.render.nftables import (
    ForwardingSettings,
    HomeRoutingSettings,
    forwarding_settings,
    render_forwarding,
    render_home_routing,
)
from components.scripts import script, script_command, staged_command, unstaged_command
from components.tunnel import tunnel_addresses6

__all__ = ["PortForwarding", "PortForwardingArgs"]


@dataclass(frozen=True)
class PortForwardingArgs:
    """The ruleset's inputs and the two ends it joins."""

    settings: ForwardingSettings  # render/nftables.forwarding_settings, with the forge's services
    vps: Host
    forge: Host  # the host the forge runs on (Forge.host)
    vps_address: ipaddress.IPv4Address  # the VPS's tunnel address: the forge host's replies' gateway
    vps_tunnel: pulumi.Resource  # wg0 on the VPS, which the rules name
    forge_tunnel: pulumi.Resource  # wg0 on the forge's host, which its return path names
    vps_address6: ipaddress.IPv6Address | None = None  # with forwarding.ipv6: the IPv6 replies' gateway

    @classmethod
    def for_forge(
        cls,
        cfg: StackConfig,
        forge: Forge,
        hosts: Mapping[str, Host],
        addresses: Mapping[str, ipaddress.IPv4Address],
        tunnel: Mapping[str, pulumi.Resource],
    ) -> PortForwardingArgs:
        """The VPS's forwarding of ``forge.services`` to ``forge.host``; ``hosts``,
        ``addresses`` and ``tunnel`` (wg0 commands) are per host name."""
        vps = cfg.vps.name
        addresses6 = tunnel_addresses6(cfg) if cfg.forwarding.ipv6 else {}
        return cls(
            forwarding_settings(
                cfg, addresses[forge.host], services=forge.services, home_address6=addresses6.get(forge.host)
            ),
            vps=hosts[vps],
            forge=hosts[forge.host],
            vps_address=addresses[vps],
            vps_tunnel=tunnel[vps],
            forge_tunnel=tunnel[forge.host],
            vps_address6=addresses6.get(vps),
        )


class PortForwarding(pulumi.ComponentResource):
    """DNAT on the VPS (+ the forge host's return path in preserve-source mode)."""

    ruleset: str
    vps_rules: remote.Command
    home_routing: remote.Command | None

    def __init__(self, name: str, args: PortForwardingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:forwarding:PortForwarding", name, None, opts)
        settings = args.settings
        self.ruleset = render_forwarding(settings)
        # Run from a staged file: the script then saves a copy its boot unit re-runs
        # (which re-applies the accept rules other firewalls need, see its header).
        self.vps_rules = args.vps.command(
            f"{args.vps.settings.name}-forwarding",
            parent=self,
            create=_staged("forwarding-up.sh", [str(settings.admin_ssh_port)]),
            delete=unstaged_command("forwarding-up", script_command("forwarding-down.sh")),
            stdin=self.ruleset,
            depends_on=[args.vps_tunnel],
        )
        self.home_routing = None
        if settings.mode == "preserve-source":
            home = render_home_routing(
                HomeRoutingSettings(
                    settings.tunnel_interface,
                    args.vps_address,
                    vps_tunnel_address6=args.vps_address6 if settings.home_address6 is not None else None,
                    home_tunnel_address6=settings.home_address6 if args.vps_address6 is not None else None,
                )
            )
            self.home_routing = args.forge.command(
                f"{args.forge.settings.name}-return-path",
                parent=self,
                create=_staged("home-routing-up.sh", home.script_args()),
                delete=unstaged_command("home-routing-up", script_command("home-routing-down.sh")),
                stdin=home.nftables,
                depends_on=[args.forge_tunnel],
            )
        self.register_outputs({"ports": [p.public for p in settings.ports]})

    @property
    def resources(self) -> list[pulumi.Resource]:
        """What a client's packet to a public port needs: the VPS's rules and, in
        preserve-source mode, the forge host's return path."""
        return [self.vps_rules, *([self.home_routing] if self.home_routing is not None else [])]


def _staged(entry: str, args: Sequence[str]) -> str:
    return staged_command(entry.removesuffix(".sh"), {entry: script(entry)}, entry, args, pass_dir=False)
