"""WireGuard identities of the tunnel: one key pair and one tunnel address per host.

The TunnelEndpoint (VPS) and TunnelPeer (home, runners) components that configure
hosts build on these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_random as random

from components.config import StackConfig
from components.render.wireguard import assign_tunnel_addresses, wg_public_key

__all__ = ["WireGuardKey", "WireGuardKeyArgs", "tunnel_addresses"]


@dataclass(frozen=True)
class WireGuardKeyArgs:
    supplied: pulumi.Output[str] | None = None  # secret config; None: generate


class WireGuardKey(pulumi.ComponentResource):
    """A host's WireGuard key pair; the private key is secret everywhere."""

    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, name: str, args: WireGuardKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:tunnel:WireGuardKey", name, None, opts)
        if args.supplied is not None:
            private: pulumi.Output[str] = pulumi.Output.secret(args.supplied)
        else:
            # 32 CSPRNG bytes in base64 are a WireGuard private key (the scalar is
            # clamped where it is used); kept encrypted in state.
            generated = random.RandomBytes(f"{name}-private", length=32, opts=pulumi.ResourceOptions(parent=self))
            private = pulumi.Output.secret(generated.base64)
        self.private_key = private
        # The public half is meant to be shared: derived here so every peer can be
        # configured in the same run, and unmarked so it can be exported.
        self.public_key = pulumi.Output.unsecret(private.apply(wg_public_key))
        self.register_outputs({"public_key": self.public_key})


def tunnel_addresses(cfg: StackConfig) -> dict[str, ipaddress.IPv4Address]:
    subnet = cfg.tunnel.subnet
    assert isinstance(subnet, ipaddress.IPv4Network)  # config refuses IPv6 tunnel subnets
    return assign_tunnel_addresses(subnet, [(h.name, "vps" in h.roles, h.tunnel_address) for h in cfg.hosts])
