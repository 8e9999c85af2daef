"""nftables rulesets for port forwarding (pure: settings in, text out; no Pulumi, no I/O).

Two files, each the whole of one table named ``forgeway`` and nothing else:

* :func:`render_forwarding` for the VPS: DNAT of the public TCP ports to the home
  device's tunnel address, masquerade into the tunnel (``snat`` mode) or not
  (``preserve-source``), TCP MSS clamping in both directions through the tunnel, and
  accept rules for our flows and for the admin SSH and WireGuard ports.
* :func:`render_home_routing` for the home device (``preserve-source`` only): marks
  connections that arrive through the tunnel and routes their replies back into it
  (conntrack mark -> packet mark -> ``ip rule fwmark`` -> a table whose default route is
  the tunnel), so GitLab sees the client's real address and the replies do not leave
  through the home's own uplink (where the client would drop them).

Each file declares the table, deletes it and defines it whole, so ``nft -f`` replaces
it in one transaction (atomically, any number of times) and never touches another
table: no ``flush ruleset``.

What one table cannot do, and why the scripts do more: every base chain registered
at a hook sees the packet, and ``accept`` only ends the chain it is in, while ``drop``
anywhere is final (nft(8), "OVERALL EVALUATION OF THE RULESET"; the nftables wiki,
"Configuring chains"). So our ``accept`` rules cannot overrule another table's forward
policy ``drop`` or its catch-all ``reject`` (ufw, Docker and cloud images install
these through iptables-nft). ``forwarding-up.sh`` handles that (see its header); the
rulesets here only carry, as ``# forgeway-...`` comment lines, the facts it needs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from components.config import ForwardedPort, ForwardingMode, StackConfig

__all__ = [
    "DEFAULT_FWMARK",
    "DEFAULT_ROUTE_TABLE",
    "DEFAULT_RULE_PRIORITY",
    "TABLE",
    "ForwardingSettings",
    "HomeRouting",
    "HomeRoutingSettings",
    "PortForward",
    "forwarding_settings",
    "render_forwarding",
    "render_home_routing",
]

TABLE = "forgeway"  # the one table we own, on the VPS and on the home device (family ip)

# Home-side policy routing. The mark is one bit, set and tested with a mask, so marks
# of other software (Kubernetes 0x4000/0x8000, Tailscale 0xff0000, wg-quick 0xca6c) are
# left alone. The rule priority runs before the main table (32766) and Tailscale's
# rules (5210-5270); the table number is not one wg-quick (51820) or iproute2 uses.
DEFAULT_FWMARK = 0x10000000
DEFAULT_ROUTE_TABLE = 4680
DEFAULT_RULE_PRIORITY = 4680

_MODES = ("snat", "preserve-source")
# Interface names go into nft strings and shell arguments: a safe subset of what
# Linux accepts (at most 15 bytes, no '/', ':' or blanks).
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
_TCP_IP_HEADERS = 40  # IPv4 (20) + TCP (20) without options: MSS = MTU - 40
_TCP_IP6_HEADERS = 60  # IPv6 (40) + TCP (20): MSS = MTU - 60


class PortForward(NamedTuple):
    """One forwarded TCP port: public port on the VPS -> port on the home device."""

    public: int
    home: int
    service: str = ""  # only for the rule comment (http, https, ssh, registry)


@dataclass(frozen=True)
class ForwardingSettings:
    """What the VPS ruleset needs; build it with :func:`forwarding_settings` from config.

    ``ports`` takes ``(public, home)`` pairs or :class:`PortForward`; they are kept as
    PortForward in the given order.
    """

    public_interface: str  # faces the internet, e.g. eth0 (host.public_interface)
    tunnel_interface: str  # the WireGuard interface, e.g. wg0
    home_address: ipaddress.IPv4Address  # the home device's tunnel address, e.g. 10.8.0.2
    ports: tuple[PortForward, ...]  # TCP only
    mode: ForwardingMode  # snat | preserve-source (forwarding.mode)
    admin_ssh_port: int  # the VPS's own sshd: never forwarded, always accepted
    wireguard_port: int  # UDP listen port of WireGuard on the VPS (tunnel.listen_port)
    tunnel_mtu: int  # tunnel.effective_mtu; TCP MSS through the tunnel is this - 40 (IPv6: - 60)
    # forwarding.ipv6: the forge's tunnel IPv6 address; None: IPv4 only (no table ip6 forgeway)
    home_address6: ipaddress.IPv6Address | None = None

    def __post_init__(self) -> None:
        ports = tuple(p if isinstance(p, PortForward) else PortForward(*p) for p in self.ports)
        object.__setattr__(self, "ports", ports)
        object.__setattr__(self, "home_address", ipaddress.IPv4Address(self.home_address))
        if self.home_address6 is not None:
            object.__setattr__(self, "home_address6", ipaddress.IPv6Address(self.home_address6))


@dataclass(frozen=True)
class HomeRoutingSettings:
    """What the home device's policy routing needs (``preserve-source`` mode)."""

    tunnel_interface: str  # e.g. wg0
    vps_tunnel_address: ipaddress.IPv4Address  # the VPS end of the tunnel, the replies' gateway
    fwmark: int = DEFAULT_FWMARK  # one bit: mark and mask
    route_table: int = DEFAULT_ROUTE_TABLE
    rule_priority: int = DEFAULT_RULE_PRIORITY
    # forwarding.ipv6: the VPS's tunnel IPv6 address, the IPv6 replies' gateway; None: IPv4 only
    vps_tunnel_address6: ipaddress.IPv6Address | None = None
    # With vps_tunnel_address6: the home's own tunnel IPv6 address, the replies' source. A
    # home without an IPv6 default route finds no route for a reply before the mark applies
    # (the output hook never sees it), so `ip -6 rule from` this address sends it to the table.
    home_tunnel_address6: ipaddress.IPv6Address | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vps_tunnel_address", ipaddress.IPv4Address(self.vps_tunnel_address))
        if self.vps_tunnel_address6 is not None:
            object.__setattr__(self, "vps_tunnel_address6", ipaddress.IPv6Address(self.vps_tunnel_address6))
        if self.home_tunnel_address6 is not None:
            object.__setattr__(self, "home_tunnel_address6", ipaddress.IPv6Address(self.home_tunnel_address6))


@dataclass(frozen=True)
class HomeRouting:
    """The home side, rendered: the nft table and the routing parameters beside it.

    ``home-routing-up.sh`` takes ``script_args()`` as arguments and ``nftables`` on stdin.
    """

    nftables: str
    interface: str
    fwmark: str  # "0x10000000/0x10000000" (mark/mask), as `ip rule` takes it
    route_table: int
    rule_priority: int
    gateway: str  # default route of the table: via the VPS tunnel address
    rp_filter: int = field(default=2)  # loose on the tunnel: replies' sources are anywhere
    gateway6: str | None = None  # the same for IPv6 (ip -6 rule/route), with forwarding.ipv6
    source6: str | None = None  # with gateway6: `ip -6 rule from` it (the home's tunnel address)

    def script_args(self) -> tuple[str, ...]:
        base = (self.interface, self.fwmark, str(self.route_table), str(self.rule_priority), self.gateway)
        if self.gateway6 is None:
            return base
        return (*base, self.gateway6, *([self.source6] if self.source6 is not None else []))


# --- checks ---------------------------------------------------------------------------


def _check_ifname(what: str, name: str) -> None:
    if not _IFNAME.match(name):
        raise ValueError(f"{what} {name!r} is not an interface name: 1-15 characters of letters, digits, '_', '.', '-'")


def _check_port(what: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} {port!r} is not a port number (1-65535)")


def _check_forwarding(s: ForwardingSettings) -> None:
    _check_ifname("public_interface", s.public_interface)
    _check_ifname("tunnel_interface", s.tunnel_interface)
    if s.public_interface == s.tunnel_interface:
        raise ValueError(f"public_interface and tunnel_interface are both {s.public_interface!r}")
    if s.mode not in _MODES:
        raise ValueError(f"mode {s.mode!r} is not one of {', '.join(_MODES)}")
    a = s.home_address
    if (
        a.is_unspecified
        or a.is_loopback
        or a.is_multicast
        or a.is_link_local
        or a == ipaddress.IPv4Address("255.255.255.255")
    ):
        raise ValueError(f"home_address {a} is not a unicast address a tunnel peer can have")
    a6 = s.home_address6
    if a6 is not None and (a6.is_unspecified or a6.is_loopback or a6.is_multicast or a6.is_link_local):
        raise ValueError(f"home_address6 {a6} is not a unicast address a tunnel peer can have")
    _check_port("admin_ssh_port", s.admin_ssh_port)
    _check_port("wireguard_port", s.wireguard_port)
    if not 1280 <= s.tunnel_mtu <= 9000:
        raise ValueError(f"tunnel_mtu {s.tunnel_mtu} is outside 1280-9000")
    seen: dict[int, int] = {}
    for i, p in enumerate(s.ports):
        _check_port(f"ports[{i}].public", p.public)
        _check_port(f"ports[{i}].home", p.home)
        if not re.fullmatch(r"[a-z0-9-]{0,32}", p.service):
            raise ValueError(f"ports[{i}].service {p.service!r} is not a short lowercase name")
        if p.public == s.admin_ssh_port:
            raise ValueError(
                f"ports[{i}] forwards public TCP port {p.public}, the VPS admin SSH port: forwarding it "
                f"would send the admin's SSH to the home device and lock the admin out of the VPS; "
                f"move the VPS's sshd to another port, or forward git SSH on another public port"
            )
        if p.public in seen:
            raise ValueError(f"ports[{i}] forwards public TCP port {p.public} again (ports[{seen[p.public]}])")
        seen[p.public] = i


# --- the VPS ---------------------------------------------------------------------------


def forwarding_settings(
    cfg: StackConfig,
    home_address: ipaddress.IPv4Address | str,
    tunnel_interface: str = "wg0",
    services: Sequence[ForwardedPort] | None = None,
    home_address6: ipaddress.IPv6Address | str | None = None,
) -> ForwardingSettings:
    """ForwardingSettings from a validated ``StackConfig`` and the forge host's tunnel
    address; ``services``: the forge's published ports (Forge.services), else forwarding.ports;
    ``home_address6``: the forge host's tunnel IPv6 address, used with forwarding.ipv6."""
    if cfg.forwarding.ipv6 and home_address6 is None:
        raise ValueError("forwarding.ipv6 is on: the forge host's tunnel IPv6 address is needed")
    vps = cfg.vps
    fw = cfg.forwarding
    return ForwardingSettings(
        public_interface=vps.public_interface,
        tunnel_interface=tunnel_interface,
        home_address=ipaddress.IPv4Address(home_address),
        ports=tuple(
            PortForward(p.public, p.home_port, p.service) for p in (fw.ports if services is None else services)
        ),
        mode=fw.mode,
        admin_ssh_port=cfg.admin_ssh_port,
        wireguard_port=cfg.tunnel.listen_port,
        tunnel_mtu=cfg.tunnel.effective_mtu,
        home_address6=ipaddress.IPv6Address(home_address6) if cfg.forwarding.ipv6 and home_address6 else None,
    )


def _q(text: str) -> str:
    """An nft string literal (our texts never hold quotes: names are checked above)."""
    assert '"' not in text and "\n" not in text
    return f'"{text}"'


def _table_header(title: Iterable[str], meta: Iterable[str], families: Sequence[str] = ("ip",)) -> list[str]:
    lines = ["#!/usr/sbin/nft -f"]
    lines += [f"# {t}" if t else "#" for t in title]
    lines += [
        "# Generated by components/render/nftables.py; do not edit: the next deploy replaces it.",
        "#",
        "# Facts for the scripts that load this file (comments to nft):",
    ]
    lines += [f"# forgeway-{m}" for m in meta]
    lines += [
        "",
        "# Declare the table, so the delete below also works on a first load; delete it; define",
        f"# it whole. nft -f applies the file as one transaction: table ip {TABLE} is replaced",
        "# atomically, as often as it is loaded, and no other table is touched.",
    ]
    if len(families) > 1:
        lines.append(f"# IPv6 has its own table ip6 {TABLE}, in the same transaction.")
    for family in families:
        lines += [f"table {family} {TABLE}", f"delete table {family} {TABLE}"]
    lines.append("")
    return lines


def render_forwarding(settings: ForwardingSettings) -> str:
    """The VPS's ``table ip forgeway``, as a file for ``nft -f``.

    Raises ValueError, naming the field, for settings no correct ruleset can come from:
    above all a public port equal to the admin SSH port.
    """
    s = settings
    _check_forwarding(s)
    home = str(s.home_address)
    pub, tun = _q(s.public_interface), _q(s.tunnel_interface)
    mss = s.tunnel_mtu - _TCP_IP_HEADERS
    meta = [
        f"home-address {home}",
        f"mode {s.mode}",
        f"admin-ssh-port {s.admin_ssh_port}",
        f"wireguard-port {s.wireguard_port}",
        *(f"dnat tcp {p.public} {home} {p.home} {s.mode}" for p in s.ports),
    ]
    title = [
        f"forgeway port forwarding on the VPS: table ip {TABLE}, and nothing else.",
        f"TCP ports arriving on {s.public_interface} go to {home} through {s.tunnel_interface}; mode {s.mode}.",
    ]
    families: tuple[str, ...] = ("ip",)
    if s.home_address6 is not None:
        home6 = str(s.home_address6)
        families = ("ip", "ip6")
        meta += [
            f"home-address6 {home6}",
            f"public-interface {s.public_interface}",
            *(f"dnat6 tcp {p.public} {home6} {p.home} {s.mode}" for p in s.ports),
        ]
        title[0] = f"forgeway port forwarding on the VPS: tables ip and ip6 {TABLE}, and nothing else."
        title.append(f"IPv6: the same ports go to [{home6}] (table ip6 {TABLE}, below).")
    out = _table_header(title, meta, families)
    out += [
        f"table ip {TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    ]
    for p in s.ports:
        comment = f" comment {_q(p.service)}" if p.service else ""
        out.append(f"\t\tiifname {pub} tcp dport {p.public} dnat to {home}:{p.home}{comment}")
    out += ["\t}", ""]

    out += [
        "\t# Present in both modes: older kernels un-NAT replies only with both nat hooks registered.",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ]
    if s.mode == "snat":
        out += [
            "\t\t# snat: the home device sees our tunnel address and replies to it.",
            f"\t\toifname {tun} ct status dnat ip daddr {home} masquerade",
        ]
    else:
        out += [
            "\t\t# preserve-source: no SNAT. The home device sees the client's address and routes",
            "\t\t# the replies back through the tunnel (render_home_routing); we un-DNAT them.",
        ]
    out += ["\t}", ""]

    out += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\t# TCP MSS clamping for SYN and SYN-ACK, into and out of the tunnel, to MTU {s.tunnel_mtu} - 40.",
        "\t\t# A fixed value, not `rt mtu`: for the SYN-ACK coming out of the tunnel the route is the",
        "\t\t# public interface's (1500), so `rt mtu` would not lower it, and the client would send",
        "\t\t# segments too big for the tunnel. Only ever lowered (the comparison), never raised.",
        *_clamps(tun, mss),
        "\t\t# Our flows and their replies. Policy accept: this table never drops another's traffic;",
        "\t\t# nor can its accept overrule another table's drop (see forwarding-up.sh).",
        f"\t\tct status dnat ct reply ip saddr {home} counter accept comment {_q('forwarded to the home device')}",
        "\t}",
        "",
        *_input_chain(s),
        "}",
    ]
    if s.home_address6 is not None:
        out += ["", *_forwarding6(s, s.home_address6)]
    return "\n".join(out) + "\n"


def _clamps(tun: str, mss: int) -> list[str]:
    """TCP MSS clamping of SYN and SYN-ACK into and out of the tunnel (both families)."""
    rule = f"tcp flags syn / syn,rst tcp option maxseg size > {mss} tcp option maxseg size set {mss}"
    return [f"\t\toifname {tun} {rule}", f"\t\tiifname {tun} {rule}"]


def _input_chain(s: ForwardingSettings) -> list[str]:
    """The VPS's own admin SSH and WireGuard ports, accepted (both families)."""
    return [
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\ttcp dport {s.admin_ssh_port} counter accept comment {_q('admin ssh, never forwarded')}",
        f"\t\tudp dport {s.wireguard_port} counter accept comment {_q('wireguard')}",
        "\t}",
    ]


def _forwarding6(s: ForwardingSettings, home_address6: ipaddress.IPv6Address) -> list[str]:
    """``table ip6 forgeway``: the IPv4 table's rules for IPv6 (forwarding.ipv6)."""
    home6 = str(home_address6)
    pub, tun = _q(s.public_interface), _q(s.tunnel_interface)
    mss = s.tunnel_mtu - _TCP_IP6_HEADERS
    out = [
        f"table ip6 {TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    ]
    for p in s.ports:
        comment = f" comment {_q(p.service)}" if p.service else ""
        out.append(f"\t\tiifname {pub} tcp dport {p.public} dnat to [{home6}]:{p.home}{comment}")
    out += ["\t}", "", "\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
    if s.mode == "snat":
        out += [
            "\t\t# snat: the forge sees our tunnel IPv6 address (wg0's only global one) and replies to it.",
            f"\t\toifname {tun} ct status dnat ip6 daddr {home6} masquerade",
        ]
    else:
        out.append("\t\t# preserve-source: no SNAT; the forge routes replies back by mark (render_home_routing).")
    out += [
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\t# TCP MSS clamping as for IPv4, to MTU {s.tunnel_mtu} - 60 (IPv6 header 40, TCP 20).",
        *_clamps(tun, mss),
        f"\t\tct status dnat ct reply ip6 saddr {home6} counter accept comment {_q('forwarded to the home device')}",
        "\t}",
        "",
        *_input_chain(s),
        "}",
    ]
    return out


# --- the home device -------------------------------------------------------------------


def _check_home(s: HomeRoutingSettings) -> None:
    _check_ifname("tunnel_interface", s.tunnel_interface)
    if s.fwmark <= 0 or s.fwmark > 0xFFFFFFFF or s.fwmark & (s.fwmark - 1):
        raise ValueError(f"fwmark {s.fwmark:#x} is not a single bit of a 32-bit mark")
    # 253-255 are default/main/local; 0 is unspec.
    if not 1 <= s.route_table <= 0xFFFFFFFF or s.route_table in (253, 254, 255):
        raise ValueError(f"route_table {s.route_table} is 0, a reserved table (253-255) or not 32-bit")
    if not 1 <= s.rule_priority <= 32765:
        raise ValueError(f"rule_priority {s.rule_priority} must be 1-32765 (before the main table's rule)")
    a = s.vps_tunnel_address
    if a.is_unspecified or a.is_loopback or a.is_multicast:
        raise ValueError(f"vps_tunnel_address {a} is not a unicast address")
    a6 = s.vps_tunnel_address6
    if a6 is not None and (a6.is_unspecified or a6.is_loopback or a6.is_multicast or a6.is_link_local):
        raise ValueError(f"vps_tunnel_address6 {a6} is not a unicast address")
    h6 = s.home_tunnel_address6
    if h6 is not None and a6 is None:
        raise ValueError(f"home_tunnel_address6 {h6} is given without vps_tunnel_address6 (forwarding.ipv6)")
    if h6 is not None and (h6.is_unspecified or h6.is_loopback or h6.is_multicast or h6.is_link_local or h6 == a6):
        raise ValueError(f"home_tunnel_address6 {h6} is not a unicast address other than the VPS's")


def render_home_routing(settings: HomeRoutingSettings) -> HomeRouting:
    """The home device's ``table ip forgeway`` and its ``ip rule``/``ip route`` parameters.

    Replies to connections that came in through the tunnel must leave through it: the
    home's default route goes out of its own uplink, where the source address (our
    tunnel address, un-DNATed by the VPS) would be wrong and the client drops them.
    """
    s = settings
    _check_home(s)
    mark = f"{s.fwmark:#010x}"
    tun = _q(s.tunnel_interface)
    meta = [
        f"interface {s.tunnel_interface}",
        f"fwmark {mark}/{mark}",
        f"route-table {s.route_table}",
        f"rule-priority {s.rule_priority}",
        f"gateway {s.vps_tunnel_address}",
    ]
    families: tuple[str, ...] = ("ip",)
    if s.vps_tunnel_address6 is not None:
        families = ("ip", "ip6")
        meta.append(f"gateway6 {s.vps_tunnel_address6}")
    if s.home_tunnel_address6 is not None:
        meta.append(f"source6 {s.home_tunnel_address6}")
    title = [
        f"forgeway source-preserving return path on the home device: table ip {TABLE}, nothing else.",
        f"Connections arriving on {s.tunnel_interface} get conntrack mark bit {mark}; their replies get it",
        f"as packet mark, and `ip rule fwmark {mark}/{mark} lookup {s.route_table}` sends them to a table",
        f"whose default route is via {s.vps_tunnel_address} dev {s.tunnel_interface} (home-routing-up.sh adds both).",
    ]
    if s.vps_tunnel_address6 is not None:
        title.append(f"IPv6 the same in table ip6 {TABLE}: `ip -6 rule`, default via {s.vps_tunnel_address6}.")
    if s.home_tunnel_address6 is not None:
        title.append(
            f"And `ip -6 rule from {s.home_tunnel_address6}`: without an IPv6 default route no reply gets marked."
        )
    out = _table_header(title, meta, families)
    for family in families:
        out += _home_table(family, mark, tun)
        out.append("")
    return HomeRouting(
        nftables="\n".join(out[:-1]) + "\n",
        interface=s.tunnel_interface,
        fwmark=f"{mark}/{mark}",
        route_table=s.route_table,
        rule_priority=s.rule_priority,
        gateway=str(s.vps_tunnel_address),
        gateway6=str(s.vps_tunnel_address6) if s.vps_tunnel_address6 is not None else None,
        source6=str(s.home_tunnel_address6) if s.home_tunnel_address6 is not None else None,
    )


def _home_table(family: str, mark: str, tun: str) -> list[str]:
    """The marking table of one family; the rules are the same for ip and ip6."""
    return [
        f"table {family} {TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        "\t\t# A new connection from the tunnel: remember it on the connection (one bit, masked).",
        f"\t\tiifname {tun} ct state new ct mark set ct mark | {mark}",
        "\t\t# A reply forwarded from a container (docker bridge): mark the packet before routing.",
        f"\t\tiifname != {tun} ct mark & {mark} == {mark} meta mark set meta mark | {mark}",
        "\t}",
        "",
        "\tchain output {",
        "\t\t# A reply from a local process (GitLab on the host network, docker-proxy): a route",
        "\t\t# chain, so the kernel routes the packet again after the mark is set.",
        "\t\ttype route hook output priority mangle; policy accept;",
        f"\t\tct mark & {mark} == {mark} meta mark set meta mark | {mark}",
        "\t}",
        "}",
    ]
