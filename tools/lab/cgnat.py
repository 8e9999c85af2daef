"""`python -m tools.lab.cgnat forget`: the lab's CGNAT forgets the home side's UDP mappings.

A carrier-grade NAT may drop a mapping at any time (a restart, memory pressure, a
timeout) and give the next packet another public port. Here the CGNAT is the
namespace ``fwl-cgnat`` of `make lab` (tools/lab/topology.py: it masquerades 100.64.0.0/24 out of
``eth0``). ``forget``:

1. reads the public ports its UDP mappings of the home side use now (``conntrack -L``);
2. loads a table ``lab-cgnat-forget`` whose NAT chain runs before tools/lab/topology.py's one and
   masquerades the home side's UDP to a window of ports that holds none of them (the
   first NAT chain that maps a new connection decides its mapping), so the next packet
   cannot get an old port back;
3. deletes those mappings (``conntrack -D``);

and prints one JSON line, ``{"event": "cgnat-forget", "at": <time.time()>, ...}``, with
``at`` taken right after the deletion. The table replaces the one of an earlier forget
and goes with the namespace at `make lab-down`. Needs root and ``conntrack``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from tools.lab.machine import Machine

NETNS = "fwl-cgnat"
HOME_SIDE = "100.64.0.0/24"  # what tools/lab/topology.py's CGNAT masquerades
OUT_IF = "eth0"
TABLE = "lab-cgnat-forget"
PORTS = (1024, 65535)
WINDOW = 2048


def _in(netns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return Machine(netns, netns).execute(list(argv), stdin=stdin, timeout=30)


def public_ports(conntrack_listing: str) -> set[int]:
    """The public ports of masqueraded UDP flows: each entry's reply tuple's ``dport``.

    A line reads ``udp 17 9 src=100.64.0.2 dst=203.0.113.10 sport=A dport=51820
    src=203.0.113.10 dst=203.0.113.20 sport=51820 dport=P ...``: the second ``dport=``.
    """
    ports = set()
    for line in conntrack_listing.splitlines():
        dports = re.findall(r"\bdport=(\d+)", line)
        if len(dports) >= 2:
            ports.add(int(dports[1]))
    return ports


def port_window(taken: set[int], rng: random.Random) -> tuple[int, int]:
    """A window of WINDOW ports inside PORTS that holds none of ``taken``."""
    starts = list(range(PORTS[0], PORTS[1] - WINDOW + 2, WINDOW))
    rng.shuffle(starts)
    for start in starts:
        end = start + WINDOW - 1
        if not any(start <= port <= end for port in taken):
            return start, end
    raise RuntimeError(f"no window of {WINDOW} ports free of {sorted(taken)}")


def ruleset(window: tuple[int, int]) -> str:
    return f"""table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat - 1; policy accept;
    ip saddr {HOME_SIDE} oifname "{OUT_IF}" meta l4proto udp masquerade to :{window[0]}-{window[1]}
  }}
}}
"""


def forget(netns: str = NETNS) -> int:
    if not Path("/run/netns", netns).exists():
        print(f"lab_cgnat: no namespace {netns}: bring the lab up first (make lab)", file=sys.stderr)
        return 1
    listing = _in(netns, "conntrack", "-L", "-p", "udp", "--orig-src", HOME_SIDE)
    if listing.returncode != 0:
        print(f"lab_cgnat: conntrack -L failed: {listing.stderr.strip()}", file=sys.stderr)
        return 1
    old = public_ports(listing.stdout)
    window = port_window(old, random.Random())  # noqa: S311 (a lab port window, no secret)
    loaded = _in(netns, "nft", "-f", "-", stdin=ruleset(window))
    if loaded.returncode != 0:
        print(f"lab_cgnat: nft -f failed: {loaded.stderr.strip()}", file=sys.stderr)
        return 1
    deleted = _in(netns, "conntrack", "-D", "-p", "udp", "--orig-src", HOME_SIDE)
    at = time.time()
    if deleted.returncode not in (0, 1):  # 1: nothing matched (no mapping to forget)
        print(f"lab_cgnat: conntrack -D failed: {deleted.stderr.strip()}", file=sys.stderr)
        return 1
    print(json.dumps({"event": "cgnat-forget", "at": at, "old_ports": sorted(old), "new_ports": list(window)}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Events of the lab's CGNAT (namespace fwl-cgnat).")
    parser.add_argument("action", choices=["forget"], help="forget the home side's UDP mappings; new public ports")
    parser.add_argument("--netns", default=NETNS, help=f"the CGNAT's namespace (default {NETNS}; tests use their own)")
    args = parser.parse_args()
    return forget(args.netns)


if __name__ == "__main__":
    sys.exit(main())
