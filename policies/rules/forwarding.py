"""Forwarding exposes only allowed ports, to the tunnel (6): the nftables NAT reader,
the checks, the ``vps-forwarding-ports`` defaults and config schema."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyConfigSchema, ReportViolation, ResourceValidationArgs

from ._props import CONTAINER, REMOTE_TYPES, _is_map, _is_seq, _kind, _number, _texts
from .decoding import _with_decoded

# --- 6. forwarding exposes only allowed ports, to the tunnel --------------------------
#
# A forwarding is found by what a resource carries, not by its name: every nftables NAT
# statement (dnat, redirect, tproxy) in any text a remote command, copy or container
# ships, decoded where it is encoded. Forwarding in other tools (iptables, firewalld,
# socat) cannot be read and is refused.


# 8443: Woodpecker's public https port on a Gitea stack (the `ci` entry docs/gitea.md writes).
DEFAULT_ALLOWED_PORTS = (80, 443, 22, 5050, 8443)
DOCKER_API_PORTS = (2375, 2376)
# Ports on the forge host a forwarding may land on: forwarding.ports' default home ports,
# and Woodpecker's https (the `ci` entry's home port is its public port).
DEFAULT_ALLOWED_HOME_PORTS = (80, 443, 2222, 5050, 8443)
# Ports a container may publish on a private address but no forwarding may land on:
# Woodpecker's gRPC (woodpecker.grpc_port), which its agents reach over the tunnel only.
DEFAULT_TUNNEL_ONLY_PORTS = (9000,)

_NFT_SERVICES = {"ssh": 22, "http": 80, "https": 443, "domain": 53, "smtp": 25, "ftp": 21, "telnet": 23}
# The NAT statements (`dnat to ...`, `dnat ip to ...`, `tproxy to ...`, `redirect [to :port]`), not
# the conntrack match `ct status dnat`.
_DNAT = re.compile(r"(?<!status )\b(?:dnat|tproxy)\s+(?:(?:ip6?|inet)\s+)?(?:to|addr)\b")
# `redirect` is also an English word: a statement only as a rule's first word or after an nft match.
_REDIRECT = re.compile(
    r"(?:^|\b(?:dport|sport|iifname|oifname|daddr|saddr|l4proto|counter|accept|meta|mark)\b.*?)"
    r"\s?(?<![\w-])(redirect)(?=\s+to\b|\s*$|\s*[;}]|\s+comment\b)"
)
_OTHER_FORWARDERS = re.compile(
    r"-j\s+(?:DNAT|REDIRECT|TPROXY|NETMAP)\b|--jump\s+(?:DNAT|REDIRECT|TPROXY|NETMAP)\b|--to-destination\b"
    r"|--add-forward-port\b|\bforward-port\b|\bsocat\b.*\b(?:TCP|UDP|SCTP)[46]?-LISTEN\b|\bipvsadm\b"
    # nft without a NAT statement: stateless rewrites of the destination, fwd/dup to another host,
    # and the JSON syntax (`nft -j`), which this reader does not parse.
    r"|\b(?:ip6?\s+daddr|(?:tcp|udp|sctp|dccp|th)\s+dport)\s+set\b|\b(?:fwd|dup)\s+(?:(?:ip6?|inet)\s+)?to\b"
    r"|\"(?:dnat|redirect|tproxy|fwd|dup)\"\s*:"
    # ssh port forwards (-L/-R [bind:]port:host:port, -D [bind:]port): a listener that relays
    r"|\bssh\b.*\s-[A-Za-z]*(?:[LR]\s*(?:\S+:)?\d+:\S+:\d+|D\s*(?:\S+:)?\d+\b)",
    re.IGNORECASE,
)
_ADMIN_FACT = re.compile(r"^\s*#\s*forgeway-admin-ssh-port\s+(\d+)\s*$", re.MULTILINE)
_DPORT = re.compile(r"\b(?:tcp|udp|sctp|dccp|th)\s+dport\s+(!=\s*)?(\{[^}]*\}|\S+)")
_MAP_KEYS = re.compile(r"\bdport\s+map\s+\{([^}]*)\}")
_ANY_MAP = re.compile(r"\bmap\s+\{([^}]*)\}")
_TARGET = re.compile(r"\bto\s+(\S+)")

PortRange = tuple[int, int]


@dataclass(frozen=True)
class Exposure:
    """One public port range and where it lands: ``address`` None is the host itself (redirect)."""

    line: str
    public: PortRange
    address: str | None
    home: PortRange


@dataclass(frozen=True)
class Forwarded:
    """Public ports a ruleset forwards (inclusive ranges), where each lands, and what could not be read."""

    ranges: tuple[PortRange, ...]
    unreadable: tuple[str, ...]
    exposures: tuple[Exposure, ...] = ()


def _port(word: str) -> int:
    word = word.strip()
    port = _NFT_SERVICES.get(word) or int(word)
    if not 0 < port < 65536:
        raise ValueError(word)
    return port


def _port_spec(spec: str) -> tuple[list[PortRange], list[str]]:
    ranges: list[PortRange] = []
    bad: list[str] = []
    for raw in spec.strip().strip("{}").split(","):
        element = raw.strip()
        if not element:
            continue
        lo, sep, hi = element.partition("-")
        try:
            first = _port(lo)
            last = _port(hi) if sep else first
            ranges.append((first, last))
        except ValueError:
            bad.append(element)
    return ranges, bad


def _address_port(target: str) -> tuple[str, PortRange | None]:
    """``10.8.0.2:2222``, ``[fd00::2]:443``, ``10.8.0.2``, ``fd00::2``, ``:2222``: the address and port range."""
    target = target.strip().rstrip(";")
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.+))?", target)
    if bracketed:
        address, port = bracketed.group(1), bracketed.group(2)
    elif target.count(":") > 1:
        address, port = target, None  # a bare IPv6 address
    else:
        address, _, port = target.partition(":")
        port = port or None
    if port is None:
        return address, None
    ranges, bad = _port_spec(port)
    if bad or len(ranges) != 1:
        raise ValueError(port)
    return address, ranges[0]


def _map_value(value: str) -> tuple[str, PortRange | None]:
    """A map's value: ``10.8.0.2 . 443`` (address . port) or an address with an optional port."""
    concatenated = re.fullmatch(r"\s*(\S+)\s+\.\s+(\S+)\s*", value)
    if concatenated:
        ranges, bad = _port_spec(concatenated.group(2))
        if bad or len(ranges) != 1:
            raise ValueError(value)
        return concatenated.group(1), ranges[0]
    return _address_port(value)


class _Unreadable(ValueError):
    """A NAT statement the policy cannot verify; the message says why."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _map_exposures(line: str, entries: str) -> list[Exposure]:
    """``dnat to tcp dport map { 443 : 10.8.0.2 . 443 }``: public ports are the keys."""
    found: list[Exposure] = []
    for entry in (e.strip() for e in entries.split(",")):
        if not entry:
            continue
        key, sep, value = entry.partition(":")
        keys, bad = _port_spec(key)
        if bad or not sep or len(keys) != 1:
            raise _Unreadable(f"map entry '{entry}' is not 'port : address . port'")
        try:
            address, home = _map_value(value)
        except ValueError:
            raise _Unreadable(f"map entry '{entry}' has no literal target") from None
        if not _is_ip(address):
            raise _Unreadable(f"map entry '{entry}' has no literal target address")
        found.append(Exposure(line, keys[0], address, home or keys[0]))
    return found


def _exposures(line: str, match_part: str, target: str, redirect: bool) -> list[Exposure]:
    """What one NAT statement exposes; raises _Unreadable when that cannot be read."""
    dport_map = _MAP_KEYS.search(target)
    if dport_map:
        return _map_exposures(line, dport_map.group(1))
    match = _DPORT.search(match_part)
    if match is None:
        raise _Unreadable("no destination port: it forwards every port")
    if match.group(1):
        raise _Unreadable("a negated port match forwards every other port")
    public, bad = _port_spec(match.group(2))
    if bad:
        raise _Unreadable("; ".join(f"port '{b}' is not a literal port" for b in bad))
    if _ANY_MAP.search(target):
        raise _Unreadable("a target map other than 'dport map' cannot be checked")
    to = _TARGET.search(target)
    try:
        address, home = _address_port(to.group(1)) if to else ("", None)
    except ValueError:
        raise _Unreadable(f"target '{to.group(1) if to else ''}' is not a literal address and port") from None
    if not redirect and not _is_ip(address):
        raise _Unreadable(f"target '{address}' is not a literal address")
    return [Exposure(line, p, None if redirect else address, home or p) for p in public]


def forwarded_ports(ruleset: str) -> Forwarded:
    """What every NAT statement in a ruleset (or script) exposes, and the forwarding it cannot read."""
    text = re.sub(r"\\\n", " ", ruleset)
    exposures: list[Exposure] = []
    unreadable: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        statement = _DNAT.search(line) or _REDIRECT.search(line)
        if statement is None:
            if _OTHER_FORWARDERS.search(line):
                unreadable.append(f"'{line}' (forwarding outside nftables, which the policy cannot read)")
            continue
        start = statement.start(1) if statement.re is _REDIRECT else statement.start()
        try:
            exposures += _exposures(line, line[:start], line[start:], statement.re is _REDIRECT)
        except _Unreadable as why:
            unreadable.append(f"'{line}' ({why})")
    return Forwarded(tuple(e.public for e in exposures), tuple(unreadable), tuple(exposures))


def _admin_ports(props: Mapping[str, Any], texts: Sequence[str]) -> set[int]:
    """The host's admin SSH port: the one the command connects on, and the one a ruleset names."""
    connection = props.get("connection")
    port = _number(connection.get("port")) if _is_map(connection) else None
    return {port or 22} | {int(p) for text in texts for p in _ADMIN_FACT.findall(text)}


def _span(r: PortRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


# Documentation ranges stand in for public addresses in examples and the lab (a VPS's "public"
# address 203.0.113.10); Python calls them private, so they are named here.
_PUBLIC_STAND_INS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global or any(ip.version == n.version and ip in n for n in _PUBLIC_STAND_INS)


def _address_problem(e: Exposure, to: str) -> str | None:
    """Why an exposure's target is not a host behind the tunnel, or None."""
    fix = "forward only to the GitLab host's tunnel address (forwarding.ports)"
    if e.address is None:
        return f"redirects {to} to this host's own port {_span(e.home)} ('{e.line}'), exposing a local service: {fix}"
    try:
        ip = ipaddress.ip_address(e.address)
    except ValueError:
        return f"forwards {to} to '{e.address}', which is not a literal address ('{e.line}'): {fix}"
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved:
        return f"forwards {to} to {ip}, an address of this host or of no host ('{e.line}'): {fix}"
    if _is_public(ip):
        return f"forwards {to} to the public address {ip}, which makes this host a relay ('{e.line}'): {fix}"
    return None


def _target_problem(e: Exposure, allowed_home: set[int]) -> str | None:
    """Why where an exposure lands is not an allowed port on a host behind the tunnel, or None."""
    to = f"public port {_span(e.public)}"
    problem = _address_problem(e, to)
    home = set(range(e.home[0], e.home[1] + 1))
    if problem is None and home & set(DOCKER_API_PORTS):
        problem = (
            f"forwards {to} to {e.address} port {_span(e.home)}, a docker API port (2375/2376), which gives the "
            "internet root on that host: remove it from forwarding.ports"
        )
    if problem is None and not home <= allowed_home:
        problem = (
            f"forwards {to} to {e.address} port {_span(e.home)}, which is not in the home-port allowlist "
            f"{sorted(allowed_home)} (the GitLab host's own SSH must never be reachable from the internet): "
            "change forwarding.ports[].home, or add the port to the policy config allowedHomePorts"
        )
    return problem


def _exposure_problem(e: Exposure, admin_ports: set[int], allowed: set[int], allowed_home: set[int]) -> str | None:
    ports = _span(e.public)
    span = set(range(e.public[0], e.public[1] + 1))
    admin = sorted(span & admin_ports)
    if admin:
        return (
            f"forwards port {ports}, {'which includes ' if e.public[0] != e.public[1] else ''}the admin SSH port "
            f"{admin[0]}: forwarding it locks the admin out; move sshd to another port (hosts[].ssh_port) or "
            "forward git SSH elsewhere"
        )
    if span & set(DOCKER_API_PORTS):
        return (
            f"forwards port {ports}, a docker API port (2375/2376), which gives the internet root on the home "
            "device: remove it from forwarding.ports"
        )
    if not span <= allowed:
        return (
            f"forwards port {ports}, which is not in the allowlist {sorted(allowed)}: remove it from "
            "forwarding.ports, or add it to the policy config allowedPorts"
        )
    return _target_problem(e, allowed_home)


def _published_port_problems(
    props: Mapping[str, Any], allowed_home: set[int], tunnel_only: AbstractSet[int] = frozenset()
) -> Iterator[str]:
    """A container's ``ports``: docker DNATs each to the container, so each lands on a home port."""
    ports = props.get("ports")
    for i, port in enumerate(ports if _is_seq(ports) else []):
        if not _is_map(port):
            continue
        external, ip = _number(port.get("external")), str(port.get("ip") or "")
        where = f"ports[{i}] publishes port {external or 'a random port'} on {ip or 'every address'}"
        if external is None:
            yield f"{where}, which the policy cannot check: set ports[].external"
            continue
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is None or address.is_unspecified or _is_public(address):
            yield (
                f"{where}, which reaches it from every network that host is on: publish on the one address that "
                "needs it (the GitLab host's tunnel address: ports[].ip)"
            )
        elif external in DOCKER_API_PORTS:
            yield f"{where}, a docker API port (2375/2376): do not publish it"
        elif not address.is_loopback and external not in allowed_home | tunnel_only:
            yield (
                f"{where}, which is not in the home-port allowlist {sorted(allowed_home)} (nor tunnel-only "
                f"{sorted(tunnel_only)}): publish another port, or add it to the policy config allowedHomePorts"
            )


def vps_forwarding_ports(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    config = args.get_config()
    allowed = {int(p) for p in config.get("allowedPorts", DEFAULT_ALLOWED_PORTS)}
    allowed_home = {int(p) for p in config.get("allowedHomePorts", DEFAULT_ALLOWED_HOME_PORTS)}
    tunnel_only = {int(p) for p in config.get("tunnelOnlyPorts", DEFAULT_TUNNEL_ONLY_PORTS)}
    if args.resource_type == CONTAINER:
        for problem in _published_port_problems(args.props, allowed_home, tunnel_only):
            report_violation(f"container '{args.name}' {problem}", None)
    texts = list(_with_decoded(_texts(args.resource_type, args.props)))
    found = [(path, forwarded_ports(text)) for path, text in texts]
    found = [(path, f) for path, f in found if f.exposures or f.unreadable]
    if not found:
        return
    admin_ports = _admin_ports(args.props, [text for _, text in texts])
    seen: set[str] = set()
    for path, forwarded in found:
        where = f"forwarding in {_kind(args.resource_type)} '{args.name}' ({path})"
        problems = [
            f"has a NAT rule the policy cannot verify: {line}: match literal ports and forward to literal "
            "addresses with nftables"
            for line in forwarded.unreadable
        ]
        problems += [p for e in forwarded.exposures if (p := _exposure_problem(e, admin_ports, allowed, allowed_home))]
        for problem in problems:
            if problem not in seen:  # a ruleset and its decoded copy say the same
                seen.add(problem)
                report_violation(f"{where} {problem}", None)


PORTS_CONFIG = PolicyConfigSchema(
    properties={
        "allowedPorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "default": list(DEFAULT_ALLOWED_PORTS),
            "description": "Public ports the VPS may forward (the admin SSH port and 2375/2376 never are)",
        },
        "allowedHomePorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "default": list(DEFAULT_ALLOWED_HOME_PORTS),
            "description": "Ports on the forge host a forwarding may land on (2375/2376 never are)",
        },
        "tunnelOnlyPorts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "default": list(DEFAULT_TUNNEL_ONLY_PORTS),
            "description": "Ports a container may publish on a private address that no forwarding may land on "
            "(Woodpecker's gRPC)",
        },
    }
)
