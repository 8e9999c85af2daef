"""A runner host's ``/etc/docker/daemon.json``: the keys forgeway owns, rendered from config.

Settings in, a JSON object out: no Pulumi, no I/O. forgeway owns only ``OWNED_KEYS``; the
host script merges them into whatever file the host has (components/scripts/daemon_merge.py)
and keeps the original to restore on delete.

* Logs: ``json-file`` rotated at ``log_max_size_mb`` x ``log_max_files`` (docker's default
  keeps every byte a job ever printed).
* ``mtu``: docker's bridges default to 1500; a host whose traffic leaves through the
  tunnel would send jobs' full-size packets into a smaller pipe, so bridges get the tunnel
  MTU when the host is a tunnel peer.
* ``default-address-pools``: user-defined networks (one per job with FF_NETWORK_PER_BUILD)
  come from these, which config checked against the tunnel subnet and every LAN.
* IPv6: docker0 gets a fixed /64 (``fixed-cidr-v6``) and ``ip6tables`` so containers reach
  IPv6 hosts through NAT like IPv4 (docker before 27 accepts ``ip6tables`` only with
  ``experimental``: the merge adds it for such daemons, see ``LEGACY_IPV6``). Per-job
  networks get IPv6 from ``default-address-pools`` entries of the same prefix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LEGACY_IPV6", "OWNED_KEYS", "DaemonSettings", "host_ipv6_prefixes", "render_daemon_json"]

OWNED_KEYS = frozenset(
    {
        "log-driver",
        "log-opts",
        "mtu",
        "ipv6",
        "fixed-cidr-v6",
        "ip6tables",
        "experimental",
        "default-address-pools",
        "registry-mirrors",
    }
)
# Added by the merge when the daemon's major version is below this (ip6tables was experimental).
LEGACY_IPV6 = {"below_major": 27, "keys": {"experimental": True}}


@dataclass(frozen=True)
class DaemonSettings:
    address_pools: Sequence[tuple[str, int]]  # (IPv4 base, prefix length)
    mtu: int | None = None  # the tunnel MTU for tunnel peers; None: docker's default
    ipv6_bridge: str | None = None  # docker0's /64; None: IPv6 off
    ipv6_pool: str | None = None  # the per-job networks' pool, /64 each (with ipv6_bridge)
    registry_mirrors: Sequence[str] = ()
    log_max_size_mb: int = 10
    log_max_files: int = 3


def host_ipv6_prefixes(prefix: ipaddress.IPv6Network, index: int) -> tuple[str, str]:
    """(docker0's /64, the per-job pool /57) of runner host number ``index`` (0-based).

    The stack's prefix is split into /56s, one per runner host; a host's /56 into two /57s:
    docker0 takes the first /64 of the first, per-job networks are carved (/64 each) from
    the second, so the two never overlap."""
    per_host = list(prefix.subnets(new_prefix=56)) if prefix.prefixlen <= 56 else []
    if index >= len(per_host):
        raise ValueError(f"runners.ipv6_prefix {prefix} has no /56 left for runner host number {index + 1}")
    first, second = per_host[index].subnets(new_prefix=57)
    return str(next(first.subnets(new_prefix=64))), str(second)


def render_daemon_json(s: DaemonSettings) -> dict[str, Any]:
    """The keys forgeway sets (a subset of OWNED_KEYS; the others are left to the host)."""
    pools: list[dict[str, Any]] = [{"base": base, "size": size} for base, size in s.address_pools]
    ours: dict[str, Any] = {
        "log-driver": "json-file",
        "log-opts": {"max-size": f"{s.log_max_size_mb}m", "max-file": str(s.log_max_files)},
    }
    if s.mtu is not None:
        ours["mtu"] = s.mtu
    if s.ipv6_bridge is not None:
        ours.update({"ipv6": True, "fixed-cidr-v6": s.ipv6_bridge, "ip6tables": True})
        if s.ipv6_pool is not None:
            pools.append({"base": s.ipv6_pool, "size": 64})
    ours["default-address-pools"] = pools
    if s.registry_mirrors:
        ours["registry-mirrors"] = list(s.registry_mirrors)
    unknown = set(ours) - OWNED_KEYS
    assert not unknown, f"render_daemon_json set keys it does not own: {unknown}"
    return ours
