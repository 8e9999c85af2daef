"""The forge over IPv6 through the VPS (`make lab`, issue 20): the lab stack has tunnel.ipv6
and forwarding.ipv6, and the public names have AAAA (2001:db8::10) beside A.

From the client: HTTPS (`curl -6`), SSH on 22 and a `docker push` reach the forge over
IPv6 only (the client's own table rejects IPv4 to the VPS, so nothing falls back to it); an
observer table on the forge host counts what arrives through the tunnel from which address:
in snat mode the VPS's tunnel IPv6 address, never the client's. (Preserve-source over
IPv6: the same HTTPS, SSH and push, and the client's address on the forge host and in
GitLab's log: test_lab_gitlab.py's mode switch, with this module's helpers.) And a bulk transfer
both ways with the VPS dropping every ICMPv6 packet-too-big: only the clamped MSS (tunnel
MTU - 60) keeps segments small enough for wg0.

GitLab's container publishes its ports on the tunnel IPv4 address only; the forge host's
own table ip6 forgeway_forge DNATs its tunnel IPv6 address to the container's fixed IPv6
address on GitLab's dual-stack docker network (issue 20), so nginx sees the connection's
real source: the VPS's tunnel IPv6 address here (snat), the client's in preserve-source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from tests.lab.make_lab import MakeLab, client_trusts_the_stack_ca, gitlab_ssh_key, push_and_pull
from tools.lab.layout import CLIENT_V6, PUBLIC_NAMES, VPS_ADDRESS, VPS_ADDRESS_V6
from tools.lab.machine import Machine

NAME = PUBLIC_NAMES[0]
VPS_TUNNEL6 = "fd77:6179:7761::1"  # tunnel.ipv6_subnet's default prefix, the VPS's host part

# On the client: IPv4 to the VPS's public ports is refused at once; IPv6 to them is counted.
IPV6_ONLY = f"""table inet lab-ipv6-only {{
  counter to_vps6 {{}}
  chain out {{
    type filter hook output priority 0;
    ip daddr {VPS_ADDRESS} tcp dport {{ 22, 80, 443, 5050 }} reject with tcp reset
    ip6 daddr {VPS_ADDRESS_V6} tcp dport {{ 22, 443, 5050 }} counter name to_vps6
  }}
}}
"""
# On the forge host: what the tunnel brings to the forwarded ports, by source.
FROM_WHOM = f"""table inet lab-ipv6-sources {{
  counter from_client6 {{}}
  counter from_vps6 {{}}
  chain pre {{
    type filter hook prerouting priority -300;
    iifname "wg0" ip6 saddr {CLIENT_V6} tcp dport {{ 443, 2222, 5050 }} counter name from_client6
    iifname "wg0" ip6 saddr {VPS_TUNNEL6} tcp dport {{ 443, 2222, 5050 }} counter name from_vps6
  }}
}}
"""


def _counters(machine: Machine, table: str) -> dict[str, int]:
    listed = json.loads(machine.succeed(["nft", "-j", "list", "counters", "table", "inet", table]))
    return {c["counter"]["name"]: c["counter"]["packets"] for c in listed["nftables"] if "counter" in c}


@contextmanager
def _table(machine: Machine, text: str, name: str) -> Iterator[None]:
    machine.succeed(["nft", "-f", "-"], stdin=text)
    try:
        yield
    finally:
        machine.execute(["nft", "delete", "table", "inet", name])


@contextmanager
def sources_seen_by_the_forge(lab: MakeLab) -> Iterator[dict[str, int]]:
    """Counts, by source (the client's IPv6, the VPS's tunnel IPv6), what the tunnel brings to
    the forge host's forwarded ports while the block runs; the dict is filled when it ends."""
    seen: dict[str, int] = {}
    home = lab.machine("home")
    with _table(home, FROM_WHOM, "lab-ipv6-sources"):
        yield seen
        seen.update(_counters(home, "lab-ipv6-sources"))


def curl6(lab: MakeLab, url: str, *extra: str) -> str:
    """``curl -6`` from the client, the stack's CA trusted: ``<status> <body or what -w says>``."""
    got = lab.machine("client").execute(
        ["curl", "-6", "-sS", "--max-time", "60", "--cacert", lab.ca_certificate(), *extra, url], timeout=90
    )
    assert got.returncode == 0, f"curl -6 {url}: {got.stderr.strip()}"
    return got.stdout.strip()


@contextmanager
def ipv6_only_client(lab: MakeLab) -> Iterator[dict[str, int]]:
    """The client with IPv4 to the VPS's public ports refused, so nothing falls back to it;
    the dict, filled when the block ends: the IPv6 packets it sent them (``to_vps6``)."""
    client = lab.machine("client")
    sent: dict[str, int] = {}
    with _table(client, IPV6_ONLY, "lab-ipv6-only"):
        four = client.execute(["curl", "-4", "-ksS", "--max-time", "5", f"https://{NAME}/"])
        assert four.returncode == 7, f"IPv4 to the VPS must be refused here: {four.returncode} {four.stderr}"
        yield sent
        sent.update(_counters(client, "lab-ipv6-only"))


def ssh_and_push_over_ipv6(lab: MakeLab) -> None:
    """From the client (inside :func:`ipv6_only_client`): public 22 lands on GitLab's SSH in
    the container, and a docker push and pull go through the registry."""
    keyscan = lab.machine("client").execute(["ssh-keyscan", "-6", "-T", "5", "-t", "ed25519", NAME])
    assert gitlab_ssh_key(lab) in keyscan.stdout, keyscan.stdout + keyscan.stderr
    client_trusts_the_stack_ca(lab)
    push_and_pull(lab, "client", size=64 << 10)


def test_https_ssh_and_a_push_reach_the_forge_over_ipv6_and_snat_shows_the_vps(make_lab: MakeLab) -> None:
    with ipv6_only_client(make_lab) as sent, sources_seen_by_the_forge(make_lab) as seen:
        # nginx answers with the address it saw: the VPS's (snat), not docker's bridge gateway
        assert curl6(make_lab, f"https://{NAME}/") == f"forgeway-gitlab-standin 443 {VPS_TUNNEL6}"
        assert curl6(make_lab, f"https://{NAME}:5050/v2/", "-o", "/dev/null", "-w", "%{http_code}") == "401"
        ssh_and_push_over_ipv6(make_lab)
    assert sent["to_vps6"] > 0, sent
    assert seen["from_vps6"] > 0 and seen["from_client6"] == 0, f"snat: the forge must see the VPS only: {seen}"


def test_bulk_transfer_over_ipv6_works_when_packet_too_big_is_dropped(make_lab: MakeLab) -> None:
    # A black-hole path: no ICMPv6 packet-too-big gets anywhere from the VPS, so only the
    # clamped MSS keeps segments small enough for the tunnel.
    blackhole = """table inet lab-pmtu6-blackhole {
  counter dropped {}
  chain forward { type filter hook forward priority -300; icmpv6 type packet-too-big counter name dropped drop; }
  chain out { type filter hook output priority -300; icmpv6 type packet-too-big counter name dropped drop; }
}
"""
    vps, client = make_lab.machine("vps"), make_lab.machine("client")
    with _table(vps, blackhole, "lab-pmtu6-blackhole"), _table(client, IPV6_ONLY, "lab-ipv6-only"):
        # 4 MiB of a sparse file nginx serves: one HTTPS download, home -> client.
        size = 4 << 20
        got = curl6(make_lab, f"https://{NAME}/-/bulk", "-r", f"0-{size - 1}", "-o", "/dev/null", "-w",
                    "%{http_code} %{size_download}")  # fmt: skip
        assert got == f"206 {size}", f"bulk download over IPv6 stalled: {got}"
        # ... and client -> home: a 4 MiB random layer pushed to the registry over IPv6.
        client_trusts_the_stack_ca(make_lab)
        push_and_pull(make_lab, "client", size=size)
        assert _counters(client, "lab-ipv6-only")["to_vps6"] > 0
