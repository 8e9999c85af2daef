"""The `make lab` data path: the CGNAT, the tunnel through it, MSS clamping and the hosts' own SSH."""

from __future__ import annotations

import json
import time

from tests.lab.make_lab import (
    VPS,
    MakeLab,
    assert_admin_ssh,
    client_trusts_the_stack_ca,
    ping,
    push_and_pull,
    seen_address,
)
from tools.lab.machine import ROOT_NAMESPACE


def test_home_reaches_the_internet_only_by_dialing_out(make_lab: MakeLab) -> None:
    client = make_lab.machine("client")
    assert ping(make_lab.machine("home"), VPS), "home cannot reach the VPS through the home router and the CGNAT"
    assert not ping(client, "198.51.100.2"), "the home LAN must not be reachable from the internet"
    assert not ping(client, "100.64.0.2"), "the CGNAT side must not be reachable from the internet"


def test_the_tunnel_is_up_through_the_cgnat_both_ways(make_lab: MakeLab) -> None:
    peers = {"home": "10.8.0.2", "runner-arm": "10.8.0.3", "runner-amd": "10.8.0.4"}
    for name in peers:
        assert ping(make_lab.machine(name), "10.8.0.1", tries=5), f"{name} cannot reach the VPS through the tunnel"
    vps = make_lab.machine("vps")
    for name, address in peers.items():
        assert ping(vps, address), f"the VPS cannot reach {name} through the tunnel"


def test_admin_ssh_on_the_vps_stays_reachable(make_lab: MakeLab) -> None:
    assert_admin_ssh(make_lab)  # after an apply


def test_home_keeps_its_lan_route_and_its_own_ssh(make_lab: MakeLab) -> None:
    route = make_lab.machine("home").succeed(["ip", "route", "show", "default"])
    assert route.startswith("default via 198.51.100.1"), route
    home = make_lab.host("home")
    scan = ROOT_NAMESPACE.execute(["ssh-keyscan", "-T", "3", "-t", "ed25519", home["address"]])
    assert home["host_key"].split()[1] in scan.stdout, "SSH to the home device from its LAN broke"


def test_a_lapsed_cgnat_mapping_comes_back_with_the_keepalive(make_lab: MakeLab) -> None:
    # Forget every UDP mapping of the CGNAT, as its timeout would.
    flushed = make_lab.machine("cgnat").execute(["conntrack", "-D", "-p", "udp"])
    assert flushed.returncode in (0, 1), flushed.stderr  # 1: nothing to delete
    started = time.monotonic()
    assert seen_address(make_lab, tries=10)
    assert time.monotonic() - started < 10, "the mapping took longer than two keepalives to return"


def _client_mss(lab: MakeLab, port: int = 443) -> int:
    """The MSS the client's side of a connection through the VPS settled on (the SYN-ACK's)."""
    probe = (
        f"import socket; s=socket.create_connection(('{VPS}',{port}),3);"
        "print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))"
    )
    return int(lab.machine("client").succeed(["python3", "-c", probe]))


def test_mss_is_clamped_on_syn_and_syn_ack_at_the_tunnel(make_lab: MakeLab) -> None:
    # The client's SYN offers MSS 1460 (its path is 1500). The home end offers 1460 too,
    # as GitLab behind a 1500-byte docker bridge would: a route with advmss 1460 back to
    # the VPS. The tunnel's MTU is 1420, so the VPS must bring both to 1380 at most. An
    # observer table that runs after ours counts the handshakes, and those still above.
    observer = """table inet lab-mss-observer {
  counter syns {}
  counter syns_too_big {}
  counter synacks {}
  counter synacks_too_big {}
  chain after_clamp {
    type filter hook forward priority 500;
    oifname "wg0" tcp flags & (syn|ack) == syn counter name syns
    oifname "wg0" tcp flags & (syn|ack) == syn tcp option maxseg size > 1380 counter name syns_too_big
    iifname "wg0" tcp flags & (syn|ack) == syn|ack counter name synacks
    iifname "wg0" tcp flags & (syn|ack) == syn|ack tcp option maxseg size > 1380 counter name synacks_too_big
  }
}
"""
    vps, home = make_lab.machine("vps"), make_lab.machine("home")
    vps.succeed(["nft", "-f", "-"], stdin=observer)
    try:
        home.succeed(["ip", "route", "add", "10.8.0.1/32", "dev", "wg0", "advmss", "1460"])
        client_mss = _client_mss(make_lab)
        counters = vps.succeed(["nft", "-j", "list", "counters", "table", "inet", "lab-mss-observer"])
        packets = {
            c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(counters)["nftables"] if "counter" in c
        }
        assert packets["syns"] >= 1 and packets["synacks"] >= 1, packets
        assert packets["syns_too_big"] == 0, f"{packets['syns_too_big']} SYN(s) entered wg0 with MSS above 1380"
        assert packets["synacks_too_big"] == 0, f"{packets['synacks_too_big']} SYN-ACK(s) left wg0 above 1380"
        assert client_mss <= 1380, f"the SYN-ACK reached the client with MSS {client_mss}"
    finally:
        vps.execute(["nft", "delete", "table", "inet", "lab-mss-observer"])
        home.execute(["ip", "route", "del", "10.8.0.1/32", "dev", "wg0"])


def test_bulk_transfer_works_when_icmp_fragmentation_needed_is_dropped(make_lab: MakeLab) -> None:
    # A black-hole path: no "fragmentation needed" gets back, so only the clamped MSS
    # keeps segments small enough for the tunnel.
    blackhole = """table inet lab-pmtu-blackhole {
  chain drop_frag_needed {
    type filter hook forward priority -300;
    icmp type destination-unreachable icmp code frag-needed drop
  }
}
"""
    vps = make_lab.machine("vps")
    vps.succeed(["nft", "-f", "-"], stdin=blackhole)
    try:
        # 4 MiB of a sparse file nginx serves: one HTTPS download, home -> client.
        got = make_lab.machine("client").execute([
            "curl", "-sS", "--max-time", "60", "--cacert", make_lab.ca_certificate(),
            "-r", f"0-{(4 << 20) - 1}", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
            f"https://{VPS}/-/bulk",
        ], timeout=90)  # fmt: skip
        assert got.stdout == f"206 {4 << 20}", f"bulk download stalled: {got.stdout} {got.stderr}"
        # ... and client -> home: push an image with a 4 MiB random layer to the registry.
        client_trusts_the_stack_ca(make_lab)
        push_and_pull(make_lab, "client", size=4 << 20)
    finally:
        vps.execute(["nft", "delete", "table", "inet", "lab-pmtu-blackhole"])
