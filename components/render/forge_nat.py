"""The forge host's own DNAT to the forge's container (pure: settings in, text out).

The forge's container publishes each port on ONE host address, the tunnel IPv4 address:
dockerd reads a port's bindings back in an order of its own (go-connections
nat.SortPortMap), so a port bound to two addresses replaces the container after every
read (issue 20, docs/lab.md). The other addresses clients use reach the container here,
in tables of forgeway's own on the forge host, straight to its fixed addresses on its
docker network (no docker-proxy, so the forge sees the client's address):

* ``table ip6 forgeway_forge``: ``[tunnel IPv6]:port`` -> ``[container IPv6]:port``;
* ``table ip forgeway_forge``: ``<LAN IPv4>:port`` -> ``<container IPv4>:port``
  (``publish_on_lan``; docker's own FORWARD rules already accept the container's published
  ports whatever the destination was, so nothing else is needed for IPv4).

Each table is one file (declared, deleted, defined: ``nft -f`` replaces it atomically
and touches no other table), DNATing at prerouting (clients) and at output (the host's
own connections, which docker-proxy served before). Comments say "forge:".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["FILE4", "FILE6", "TABLE", "ForgeNatSettings", "PortMap", "render_forge_nat"]

TABLE = "forgeway_forge"
FILE4 = "forge4.nft"  # table ip forgeway_forge
FILE6 = "forge6.nft"  # table ip6 forgeway_forge


@dataclass(frozen=True)
class PortMap:
    """One published service: the host port clients dial, the container's own port."""

    service: str  # https, ssh, ... (the rule's comment)
    host_port: int
    container_port: int


@dataclass(frozen=True)
class ForgeNatSettings:
    """What the forge host DNATs, per family; a family without both addresses has no table."""

    ports: tuple[PortMap, ...]
    tunnel6: ipaddress.IPv6Address | None = None  # the host's tunnel IPv6 address (tunnel.ipv6)
    container6: ipaddress.IPv6Address | None = None  # the container's fixed IPv6 address
    lan4: ipaddress.IPv4Address | None = None  # the host's LAN address (publish_on_lan)
    container4: ipaddress.IPv4Address | None = None  # the container's fixed IPv4 address


def _check(s: ForgeNatSettings) -> None:
    if not s.ports:
        raise ValueError("forge NAT: no port to forward")
    for p in s.ports:
        if not (1 <= p.host_port <= 65535 and 1 <= p.container_port <= 65535):
            raise ValueError(f"forge NAT: port {p.service} {p.host_port}->{p.container_port} is out of 1-65535")
        if not p.service.replace("-", "").isalnum():
            raise ValueError(f"forge NAT: service name {p.service!r} must be letters, digits and '-'")
    if (s.tunnel6 is None) != (s.container6 is None):
        raise ValueError("forge NAT: the tunnel IPv6 address and the container's go together")
    if (s.lan4 is None) != (s.container4 is None):
        raise ValueError("forge NAT: the LAN address and the container's IPv4 address go together")


def _table(family: str, daddr: str, target: str, ports: tuple[PortMap, ...], title: str) -> str:
    """One family's table: the same DNAT for clients (prerouting) and the host itself (output)."""
    ip = "ip6" if family == "ip6" else "ip"
    rules = [
        f"\t\t{ip} daddr {daddr} tcp dport {p.host_port} dnat to {target}:{p.container_port}"
        f' comment "forge: {p.service}"'
        for p in ports
    ]
    lines = [
        f"# {title}",
        "# Rendered by components/render/forge_nat.py; loaded by forge-nat-up.sh. Nothing else is touched.",
        f"table {family} {TABLE}",
        f"delete table {family} {TABLE}",
        f"table {family} {TABLE} {{",
    ]
    # nft names priority "dstnat" (-100) at prerouting only; output takes the number.
    for hook, priority in (("prerouting", "dstnat"), ("output", "-100")):
        lines += [f"\tchain {hook} {{", f"\t\ttype nat hook {hook} priority {priority}; policy accept;", *rules, "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_forge_nat(s: ForgeNatSettings) -> dict[str, str]:
    """The files forge-nat-up.sh loads (FILE4, FILE6), each only when its family is wanted."""
    _check(s)
    files: dict[str, str] = {}
    if s.tunnel6 is not None and s.container6 is not None:
        files[FILE6] = _table(
            "ip6", str(s.tunnel6), f"[{s.container6}]", s.ports,
            f"forgeway: the forge's ports on the tunnel IPv6 address {s.tunnel6}, to its container {s.container6}.",
        )  # fmt: skip
    if s.lan4 is not None and s.container4 is not None:
        files[FILE4] = _table(
            "ip", str(s.lan4), str(s.container4), s.ports,
            f"forgeway: the forge's ports on the LAN address {s.lan4}, to its container {s.container4}.",
        )  # fmt: skip
    return files
