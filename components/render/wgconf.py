"""WireGuard interface files for tunnel-up.sh (pure: settings in, text out; no Pulumi, no I/O).

Two files per interface, both free of secrets so their text can be hashed into the
(non-secret) triggers of the command that applies them:

``<if>.conf``
    the ``wg setconf`` format **without** a ``PrivateKey`` line. The private key travels
    apart, on the script's stdin, into a 0600 file; the script pipes this text with a
    ``PrivateKey`` line added to ``wg setconf IF /dev/stdin``, one step (``wg setconf``
    clears a private key it is not given: setting it apart leaves a moment without one).
``<if>.env``
    the interface settings ``wg`` does not know about, one ``KEY=value`` per line
    (read by the script with ``sed``, never sourced): ``ADDRESS`` (address/prefix),
    ``MTU``, ``ROUTES`` (comma-separated networks routed into the interface beyond the
    address's own network; usually empty) and ``IMPLEMENTATION`` (auto, kernel or
    wireguard-go).

Who gets which AllowedIPs (the tunnel is a star around the VPS):

* the VPS lists each peer with exactly its /32 tunnel address, so a peer can only
  send from its own address;
* in a dual-stack tunnel (``tunnel.ipv6``) the same holds for IPv6: each peer's /128 on
  the VPS, ``tunnel.ipv6_subnet`` on a peer, ``::/0`` on the forge's host in
  preserve-source with ``forwarding.ipv6``; ``ADDRESS6`` in ``<if>.env``;
* a peer (home device, runner) lists the VPS with the whole tunnel subnet: the VPS
  forwards between peers. Peers sit behind NAT and dial the VPS, so that entry has an
  ``Endpoint`` (which may be a DNS name) and ``PersistentKeepalive`` to hold the NAT
  mapping open. The VPS's entries have neither: it learns where peers are from their
  packets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from components.config import Tunnel, TunnelImplementation

__all__ = [
    "DEFAULT_INTERFACE",
    "TunnelHost",
    "WgInterface",
    "WgPeer",
    "conf_filename",
    "endpoint_interface",
    "format_endpoint",
    "peer_interface",
    "render_setconf",
    "render_settings",
    "settings_filename",
    "tunnel_files",
]

DEFAULT_INTERFACE = "wg0"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# What wg-quick accepts as an interface name (IFNAMSIZ - 1 characters).
_IFNAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
# Peer names become "# name" comment lines: one line, no surprises.
_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IMPLEMENTATIONS = ("auto", "kernel", "wireguard-go")


def _check_public_key(value: str, what: str) -> None:
    try:
        ok = len(base64.b64decode(value, validate=True)) == 32 and len(value) == 44
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what}: expected a WireGuard public key, 32 bytes in base64 (`wg pubkey`), got {value!r}")


def _check_endpoint(value: str, what: str) -> None:
    """``host:port`` with host an IPv4 address, a DNS name, or an IPv6 address in brackets."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what}: expected host:port with a port 1-65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{what}: {host} is not an IPv6 address") from None
        return
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or re.fullmatch(r"[0-9.]+", host) or not all(_HOST_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{what}: {host!r} is neither an IPv4 address, a DNS name nor a bracketed IPv6 address ([2001:db8::1])"
        )


def format_endpoint(host: str, port: int) -> str:
    """``host:port`` as WireGuard wants it: IPv6 addresses in brackets."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass  # a DNS name
    return f"{host}:{port}"


@dataclass(frozen=True)
class WgPeer:
    """One ``[Peer]`` section."""

    name: str
    """Host name, written as a comment above the section (letters, digits, ``._-``)."""
    public_key: str
    """The peer's public key, base64 (``wg pubkey``)."""
    allowed_ips: tuple[IPNetwork, ...]
    """Networks the peer may send from and that are routed to it; at least one."""
    endpoint: str | None = None
    """``host:port`` to dial (host may be a DNS name, resolved by ``wg``); None: learn it from packets."""
    persistent_keepalive: int | None = None
    """Seconds between keepalives (1-65535); set it when this side is behind NAT and dials out."""

    def __post_init__(self) -> None:
        what = f"peer {self.name!r}"
        if not _PEER_NAME.fullmatch(self.name):
            raise ValueError(f"{what}: a peer name is letters, digits, '.', '_' or '-' (at most 63)")
        _check_public_key(self.public_key, f"{what} public_key")
        if not self.allowed_ips:
            raise ValueError(f"{what}: allowed_ips is empty; the peer could send and receive nothing")
        if self.endpoint is not None:
            _check_endpoint(self.endpoint, f"{what} endpoint")
        if self.persistent_keepalive is not None and not 1 <= self.persistent_keepalive <= 65535:
            raise ValueError(f"{what}: persistent_keepalive must be 1-65535 seconds (or None for off)")


@dataclass(frozen=True)
class WgInterface:
    """One WireGuard interface: what ``tunnel-up.sh`` needs besides the private key."""

    name: str
    """Interface name, e.g. ``wg0`` (at most 15 of ``a-zA-Z0-9_=+.-``)."""
    address: IPInterface
    """The interface's tunnel address with the tunnel's prefix, e.g. ``10.8.0.1/24``."""
    listen_port: int | None
    """UDP port to listen on (the VPS); None: a random port (peers that dial out)."""
    mtu: int
    """Interface MTU (``Tunnel.effective_mtu``)."""
    peers: tuple[WgPeer, ...]
    """The peers, in a stable order (the rendered text is hashed into triggers)."""
    implementation: TunnelImplementation = "auto"
    """auto: the kernel module if ``ip link add type wireguard`` works, else wireguard-go."""
    address6: ipaddress.IPv6Interface | None = None
    """The tunnel IPv6 address with the tunnel's prefix (tunnel.ipv6), e.g. ``fd77:6179:7761::1/64``."""

    def __post_init__(self) -> None:
        if self.address6 is not None and not isinstance(self.address6, ipaddress.IPv6Interface):
            raise ValueError(f"{self.name}: address6 {self.address6} is not an IPv6 address with its prefix")
        if not _IFNAME.fullmatch(self.name):
            raise ValueError(f"interface name {self.name!r}: 1-15 characters of a-z A-Z 0-9 _ = + . -")
        if self.listen_port is not None and not 1 <= self.listen_port <= 65535:
            raise ValueError(f"{self.name}: listen_port must be 1-65535 (or None for a random port)")
        if not 1280 <= self.mtu <= 65535:
            raise ValueError(f"{self.name}: mtu {self.mtu} is outside 1280-65535")
        if self.implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"{self.name}: implementation must be one of {', '.join(_IMPLEMENTATIONS)}")
        for attr in ("name", "public_key"):
            values = [getattr(p, attr) for p in self.peers]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"{self.name}: two peers share the {attr.replace('_', ' ')} {dupes[0]}")
        # wg gives an allowed IP to the last peer that lists it, silently: refuse overlaps.
        owned = [(net, p.name) for p in self.peers for net in p.allowed_ips]
        for i, (net, owner) in enumerate(owned):
            for other, other_owner in owned[i + 1 :]:
                if other_owner != owner and net.version == other.version and net.overlaps(other):
                    raise ValueError(
                        f"{self.name}: allowed IPs {net} ({owner}) and {other} ({other_owner}) overlap; "
                        "each address may be routed to one peer only"
                    )


class TunnelHost(NamedTuple):
    """A host as the other end of the tunnel sees it."""

    name: str
    public_key: str
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None = None  # with tunnel.ipv6


def conf_filename(interface: str) -> str:
    return f"{interface}.conf"


def settings_filename(interface: str) -> str:
    return f"{interface}.env"


def render_setconf(cfg: WgInterface) -> str:
    """The ``wg setconf`` file, without ``PrivateKey``: no secret in it."""
    lines = [
        f"# forgeway WireGuard config of {cfg.name} for `wg setconf`.",
        "# No PrivateKey here on purpose: tunnel-up.sh adds it from a 0600 file through a pipe.",
        "[Interface]",
    ]
    if cfg.listen_port is not None:
        lines.append(f"ListenPort = {cfg.listen_port}")
    for peer in cfg.peers:
        lines += ["", "[Peer]", f"# {peer.name}", f"PublicKey = {peer.public_key}"]
        lines.append("AllowedIPs = " + ", ".join(str(net) for net in peer.allowed_ips))
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive is not None:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def _routes(cfg: WgInterface) -> list[IPNetwork]:
    """Allowed IPs that the address's own (connected) route does not already cover.

    A /0 is never routed: it only lets a peer's packets from any source in (the home
    device in preserve-source mode); a default route into the tunnel would carry the
    tunnel's own packets. Replies find the tunnel by policy routing instead.
    """
    own: list[IPNetwork] = [cfg.address.network]
    if cfg.address6 is not None:
        own.append(cfg.address6.network)
    extra: list[IPNetwork] = [
        net
        for peer in cfg.peers
        for net in peer.allowed_ips
        if net.prefixlen > 0 and not any(net.version == o.version and net.subnet_of(o) for o in own)  # type: ignore[arg-type]
    ]
    v4 = ipaddress.collapse_addresses(n for n in extra if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in extra if isinstance(n, ipaddress.IPv6Network))
    return [*v4, *v6]


def render_settings(cfg: WgInterface) -> str:
    """The interface settings tunnel-up.sh applies with ``ip`` (``KEY=value`` lines, not shell)."""
    lines = [
        f"# forgeway interface settings of {cfg.name}, read by tunnel-up.sh (KEY=value, never sourced)",
        f"ADDRESS={cfg.address.with_prefixlen}",
        # Written only for a dual-stack tunnel, so an IPv4-only stack's file (and hash) is unchanged.
        *([f"ADDRESS6={cfg.address6.with_prefixlen}"] if cfg.address6 is not None else []),
        f"MTU={cfg.mtu}",
        "ROUTES=" + ",".join(str(net) for net in _routes(cfg)),
        f"IMPLEMENTATION={cfg.implementation}",
    ]
    return "\n".join(lines) + "\n"


def tunnel_files(cfg: WgInterface) -> dict[str, str]:
    """File name -> text of what tunnel-up.sh reads from its directory argument.

    The caller adds ``tunnel-up.sh`` itself to that directory (``scripts.script``) so the
    script can install a copy for its boot unit.
    """
    return {conf_filename(cfg.name): render_setconf(cfg), settings_filename(cfg.name): render_settings(cfg)}


# --- from the stack config ---------------------------------------------------------


def _address(tunnel: Tunnel, address: ipaddress.IPv4Address) -> IPInterface:
    if address not in tunnel.subnet:
        raise ValueError(f"tunnel address {address} is outside tunnel.subnet {tunnel.subnet}")
    return ipaddress.ip_interface(f"{address}/{tunnel.subnet.prefixlen}")


def _address6(tunnel: Tunnel, address: ipaddress.IPv6Address | None) -> ipaddress.IPv6Interface | None:
    if not tunnel.ipv6:
        return None
    if address is None or address not in tunnel.ipv6_subnet:
        raise ValueError(f"tunnel IPv6 address {address} is outside tunnel.ipv6_subnet {tunnel.ipv6_subnet}")
    return ipaddress.IPv6Interface(f"{address}/{tunnel.ipv6_subnet.prefixlen}")


def _own_networks(tunnel: Tunnel, host: TunnelHost) -> tuple[IPNetwork, ...]:
    """What the VPS routes to a peer: its /32, and its /128 in a dual-stack tunnel."""
    nets: list[IPNetwork] = [ipaddress.IPv4Network(f"{host.address}/32")]
    if tunnel.ipv6:
        if host.address6 is None:
            raise ValueError(f"peer {host.name!r} has no tunnel IPv6 address, and tunnel.ipv6 is on")
        nets.append(ipaddress.IPv6Network(f"{host.address6}/128"))
    return tuple(nets)


def endpoint_interface(
    *,
    tunnel: Tunnel,
    address: ipaddress.IPv4Address,
    peers: Iterable[TunnelHost],
    interface: str = DEFAULT_INTERFACE,
    address6: ipaddress.IPv6Address | None = None,
) -> WgInterface:
    """The VPS side: listens on ``tunnel.listen_port``; each peer may use its /32 only (and
    its /128 in a dual-stack tunnel)."""
    return WgInterface(
        name=interface,
        address=_address(tunnel, address),
        listen_port=tunnel.listen_port,
        mtu=tunnel.effective_mtu,
        peers=tuple(WgPeer(name=p.name, public_key=p.public_key, allowed_ips=_own_networks(tunnel, p)) for p in peers),
        implementation=tunnel.implementation,
        address6=_address6(tunnel, address6),
    )


def peer_interface(
    *,
    tunnel: Tunnel,
    address: ipaddress.IPv4Address,
    vps: TunnelHost,
    endpoint_host: str,
    interface: str = DEFAULT_INTERFACE,
    any_source: bool = False,
    any_source6: bool = False,
    address6: ipaddress.IPv6Address | None = None,
) -> WgInterface:
    """A peer (home device, runner): dials ``endpoint_host:listen_port``, keeps the NAT mapping alive.

    ``endpoint_host`` is ``tunnel.endpoint`` or else the VPS's public address; a DNS name
    is fine (tunnel-up.sh re-resolves it when it did not resolve at boot).
    ``any_source6``: the same for IPv6 (preserve-source with forwarding.ipv6).
    """
    allowed: list[IPNetwork] = [ipaddress.IPv4Network("0.0.0.0/0") if any_source else tunnel.subnet]
    if tunnel.ipv6:
        allowed.append(ipaddress.IPv6Network("::/0") if any_source6 else tunnel.ipv6_subnet)
    vps_peer = WgPeer(
        name=vps.name,
        public_key=vps.public_key,
        # The VPS forwards to the other peers; with any_source (the forge's host in
        # preserve-source mode) it also hands over connections from any client address.
        allowed_ips=tuple(allowed),
        endpoint=format_endpoint(endpoint_host, tunnel.listen_port),
        persistent_keepalive=tunnel.keepalive,
    )
    return WgInterface(
        name=interface,
        address=_address(tunnel, address),
        listen_port=None,
        mtu=tunnel.effective_mtu,
        peers=(vps_peer,),
        implementation=tunnel.implementation,
        address6=_address6(tunnel, address6),
    )
