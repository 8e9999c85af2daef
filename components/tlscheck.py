"""Checks of the TLS setup that need more than the config: made before anything is registered.

* ``letsencrypt_dns_problems``: Let's Encrypt's HTTP-01 challenge reaches the forge only
  if every name of it (its domain, its registry's) resolves to the VPS's public address. Looked up
  with the deployer's resolver at preview/up time; what is missing is reported as a
  warning (DNS may be about to change, and the engine cannot see it either), naming each
  name, what it resolved to and what it must resolve to. AAAA records too: Let's Encrypt
  prefers IPv6 where a name has one, so each must point at the VPS's IPv6 address, and
  with forwarding.ipv6 off any AAAA record is a warning (nothing answers there).
* ``uncovered_names``: with ``own-ca``, every name and address clients use must be in
  the server certificate (``covers``, the rule TLS clients apply). The names come from
  the same config, so this guards the code that makes them: a failure is a bug,
  reported as an error naming the missing name before any resource is registered.

Both run in components.pki.ForgeTls, before it registers anything.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from components.config import StackConfig

if TYPE_CHECKING:  # components.forge imports the registry, which imports components.pki, which imports this
    from components.forge import Forge

__all__ = [
    "Resolver",
    "covers",
    "forge_dns_problems",
    "ip_or_none",
    "letsencrypt_dns_problems",
    "system_resolver",
    "uncovered_names",
]

Resolver = Callable[[str], Sequence[str]]  # a name -> its addresses (empty: does not resolve)


def system_resolver(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def letsencrypt_dns_problems(cfg: StackConfig, resolve: Resolver = system_resolver) -> list[str]:
    """What keeps Let's Encrypt from reaching the stack's forge through the VPS, one line each."""
    from components.forge import stack_forge  # not at the top: see the TYPE_CHECKING import

    return forge_dns_problems(
        stack_forge(cfg),
        cfg.vps.internet_address,
        resolve,
        public6=cfg.vps_public_address6,
        forward_ipv6=cfg.forwarding.ipv6,
    )


def forge_dns_problems(
    forge: Forge,
    public: str,
    resolve: Resolver = system_resolver,
    *,
    public6: str | None = None,
    forward_ipv6: bool = False,
) -> list[str]:
    """What keeps Let's Encrypt from reaching ``forge`` through the VPS at ``public``, one line each.

    ``public6``: the VPS's IPv6 address where config gives one (StackConfig.vps_public_address6);
    ``forward_ipv6``: forwarding.ipv6, without which no AAAA record can be answered.
    """
    if forge.tls != "letsencrypt":
        return []
    try:
        wanted = {str(ipaddress.ip_address(public))}
    except ValueError:
        wanted = set(resolve(public))
        if not wanted:
            return [f"the VPS's public_address {public} does not resolve: Let's Encrypt cannot reach it"]
    wanted6 = {public6} if public6 is not None else {a for a in wanted if _is_ipv6(a)}
    problems = []
    for name in forge.public_names:
        found = set(resolve(name))
        if not found:
            problems.append(f"{name} does not resolve; point it at the VPS ({', '.join(sorted(wanted))})")
        elif not found & (wanted | wanted6):
            problems.append(
                f"{name} resolves to {', '.join(sorted(found))}, not to the VPS ({', '.join(sorted(wanted))}): "
                f"Let's Encrypt's HTTP-01 challenge would not reach {forge.kind} on {forge.host}"
            )
        problems += _aaaa_problems(forge, name, sorted(a for a in found if _is_ipv6(a)), wanted6, forward_ipv6)
    return problems


def _is_ipv6(address: str) -> bool:
    return ip_or_none(address) is not None and ":" in address


def _aaaa_problems(forge: Forge, name: str, aaaa: list[str], wanted6: set[str], forward_ipv6: bool) -> list[str]:
    """The AAAA records of ``name`` Let's Encrypt would use (it prefers IPv6) and fail on."""
    if not aaaa:
        return []
    if not forward_ipv6:
        return [
            f"{name} has the AAAA record {', '.join(aaaa)}, but forwarding.ipv6 is off: Let's Encrypt prefers "
            f"IPv6 and its HTTP-01 challenge would fail; remove the AAAA record or set forwarding.ipv6: true"
        ]
    if not wanted6:
        return [
            f"{name} has the AAAA record {', '.join(aaaa)}, and the VPS's IPv6 address is unknown: set "
            f"hosts[vps].public_address6 so forgeway can check that it points at the VPS"
        ]
    want = ", ".join(sorted(wanted6))
    return [
        f"{name} has the AAAA record {a}, not the VPS's IPv6 address ({want}): Let's Encrypt prefers IPv6 "
        f"and its HTTP-01 challenge would not reach {forge.kind} on {forge.host}"
        for a in aaaa
        if a not in wanted6
    ]


def uncovered_names(cert_dns: Iterable[str], cert_ips: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The names in ``wanted`` (host names or addresses clients dial) the certificate misses."""
    names = [*cert_dns, *cert_ips]
    return [host for host in wanted if not covers(names, host)]


def ip_or_none(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``value`` as a certificate's IP SAN holds it, or None when it is not an address."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A certificate's IP SAN holds no IPv6 zone (fe80::50%eth0 is fe80::50 there), and the
    # tls provider's parser (Go's net.ParseIP) refuses one.
    return ipaddress.IPv6Address(int(ip)) if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id else ip


def covers(cert_names: Iterable[str], host: str) -> bool:
    """Whether a certificate naming ``cert_names`` (its DNS and IP SANs) is valid for
    ``host``, as TLS clients check it (RFC 6125): IPs match exactly, DNS names
    case-insensitively, and ``*.`` matches exactly one leftmost label, never an IP.
    """
    wanted_ip = ip_or_none(host)
    wanted = host.lower().rstrip(".")
    for name in cert_names:
        ip = ip_or_none(name)
        if wanted_ip is not None or ip is not None:
            if ip is not None and ip == wanted_ip:
                return True
            continue
        pattern = name.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "*" not in pattern[2:]:
            first, _, rest = wanted.partition(".")
            if first and rest and rest == pattern[2:]:
                return True
    return False
