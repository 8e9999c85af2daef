"""The IPv6-only runner host of `make lab` (issue 20): runner-arm has no IPv4 address at all
on its uplink (2001:db8:6::2, routed by the ISP's router, the CGNAT), and this machine has
no route to it: the deployer reaches it through the VPS (``hosts[].jump_host: vps``), so
every command and docker call of the session's `make lab` on it went through the jump.

Checked on the session lab (no apply of its own): no IPv4 on its uplink, its sshd answers
only through the VPS's network; it dials the tunnel over IPv6 (the VPS's ``wg show`` has
its IPv6 address as the peer's endpoint, with a recent handshake) and still has its tunnel
IPv4 address inside; its runner verified its token with GitLab, and both the runner's
requests and a `docker push` from the host reached GitLab's ports on the VPS over IPv6
(nft counters on the VPS by source).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.lab.make_lab import MakeLab, ping, push_and_pull
from tools.lab.hosts import sshd_answers
from tools.lab.layout import V6ONLY_LAN, VPS_ADDRESS_V6
from tools.lab.machine import Machine

HOST = "runner-arm"
ADDRESS = f"{V6ONLY_LAN}2"
WG_PORT = 51820  # Pulumi.lab.yaml tunnel.listen_port
# On the VPS: what the IPv6-only runner host sends to GitLab's public ports (443, the registry's 5050).
FROM_RUNNER = f"""table inet lab-v6only-runner {{
  counter https6 {{}}
  counter registry6 {{}}
  chain pre {{
    type filter hook prerouting priority -300;
    ip6 saddr {ADDRESS} ip6 daddr {VPS_ADDRESS_V6} tcp dport 443 counter name https6
    ip6 saddr {ADDRESS} ip6 daddr {VPS_ADDRESS_V6} tcp dport 5050 counter name registry6
  }}
}}
"""


@contextmanager
def _counting(vps: Machine) -> Iterator[None]:
    vps.succeed(["nft", "-f", "-"], stdin=FROM_RUNNER)
    try:
        yield
    finally:
        vps.execute(["nft", "delete", "table", "inet", "lab-v6only-runner"])


def _counters(vps: Machine) -> dict[str, int]:
    listed = json.loads(vps.succeed(["nft", "-j", "list", "counters", "table", "inet", "lab-v6only-runner"]))
    return {c["counter"]["name"]: c["counter"]["packets"] for c in listed["nftables"] if "counter" in c}


def test_it_has_no_ipv4_on_its_uplink_and_is_reached_through_the_vps(make_lab: MakeLab) -> None:
    host = make_lab.host(HOST)
    assert (host["address"], host["address6"], host["jump_host"], host["ipv6_only"]) == (ADDRESS, ADDRESS, "vps", True)
    runner = make_lab.machine(HOST)
    assert runner.succeed(["ip", "-4", "addr", "show", "dev", "eth0"]).strip() == "", "IPv4 on the uplink"
    assert runner.succeed(["ip", "-4", "route", "show", "default"]).strip() == "", "an IPv4 default route"
    assert f"{ADDRESS}/64" in runner.succeed(["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"])
    # Its sshd answers through the VPS's network, and not from this machine (no route here).
    assert sshd_answers(ADDRESS, host["ssh_port"], host["host_key"], via="vps"), "not through the VPS"
    assert not sshd_answers(ADDRESS, host["ssh_port"], host["host_key"]), "reachable without the jump host"


def test_it_dials_the_tunnel_over_ipv6(make_lab: MakeLab) -> None:
    runner, vps = make_lab.machine(HOST).inside, make_lab.machine("vps").inside
    key = runner.succeed(["wg", "show", "wg0", "public-key"]).strip()
    # The runner's peer (the VPS) is the VPS's public IPv6 address (tunnel_endpoint_family: ipv6).
    assert runner.succeed(["wg", "show", "wg0", "endpoints"]).split()[1] == f"[{VPS_ADDRESS_V6}]:{WG_PORT}"
    # Inside the tunnel it keeps its tunnel IPv4 address, and reaches the VPS's.
    assert ping(make_lab.machine(HOST), "10.8.0.1", tries=5), "no IPv4 inside the tunnel"
    endpoints = dict(line.split() for line in vps.succeed(["wg", "show", "wg0", "endpoints"]).splitlines())
    assert endpoints[key].startswith(f"[{ADDRESS}]:"), endpoints
    handshakes = dict(line.split() for line in vps.succeed(["wg", "show", "wg0", "latest-handshakes"]).splitlines())
    assert time.time() - int(handshakes[key]) < 180, f"no recent handshake with {HOST}: {handshakes[key]}"


def test_its_runner_is_verified_and_it_pushes_to_the_registry_over_ipv6(make_lab: MakeLab) -> None:
    runner, vps = make_lab.machine(HOST), make_lab.machine("vps")
    with _counting(vps):
        # The runner stand-in verifies its token, then asks for jobs every check_interval (3 s).
        deadline = time.monotonic() + 60
        while "Verifying runner... is valid" not in (logs := runner.docker_execute("logs", "forgeway-runner").stdout):
            assert time.monotonic() < deadline, f"{HOST}'s runner did not verify its token:\n{logs[-1500:]}"
            time.sleep(1)
        deadline = time.monotonic() + 30
        while _counters(vps)["https6"] == 0:
            assert time.monotonic() < deadline, "the runner's requests to GitLab did not come over IPv6"
            time.sleep(1)
        push_and_pull(make_lab, HOST, 1 << 20)
        assert _counters(vps)["registry6"] > 0, "the push did not reach the registry over IPv6"
