"""Benchmark on the lab (root): forwarded vs bare-tunnel throughput, no-op re-apply time.

Not a timed test: it prints its figures. Uses a running lab if there is one, else
brings one up and takes it down again. Both transfers download the same bytes over
HTTPS from GitLab's (stand-in) nginx in its container on the home device (``/-/bulk``):
once from the client through the VPS's forwarding (DNAT, tunnel, CGNAT, docker's
published port), once from the VPS straight over the tunnel to the same published
port, so their ratio is the cost of the forwarding itself. Where the lab is dual stack the
same pair over IPv6 (the VPS's public IPv6 address; the home device's tunnel IPv6 address,
which the forge host's table ip6 forgeway_forge DNATs to GitLab's container on both
paths). Both paths run on this one
machine's CPU: the figures compare the paths with each other, not with real links.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from tests.stacks import ROOT

SIZE = 128 << 20
RUNS = 5
LAB = [sys.executable, "-m", "tools.lab"]
HOME_TUNNEL_V6 = "fd77:6179:7761::2"  # home's tunnel IPv6 (tunnel.ipv6_subnet's default, host 2)


def fetch(netns: str, url: str, cafile: str) -> float:
    """MB/s of one HTTPS download of SIZE bytes (a range of the stand-in's bulk file)."""
    argv = ["ip", "netns", "exec", netns, "curl", "-sS", "--fail", "--cacert", cafile, "-r", f"0-{SIZE - 1}",
            "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    moved, seconds = done.stdout.split()
    if int(moved) != SIZE:
        raise RuntimeError(f"{url} from {netns}: {moved} of {SIZE} bytes")
    return int(moved) / float(seconds) / 1e6


def main() -> int:
    started_here = not (ROOT / ".lab" / "topology.json").exists()
    if started_here:
        subprocess.run([*LAB, "up"], cwd=ROOT, check=True, capture_output=True)
    try:
        # Alternate the two paths so load on this shared machine hits both alike.
        cafile = str(ROOT / ".lab" / "ca.crt")
        described = json.loads((ROOT / ".lab" / "topology.json").read_text())
        # Both families where the lab is dual stack (tools/lab/config.py: tunnel.ipv6, forwarding.ipv6).
        families = {"IPv4": ("203.0.113.10", "10.8.0.2")}
        if described.get("vps_public_address6"):
            families["IPv6"] = (f"[{described['vps_public_address6']}]", f"[{HOME_TUNNEL_V6}]")
        ratios: dict[str, tuple[float, float]] = {}
        for family, (public, tunnel) in families.items():
            forwarded_runs, bare_runs = [], []
            for _ in range(RUNS):
                forwarded_runs.append(fetch("fwl-client", f"https://{public}/-/bulk", cafile))
                bare_runs.append(fetch("fwl-vps", f"https://{tunnel}/-/bulk", cafile))
            ratios[family] = statistics.median(forwarded_runs), statistics.median(bare_runs)
        began = time.perf_counter()
        subprocess.run([*LAB, "up"], cwd=ROOT, check=True, capture_output=True)
        reapply = time.perf_counter() - began
    finally:
        if started_here:
            subprocess.run([*LAB, "down"], cwd=ROOT, check=False, capture_output=True)
    print(f"lab throughput (median of {RUNS} alternating HTTPS runs, {SIZE >> 20} MiB each, wireguard-go):")
    for family, (forwarded, bare) in ratios.items():
        print(f"  {family} client -> home through the VPS forwarding: {forwarded:8.1f} MB/s")
        print(f"  {family} VPS -> home over the bare tunnel:          {bare:8.1f} MB/s")
        print(f"  {family} ratio forwarded/bare:                      {forwarded / bare:8.2f} (target >= 0.9)")
    print(f"no-op re-apply of the lab stack:             {reapply:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
