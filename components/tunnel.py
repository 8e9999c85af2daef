"""The WireGuard tunnel: one key pair and tunnel address per host (WireGuardKey),
the VPS side (TunnelEndpoint) and every host that dials it (TunnelPeer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_random as random
from pulumi_command import remote

from components.config import StackConfig, Tunnel
from components.hosts import Host
from components.render.wgconf import (
    DEFAULT_INTERFACE,
    TunnelHost,
    endpoint_interface,
    peer_interface,
    tunnel_files,
)
from components.render.wireguard import assign_tunnel_addresses, wg_public_key
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = [
    "TunnelEndpoint",
    "TunnelEndpointArgs",
    "TunnelPeer",
    "TunnelPeerArgs",
    "TunnelPeerInfo",
    "WireGuardKey",
    "WireGuardKeyArgs",
    "tunnel_addresses",
]


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


# --- the tunnel on hosts ------------------------------------------------------------

INTERFACE = DEFAULT_INTERFACE


@dataclass(frozen=True)
class TunnelPeerInfo:
    """Another end of the tunnel, as this host's config needs it."""

    name: str
    address: ipaddress.IPv4Address
    public_key: pulumi.Output[str]


def _tunnel_command(
    name: str, host: Host, files: pulumi.Output[dict[str, str]], key: WireGuardKey, parent: pulumi.Resource
) -> remote.Command:
    """Converge wg0 on a host: rendered files staged, the private key on stdin.

    A changed config is an update that re-runs the converging script (no triggers, so
    no replace: a replace would create the new interface, then delete "the old" one,
    which is the same wg0).
    """
    create = files.apply(
        lambda rendered: staged_command(
            INTERFACE, {**rendered, "tunnel-up.sh": script("tunnel-up.sh")}, "tunnel-up.sh", [INTERFACE]
        )
    )
    return host.command(
        name,
        parent=parent,
        create=create,
        delete=unstaged_command(INTERFACE, script_command("tunnel-down.sh", INTERFACE)),
        stdin=key.private_key.apply(lambda k: k + "\n"),
        logging=remote.Logging.STDOUT_AND_STDERR,  # the scripts never print the key
        additional_secret_outputs=["stdin"],
    )


@dataclass(frozen=True)
class TunnelEndpointArgs:
    host: Host  # the VPS
    settings: Tunnel
    address: ipaddress.IPv4Address
    key: WireGuardKey
    peers: Sequence[TunnelPeerInfo]


class TunnelEndpoint(pulumi.ComponentResource):
    """WireGuard on the VPS: listens on tunnel.listen_port; each peer gets its /32."""

    public_key: pulumi.Output[str]
    command: remote.Command

    def __init__(self, name: str, args: TunnelEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:tunnel:TunnelEndpoint", name, None, opts)
        names = [p.name for p in args.peers]
        addresses = [p.address for p in args.peers]
        files = pulumi.Output.all(*[p.public_key for p in args.peers]).apply(
            lambda keys: tunnel_files(
                endpoint_interface(
                    tunnel=args.settings,
                    address=args.address,
                    peers=[TunnelHost(n, k, a) for n, k, a in zip(names, keys, addresses, strict=True)],
                )
            )
        )
        self.command = _tunnel_command(f"{name}-wg0", args.host, files, args.key, self)
        self.public_key = args.key.public_key
        self.register_outputs({"public_key": self.public_key, "address": str(args.address)})


@dataclass(frozen=True)
class TunnelPeerArgs:
    host: Host  # the home device or a runner host
    settings: Tunnel
    address: ipaddress.IPv4Address
    key: WireGuardKey
    vps: TunnelPeerInfo
    endpoint_host: str  # what this peer dials: tunnel.endpoint or the VPS's public address
    any_source: bool = False  # accept packets from any source (GitLab host, preserve-source)


class TunnelPeer(pulumi.ComponentResource):
    """WireGuard on a host behind NAT: dials the VPS and keeps the mapping alive."""

    public_key: pulumi.Output[str]
    command: remote.Command

    def __init__(self, name: str, args: TunnelPeerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:tunnel:TunnelPeer", name, None, opts)
        files = args.vps.public_key.apply(
            lambda vps_key: tunnel_files(
                peer_interface(
                    tunnel=args.settings,
                    address=args.address,
                    vps=TunnelHost(args.vps.name, vps_key, args.vps.address),
                    endpoint_host=args.endpoint_host,
                    any_source=args.any_source,
                )
            )
        )
        self.command = _tunnel_command(f"{name}-wg0", args.host, files, args.key, self)
        self.public_key = args.key.public_key
        self.register_outputs({"public_key": self.public_key, "address": str(args.address)})
