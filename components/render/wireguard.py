"""WireGuard key and address arithmetic (pure: no Pulumi, no I/O)."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["assign_tunnel_addresses", "assign_tunnel_addresses6", "wg_public_key"]


def wg_public_key(private_key_b64: str) -> str:
    """The WireGuard public key (base64) of a base64 private key, as `wg pubkey` prints it.

    X25519 clamps the scalar itself, as WireGuard does, so 32 random bytes are a valid
    private key without clamping them first.
    """
    raw = base64.b64decode(private_key_b64, validate=True)
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def assign_tunnel_addresses(
    subnet: ipaddress.IPv4Network,
    hosts: Sequence[tuple[str, bool, ipaddress.IPv4Address | None]],
) -> dict[str, ipaddress.IPv4Address]:
    """Tunnel address per host: (name, is_vps, pinned address) in config order.

    Pinned addresses are kept; the VPS gets the subnet's first host address; every
    other host the next free one in config order. So appending a host never moves the
    others; inserting one in the middle does, unless addresses are pinned.
    """
    pinned = {addr for _, _, addr in hosts if addr is not None}
    free = (a for a in subnet.hosts() if a not in pinned)
    result: dict[str, ipaddress.IPv4Address] = {}
    ordered = sorted(hosts, key=lambda h: not h[1])  # the VPS first, stable otherwise
    for name, _, addr in ordered:
        result[name] = addr if addr is not None else next(free)
    return {name: result[name] for name, _, _ in hosts}


def assign_tunnel_addresses6(
    subnet: ipaddress.IPv4Network,
    subnet6: ipaddress.IPv6Network,
    addresses: dict[str, ipaddress.IPv4Address],
    pinned: dict[str, ipaddress.IPv6Address | None],
) -> dict[str, ipaddress.IPv6Address]:
    """Tunnel IPv6 address per host: pinned ones kept; every other host's mirrors its IPv4
    host part (10.8.0.2 in 10.8.0.0/24 -> <subnet6>::2), so one reads the other off.

    The config checks refuse a prefix too small for the IPv4 host parts and duplicates.
    """
    result: dict[str, ipaddress.IPv6Address] = {}
    for name, address in addresses.items():
        fixed = pinned.get(name)
        host_part = int(address) - int(subnet.network_address)
        result[name] = fixed if fixed is not None else subnet6.network_address + host_part
    return result
