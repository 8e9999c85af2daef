"""The tunnel's segmentation: who may reach whom through wg0 (pure: settings in, text out).

The tunnel is a star around the VPS, and a peer routes the whole tunnel subnet into it,
so without a filter every peer reaches every other peer and everything that listens on
all addresses of the VPS (its admin sshd first). This renders, for each host, one nft
file holding the whole of ``table inet forgeway_segment`` (declared, deleted, defined:
``nft -f`` replaces it atomically and touches no other table), loaded by
segment-up.sh. Default deny for what arrives through the tunnel; allowed only:

* a runner -> the GitLab host's published HTTPS, SSH and registry ports;
* the VPS -> the GitLab host's forwarded ports (snat mode's DNATed clients come from it);
* the internet -> the tunnel: only connections the VPS DNATed to the GitLab host
  (preserve-source: they reach the GitLab host with the client's address);
* a host in ``tunnel.admin_peers`` -> the VPS's admin SSH and every peer's own SSH;
* the GitLab host -> the VPS's admin SSH when its backups go there (the default backup
  repository: user forgeway-backup, SFTP only, chrooted; components/backup.py);
* replies (ct state established, related) and pings from the VPS (tunnel health).

Enforced twice, so a compromised peer cannot route around it: on the VPS (forward
between peers and from the tunnel to the internet, and input from wg0) and on each peer
at prerouting on wg0. Prerouting, not input: a docker-published port (GitLab's) is
DNATed at prerouting and then forwarded, never seen by input; at priority mangle the
packet still has the address and port it was sent to.

Every rule drops only what arrives on, or leaves through, the tunnel interface: the
LAN, the public interface and the admin port from the internet are not this table's.
Comments start with "segment:", never "forgeway:" (forwarding-down.sh deletes rules
with that label from tables not its own).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.config import ForwardedPort, ForwardingMode, Role, StackConfig

__all__ = ["RUNNER_SERVICES", "TABLE", "Member", "SegmentSettings", "render_segment", "segment_settings"]

TABLE = "forgeway_segment"  # family inet: IPv6 through the tunnel is dropped as well
FAMILY = "inet"
# What runners' jobs use of GitLab: the API and clones over HTTPS, clones over SSH, images.
RUNNER_SERVICES = ("https", "ssh", "registry")
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")

# Role "gitlab" is the forge's host, whichever forge it runs: the word is in the rendered
# rulesets (comments), which must not change on hosts that have them.


@dataclass(frozen=True)
class Member:
    """One host on the tunnel."""

    name: str
    role: Role
    address: ipaddress.IPv4Address  # its tunnel address
    ssh_port: int  # its own sshd (the VPS: the admin SSH port)
    address6: ipaddress.IPv6Address | None = None  # its tunnel IPv6 address (tunnel.ipv6)


@dataclass(frozen=True)
class SegmentSettings:
    """What every host's table needs; build it with :func:`segment_settings` from config."""

    interface: str  # wg0
    subnet: ipaddress.IPv4Network  # the tunnel subnet
    members: tuple[Member, ...]
    admins: tuple[str, ...]  # names of members allowed to SSH to the others (tunnel.admin_peers)
    runner_ports: tuple[int, ...]  # the GitLab host's published HTTPS, SSH, registry ports
    forwarded_ports: tuple[int, ...]  # the GitLab host's ports the VPS forwards to (home ports)
    mode: ForwardingMode
    backup_sftp: bool = False  # the GitLab host's backups go to the VPS's sshd (SFTP, over the tunnel)
    subnet6: ipaddress.IPv6Network | None = None  # tunnel.ipv6_subnet with tunnel.ipv6: each rule gets its IPv6 twin

    def member(self, name: str) -> Member:
        found = [m for m in self.members if m.name == name]
        if len(found) != 1:
            raise ValueError(f"host {name!r} is not one member of the tunnel ({', '.join(self.names)})")
        return found[0]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def with_role(self, role: Role) -> list[Member]:
        return [m for m in self.members if m.role == role]


def segment_settings(
    cfg: StackConfig,
    addresses: Mapping[str, ipaddress.IPv4Address],
    interface: str = "wg0",
    *,
    forge_host: str | None = None,
    services: Sequence[ForwardedPort] | None = None,
    tunnel_ports: Sequence[int] = (),
    addresses6: Mapping[str, ipaddress.IPv6Address] | None = None,
) -> SegmentSettings:
    """SegmentSettings from a validated StackConfig and the tunnel addresses (tunnel_addresses).

    ``forge_host`` and ``services``: the forge's host and published ports (Forge.host,
    Forge.services); by default the host with role gitlab and forwarding.ports.
    ``tunnel_ports``: the forge host's ports runners reach over the tunnel only
    (Forge.tunnel_ports: Woodpecker's gRPC), allowed to runners as the services are.
    ``addresses6``: the tunnel IPv6 addresses (tunnel_addresses6) with tunnel.ipv6, else none."""
    subnet = cfg.tunnel.subnet
    assert isinstance(subnet, ipaddress.IPv4Network)  # config refuses IPv6 tunnel subnets
    admin_ssh = cfg.admin_ssh_port
    forge_host = cfg.gitlab_host.name if forge_host is None else forge_host
    ports = cfg.forwarding.ports if services is None else services

    def role(name: str, roles: Iterable[str]) -> Role:
        return "vps" if "vps" in roles else "gitlab" if name == forge_host else "runner"

    six = addresses6 or {}
    members = tuple(
        Member(
            h.name,
            role(h.name, h.roles),
            addresses[h.name],
            admin_ssh if "vps" in h.roles else h.ssh_port,
            six.get(h.name),
        )
        for h in cfg.hosts
    )
    return SegmentSettings(
        interface=interface,
        subnet=subnet,
        members=members,
        admins=tuple(cfg.tunnel.admin_peers),
        runner_ports=tuple(sorted({p.home_port for p in ports if p.service in RUNNER_SERVICES} | set(tunnel_ports))),
        forwarded_ports=tuple(sorted({p.home_port for p in ports})),
        mode=cfg.forwarding.mode,
        backup_sftp=cfg.backup.enabled and cfg.forge == "gitlab" and cfg.backup.repository is None,
        subnet6=cfg.tunnel.ipv6_subnet if six else None,
    )


def _check(s: SegmentSettings) -> None:
    if not _IFNAME.match(s.interface):
        raise ValueError(f"interface {s.interface!r} is not an interface name")
    if s.mode not in ("snat", "preserve-source"):
        raise ValueError(f"mode {s.mode!r} is not snat or preserve-source")
    if [m.role for m in s.members].count("vps") != 1 or [m.role for m in s.members].count("gitlab") != 1:
        raise ValueError("the tunnel needs exactly one vps and one gitlab member")
    for m in s.members:
        if m.address not in s.subnet:
            raise ValueError(f"{m.name}: tunnel address {m.address} is outside {s.subnet}")
        if (m.address6 is None) != (s.subnet6 is None) or (m.address6 and s.subnet6 and m.address6 not in s.subnet6):
            raise ValueError(f"{m.name}: tunnel IPv6 address {m.address6} does not fit tunnel IPv6 subnet {s.subnet6}")
        if not 1 <= m.ssh_port <= 65535 or isinstance(m.ssh_port, bool):
            raise ValueError(f"{m.name}: ssh_port {m.ssh_port!r} is not a port number (1-65535)")
    for port in (*s.runner_ports, *s.forwarded_ports):
        if isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"port {port!r} is not a port number (1-65535)")
    if not s.forwarded_ports:
        raise ValueError("no forwarded port: the GitLab host would accept nothing through the tunnel")
    for name in s.admins:
        s.member(name)


def _set(items: Iterable[object]) -> str:
    values = [str(i) for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _header(s: SegmentSettings, host: Member) -> list[str]:
    return [
        "#!/usr/sbin/nft -f",
        f"# forgeway tunnel segmentation on {host.name} ({host.role}): table {FAMILY} {TABLE}, and nothing else.",
        f"# Default deny for what arrives through {s.interface}; what is allowed is listed below, rule by rule.",
        "# Generated by components/render/segment.py; do not edit: the next deploy replaces it.",
        "#",
        "# Declare the table, so the delete below also works on a first load; delete it; define",
        f"# it whole. nft -f applies the file as one transaction: table {FAMILY} {TABLE} is replaced",
        "# atomically, as often as it is loaded, and no other table is touched.",
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        "",
        f"table {FAMILY} {TABLE} {{",
    ]


def _c(text: str) -> str:
    assert '"' not in text and "\n" not in text
    return f'comment "segment: {text}"'


Address = Callable[[Member], object]
# How each family says "an echo request" (the IPv4 text is what tables without tunnel.ipv6 have).
_PING = {"ip": "ip protocol icmp icmp type echo-request", "ip6": "icmpv6 type echo-request"}


def _both(s: SegmentSettings, rule: Callable[[str, Address], str]) -> list[str]:
    """``rule(family, address_of)`` for IPv4 and, with tunnel.ipv6, its IPv6 twin (the same
    hosts by their tunnel IPv6 addresses): the IPv4 text stays as it was without tunnel.ipv6."""
    rules = [rule("ip", lambda m: m.address)]
    if s.subnet6 is not None:
        rules.append(rule("ip6", lambda m: m.address6))
    return rules


def _subnet(s: SegmentSettings, family: str) -> object:
    return s.subnet if family == "ip" else s.subnet6


def _admins_to_peer_ssh(tun: str, admins: list[Member], peer: Member) -> Callable[[str, Address], str]:
    return lambda f, a: (
        f"\t\tiifname {tun} oifname {tun} {f} saddr {_set(a(o) for o in admins)} {f} daddr {a(peer)} "
        f"tcp dport {peer.ssh_port} accept {_c(f'admin peers to the ssh of {peer.name}')}"
    )


def _vps_chains(s: SegmentSettings, vps: Member) -> list[str]:
    tun = f'"{s.interface}"'
    gitlab = s.with_role("gitlab")[0]
    runners = s.with_role("runner")
    admins = [s.member(n) for n in s.admins]
    peers = [m for m in s.members if m.role != "vps"]
    out = [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\t# Replies, and ICMP errors about allowed connections.",
        f"\t\tct state established,related accept {_c('replies')}",
        "\t\t# The internet -> the tunnel: only what our forwarding DNATed to the GitLab host.",
        *_both(
            s, lambda f, a: f"\t\toifname {tun} ct status dnat {f} daddr {a(gitlab)} accept {_c('forwarded to gitlab')}"
        ),
    ]
    if runners:
        out += _both(s, lambda f, a: (
            f"\t\tiifname {tun} oifname {tun} {f} saddr {_set(a(r) for r in runners)} {f} daddr {a(gitlab)} "
            f"tcp dport {_set(s.runner_ports)} accept {_c('runners to gitlab https, ssh, registry')}"
        ))  # fmt: skip
    for peer in peers:
        others = [a for a in admins if a.name != peer.name and a.role != "vps"]
        if others:
            out += _both(s, _admins_to_peer_ssh(tun, others, peer))
    out += [
        f"\t\tiifname {tun} counter drop {_c('nothing else from the tunnel')}",
        f"\t\toifname {tun} counter drop {_c('nothing else into the tunnel')}",
        "\t}",
        "",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\tiifname != {tun} accept {_c('not from the tunnel: not ours to filter')}",
        f"\t\tct state established,related accept {_c('replies')}",
        *_both(s, lambda f, a: f"\t\t{_PING[f]} accept {_c('ping, for tunnel health')}"),
    ]
    peer_admins = [a for a in admins if a.role != "vps"]
    if peer_admins:
        out += _both(s, lambda f, a: (
            f"\t\t{f} saddr {_set(a(p) for p in peer_admins)} tcp dport {vps.ssh_port} accept "
            f"{_c('admin peers to the admin ssh')}"
        ))  # fmt: skip
    if s.backup_sftp and gitlab.name not in s.admins:
        out += _both(s, lambda f, a: (
            f"\t\t{f} saddr {a(gitlab)} tcp dport {vps.ssh_port} accept "
            f"{_c('gitlab to the admin ssh: its backups, sftp only (user forgeway-backup)')}"
        ))  # fmt: skip
    out += [
        f"\t\tcounter drop {_c('nothing else from the tunnel (admin ssh included)')}",
        "\t}",
    ]
    return out


def _peer_chains(s: SegmentSettings, host: Member) -> list[str]:
    tun = f'"{s.interface}"'
    vps = s.with_role("vps")[0]
    runners = s.with_role("runner")
    admins = [s.member(n) for n in s.admins if n != host.name]
    out = [
        "\t# Prerouting, not input: a docker-published port is DNATed at prerouting and then",
        "\t# forwarded; here (mangle, before docker's dstnat) the packet still has its address and port.",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
        f"\t\tiifname != {tun} accept {_c('not from the tunnel: not ours to filter')}",
        f"\t\tct state established,related accept {_c('replies')}",
        *_both(s, lambda f, a: f"\t\t{f} saddr {a(vps)} {_PING[f]} accept {_c('ping from the vps')}"),
    ]
    if host.role == "gitlab":
        out += _both(s, lambda f, a: (
            f"\t\t{f} saddr {a(vps)} tcp dport {_set(s.forwarded_ports)} accept "
            f"{_c('the vps to the forwarded ports')}"
        ))  # fmt: skip
        if s.mode == "preserve-source":
            # WireGuard lets a source outside the subnet in only from the VPS (cryptokey
            # routing), whose forward chain passes only what its forwarding DNATed.
            out += _both(s, lambda f, a: (
                f"\t\t{f} saddr != {_subnet(s, f)} tcp dport {_set(s.forwarded_ports)} accept "
                f"{_c('internet clients the vps forwarded, with their own address')}"
            ))  # fmt: skip
        if runners:
            out += _both(s, lambda f, a: (
                f"\t\t{f} saddr {_set(a(r) for r in runners)} tcp dport {_set(s.runner_ports)} accept "
                f"{_c('runners to gitlab https, ssh, registry')}"
            ))  # fmt: skip
    if admins:
        out += _both(s, lambda f, a: (
            f"\t\t{f} saddr {_set(a(m) for m in admins)} tcp dport {host.ssh_port} accept "
            f"{_c('admin peers to this host ssh')}"
        ))  # fmt: skip
    out += [
        f"\t\tcounter drop {_c('nothing else from the tunnel')}",
        "\t}",
    ]
    return out


def render_segment(settings: SegmentSettings, host: str) -> str:
    """Host ``host``'s ``table inet forgeway_segment``, as a file for ``nft -f``.

    Raises ValueError, naming what is wrong, for settings no correct table comes from.
    """
    s = settings
    _check(s)
    member = s.member(host)
    body = _vps_chains(s, member) if member.role == "vps" else _peer_chains(s, member)
    return "\n".join([*_header(s, member), *body, "}"]) + "\n"
