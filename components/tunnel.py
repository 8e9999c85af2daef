"""The WireGuard tunnel: one ``Tunnel`` component owns the hosts' key pairs
(WireGuardKey), their tunnel addresses, the VPS side (TunnelEndpoint) and every host
that dials it (TunnelPeer), and decides which peer accepts packets from any source.

Children keep the names they had when they sat at the stack's root (``<host>-wg``,
``tunnel``, ``<host>-tunnel``) and carry an alias to that root parent, so a stack made
before the Tunnel component existed is not replaced (``_MOVED``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_random as random
from pulumi_command import remote

from components.config import ForwardingMode, StackConfig
from components.config import Host as HostConfig
from components.config import Tunnel as TunnelSettings
from components.forge import Forge
from components.hosts import Host
from components.render.wgconf import (
    DEFAULT_INTERFACE,
    TunnelHost,
    endpoint_interface,
    peer_interface,
    tunnel_files,
)
from components.render.wireguard import assign_tunnel_addresses, assign_tunnel_addresses6, wg_public_key
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = [
    "Tunnel",
    "TunnelArgs",
    "TunnelEndpoint",
    "TunnelEndpointArgs",
    "TunnelPeer",
    "TunnelPeerArgs",
    "TunnelPeerInfo",
    "WireGuardKey",
    "WireGuardKeyArgs",
    "tunnel_addresses",
    "tunnel_addresses6",
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


def _addresses(settings: TunnelSettings, hosts: Iterable[HostConfig]) -> dict[str, ipaddress.IPv4Address]:
    subnet = settings.subnet
    assert isinstance(subnet, ipaddress.IPv4Network)  # config refuses IPv6 tunnel subnets
    return assign_tunnel_addresses(subnet, [(h.name, "vps" in h.roles, h.tunnel_address) for h in hosts])


def tunnel_addresses(cfg: StackConfig) -> dict[str, ipaddress.IPv4Address]:
    """Every host's tunnel address (the VPS first in the subnet), as the Tunnel assigns them."""
    return _addresses(cfg.tunnel, cfg.hosts)


def _addresses6(settings: TunnelSettings, hosts: Iterable[HostConfig]) -> dict[str, ipaddress.IPv6Address]:
    if not settings.ipv6:
        return {}
    hosts = list(hosts)
    subnet = settings.subnet
    assert isinstance(subnet, ipaddress.IPv4Network)
    pinned = {h.name: h.tunnel_address6 for h in hosts}
    return assign_tunnel_addresses6(subnet, settings.ipv6_subnet, _addresses(settings, hosts), pinned)


def tunnel_addresses6(cfg: StackConfig) -> dict[str, ipaddress.IPv6Address]:
    """Every host's tunnel IPv6 address with tunnel.ipv6 (the IPv4 host part mirrored), else empty."""
    return _addresses6(cfg.tunnel, cfg.hosts)


# --- the tunnel on hosts ------------------------------------------------------------

INTERFACE = DEFAULT_INTERFACE


@dataclass(frozen=True)
class TunnelPeerInfo:
    """Another end of the tunnel, as this host's config needs it."""

    name: str
    address: ipaddress.IPv4Address
    public_key: pulumi.Output[str]
    address6: ipaddress.IPv6Address | None = None  # with tunnel.ipv6


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
    settings: TunnelSettings
    address: ipaddress.IPv4Address
    key: WireGuardKey
    peers: Sequence[TunnelPeerInfo]
    address6: ipaddress.IPv6Address | None = None  # with tunnel.ipv6


class TunnelEndpoint(pulumi.ComponentResource):
    """WireGuard on the VPS: listens on tunnel.listen_port; each peer gets its /32."""

    public_key: pulumi.Output[str]
    command: remote.Command
    host_name: str

    def __init__(self, name: str, args: TunnelEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:tunnel:TunnelEndpoint", name, None, opts)
        names = [p.name for p in args.peers]
        addresses = [(p.address, p.address6) for p in args.peers]
        files = pulumi.Output.all(*[p.public_key for p in args.peers]).apply(
            lambda keys: tunnel_files(
                endpoint_interface(
                    tunnel=args.settings,
                    address=args.address,
                    peers=[TunnelHost(n, k, a, a6) for n, k, (a, a6) in zip(names, keys, addresses, strict=True)],
                    address6=args.address6,
                )
            )
        )
        self.command = _tunnel_command(f"{name}-wg0", args.host, files, args.key, self)
        self.public_key = args.key.public_key
        self.host_name = args.host.settings.name
        self.register_outputs({"public_key": self.public_key, "address": str(args.address)})


@dataclass(frozen=True)
class TunnelPeerArgs:
    host: Host  # the home device or a runner host
    settings: TunnelSettings
    address: ipaddress.IPv4Address
    key: WireGuardKey
    vps: TunnelPeerInfo
    endpoint_host: str  # what this peer dials: tunnel.endpoint or the VPS's public address
    any_source: bool = False  # accept packets from any source (the forge's host, preserve-source)
    any_source6: bool = False  # the same for IPv6 (preserve-source with forwarding.ipv6)
    address6: ipaddress.IPv6Address | None = None  # with tunnel.ipv6


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
                    vps=TunnelHost(args.vps.name, vps_key, args.vps.address, args.vps.address6),
                    endpoint_host=args.endpoint_host,
                    any_source=args.any_source,
                    any_source6=args.any_source6,
                    address6=args.address6,
                )
            )
        )
        self.command = _tunnel_command(f"{name}-wg0", args.host, files, args.key, self)
        self.public_key = args.key.public_key
        self.register_outputs({"public_key": self.public_key, "address": str(args.address)})


# --- the whole tunnel ----------------------------------------------------------------

# Where the children sat before the Tunnel component: at the stack's root, same names.
_MOVED = pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)])


@dataclass(frozen=True)
class TunnelArgs:
    """What the tunnel needs: its config section, its hosts, and whom the VPS forwards to."""

    settings: TunnelSettings  # the ``tunnel`` section
    hosts: Mapping[str, Host]  # every host of the stack, by name; Host.settings has its roles
    endpoint_host: str  # what peers dial: StackConfig.tunnel_endpoint_host
    private_keys: Mapping[str, pulumi.Output[str]]  # secret config, per host; others get generated keys
    forwarding_mode: ForwardingMode  # forwarding.mode
    forge_host: str  # Forge.host: the peer the VPS forwards the public services to
    forward_ipv6: bool = False  # forwarding.ipv6: the forge's host also takes IPv6 from any source
    endpoints: Mapping[str, str] | None = None  # per peer, what it dials (StackConfig.tunnel_endpoint_for)

    @classmethod
    def for_forge(
        cls, cfg: StackConfig, forge: Forge, hosts: Mapping[str, Host], private_keys: Mapping[str, pulumi.Output[str]]
    ) -> TunnelArgs:
        """The ``tunnel`` section, its endpoint (StackConfig.tunnel_endpoint_host) and the forwarding mode."""
        endpoints = {h.name: cfg.tunnel_endpoint_for(h) or cfg.tunnel_endpoint_host for h in cfg.hosts}
        return cls(
            cfg.tunnel,
            hosts,
            cfg.tunnel_endpoint_host,
            private_keys,
            cfg.forwarding.mode,
            forge.host,
            forward_ipv6=cfg.forwarding.ipv6,
            endpoints=endpoints,
        )


class Tunnel(pulumi.ComponentResource):
    """WireGuard between every host: the VPS listens, every other host dials it.

    In preserve-source mode forwarded packets reach the forge with the client's
    address, so the forge's host is the one peer whose wg0 accepts any source.
    """

    addresses: dict[str, ipaddress.IPv4Address]
    addresses6: dict[str, ipaddress.IPv6Address]  # empty unless tunnel.ipv6
    keys: dict[str, WireGuardKey]
    endpoint: TunnelEndpoint
    peers: dict[str, TunnelPeer]

    def __init__(self, name: str, args: TunnelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:tunnel:Tunnel", name, None, opts)
        configs = [host.settings for host in args.hosts.values()]
        self.addresses = _addresses(args.settings, configs)
        self.addresses6 = _addresses6(args.settings, configs)
        child = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self), _MOVED)
        self.keys = {
            h.name: WireGuardKey(f"{h.name}-wg", WireGuardKeyArgs(supplied=args.private_keys.get(h.name)), child)
            for h in configs
        }
        vps = next(h for h in configs if "vps" in h.roles)
        info = {
            h.name: TunnelPeerInfo(
                h.name, self.addresses[h.name], self.keys[h.name].public_key, self.addresses6.get(h.name)
            )
            for h in configs
        }
        peers = [h for h in configs if h.name != vps.name]
        self.endpoint = TunnelEndpoint(
            name,
            TunnelEndpointArgs(
                args.hosts[vps.name],
                args.settings,
                self.addresses[vps.name],
                self.keys[vps.name],
                [info[h.name] for h in peers],
                address6=self.addresses6.get(vps.name),
            ),
            child,
        )
        any_source_host = args.forge_host if args.forwarding_mode == "preserve-source" else None
        self.peers = {
            h.name: TunnelPeer(
                f"{h.name}-{name}",
                TunnelPeerArgs(
                    args.hosts[h.name],
                    args.settings,
                    self.addresses[h.name],
                    self.keys[h.name],
                    vps=info[vps.name],
                    endpoint_host=(args.endpoints or {}).get(h.name, args.endpoint_host),
                    any_source=h.name == any_source_host,
                    any_source6=h.name == any_source_host and args.forward_ipv6,
                    address6=self.addresses6.get(h.name),
                ),
                child,
            )
            for h in peers
        }
        self.register_outputs(
            {
                "endpoint": f"{args.endpoint_host}:{args.settings.listen_port}",
                "public_keys": {host: key.public_key for host, key in self.keys.items()},
            }
        )

    @property
    def commands(self) -> dict[str, remote.Command]:
        """Each host's wg0 (what anything that binds or routes through it waits for), by host name."""
        return {self.endpoint.host_name: self.endpoint.command, **{h: p.command for h, p in self.peers.items()}}
