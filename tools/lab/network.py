"""The lab's network: namespaces, veths, bridges and NAT as `make lab` builds them (tools/lab/topology.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tools.lab.layout import (
    CGNAT_LAN,
    CGNAT_WAN,
    CGNAT_WAN_V6,
    CLIENT,
    CLIENT_V6,
    DEPLOYER_INTERNET,
    DEPLOYER_INTERNET_V6,
    DEPLOYER_LAN,
    HOMEGW_WAN,
    HOSTS,
    LAN,
    LAN_V6,
    PREFIX,
    V6ONLY_LAN,
    HostSpec,
)
from tools.lab.machine import ROOT_NAMESPACE, Machine

DEPLOYER = ROOT_NAMESPACE  # this machine's root namespace, where the deployer runs


def ns(name: str) -> str:
    return f"{PREFIX}{name}"


def machine(name: str) -> Machine:
    """The lab's namespace ``fwl-<name>`` as a Machine (its network only, this machine's tools)."""
    return Machine(name, ns(name))


def _veth(a_ns: str | None, a_if: str, b_ns: str, b_if: str) -> None:
    """A veth pair between two namespaces (None: the root namespace)."""
    tmp_a, tmp_b = f"fwt{os.getpid() % 10000}a", f"fwt{os.getpid() % 10000}b"
    DEPLOYER.succeed(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
    DEPLOYER.succeed(["ip", "link", "set", tmp_b, "netns", b_ns])
    DEPLOYER.succeed(["ip", "-n", b_ns, "link", "set", tmp_b, "name", b_if])
    if a_ns is not None:
        DEPLOYER.succeed(["ip", "link", "set", tmp_a, "netns", a_ns])
        DEPLOYER.succeed(["ip", "-n", a_ns, "link", "set", tmp_a, "name", a_if])
    else:
        DEPLOYER.succeed(["ip", "link", "set", tmp_a, "name", a_if])


def _up(netns: str | None, ifname: str, cidr: str | None = None, master: str | None = None) -> None:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    if cidr:
        # IPv6 without duplicate address detection: the lab's addresses are unique, and DAD
        # would leave them "tentative" (unusable) for a second or two after each (re)boot.
        nodad = ["nodad"] if ":" in cidr else []
        DEPLOYER.succeed([*prefix, "addr", "add", cidr, "dev", ifname, *nodad])
    if master:
        DEPLOYER.succeed([*prefix, "link", "set", ifname, "master", master])
    DEPLOYER.succeed([*prefix, "link", "set", ifname, "up"])


def _bridge(netns: str, name: str) -> None:
    DEPLOYER.succeed(["ip", "-n", netns, "link", "add", name, "type", "bridge"])
    DEPLOYER.succeed(["ip", "-n", netns, "link", "set", name, "up"])


def _nat(netns: str, out_if: str, source: str) -> None:
    ruleset = f"""table ip lab-nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {source} oifname "{out_if}" masquerade
  }}
}}
"""
    router = Machine(netns, netns)
    router.succeed(["nft", "-f", "-"], stdin=ruleset)
    router.succeed(["sysctl", "-qw", "net.ipv4.ip_forward=1"])


def _deployer_link(ifname: str, address: str, peers: list[str], address6: str | None = None,
                   peers6: Sequence[str] = ()) -> None:  # fmt: skip
    """The root namespace's end of a segment: a /32 and a /32 route per lab host on it
    (IPv6: a /128 and a /128 route per host, for the same reason).

    Never the segment's whole /24: this machine may reach real services at addresses in
    the same documentation ranges (its Debian mirror has been at 203.0.113.80), and a
    /24 here would send their traffic into the lab. The hosts still reach the deployer:
    their own /24 is on-link and the root namespace answers ARP for its /32."""
    _up(None, ifname, f"{address}/32")
    for peer in peers:
        DEPLOYER.succeed(["ip", "route", "add", f"{peer}/32", "dev", ifname, "src", address])
    # This machine takes no router advertisement from a lab segment (its default route stays its own).
    DEPLOYER.succeed(["sysctl", "-qw", f"net.ipv6.conf.{ifname}.accept_ra=0"])
    if address6 is not None:
        DEPLOYER.succeed(["ip", "-6", "addr", "add", f"{address6}/128", "dev", ifname, "nodad"])
        for peer in peers6:
            DEPLOYER.succeed(["ip", "-6", "route", "add", f"{peer}/128", "dev", ifname, "src", address6])


def base_network(spec: HostSpec) -> list[list[str]]:
    """A lab host's own eth0 as its network configuration sets it at boot (`ip` arguments);
    a booting host's supervisor applies it again after each reboot (tools/lab/nspawn.py)."""
    if spec.segment == "v6only":  # no IPv4 address at all; its router is the CGNAT (an ISP's)
        return [["-6", "addr", "add", f"{spec.address6}/64", "dev", "eth0", "nodad"], ["link", "set", "eth0", "up"],
                ["-6", "route", "add", "default", "via", f"{V6ONLY_LAN}1"]]  # fmt: skip
    argv = [["addr", "add", f"{spec.address}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]]
    if spec.address6 is not None:  # dual stack on the internet segment
        argv.insert(1, ["-6", "addr", "add", f"{spec.address6}/64", "dev", "eth0", "nodad"])
        # The internet routes the IPv6-only network to the ISP's router.
        argv.append(["-6", "route", "add", f"{V6ONLY_LAN}/64", "via", CGNAT_WAN_V6])
    if spec.segment == "lan":
        argv.append(["route", "add", "default", "via", f"{LAN}.1"])
        # IPv6 on the LAN too (a ULA, no router): jobs' IPv6 reaches the other hosts.
        host = spec.address.rsplit(".", 1)[1]
        argv.append(["-6", "addr", "add", f"{LAN_V6}{host}/64", "dev", "eth0", "nodad"])
    return argv


def _host_link(spec: HostSpec, bridge_ns: str) -> None:
    port = f"p-{spec.name}"[:15]
    _veth(bridge_ns, port, ns(spec.name), "eth0")
    _up(bridge_ns, port, master="br0")
    for argv in base_network(spec):
        DEPLOYER.succeed(["ip", "-n", ns(spec.name), *argv])


def build_network() -> None:
    """Create the namespaces and links (fails if any exists: run lab-down first)."""
    names = ["inet", "client", "cgnat", "homegw"] + [h.name for h in HOSTS]
    for name in names:
        DEPLOYER.succeed(["ip", "netns", "add", ns(name)])
        DEPLOYER.succeed(["ip", "-n", ns(name), "link", "set", "lo", "up"])
    _bridge(ns("inet"), "br0")
    _bridge(ns("homegw"), "br0")
    # the internet segment
    for name, addr, addr6 in [("client", CLIENT, CLIENT_V6), ("cgnat", CGNAT_WAN, CGNAT_WAN_V6)]:
        port = f"p-{name}"[:15]
        _veth(ns("inet"), port, ns(name), "eth0")
        _up(ns("inet"), port, master="br0")
        _up(ns(name), "eth0", f"{addr6}/64")
        _up(ns(name), "eth0", f"{addr}/24")
    for h in HOSTS:
        if h.segment == "internet":
            _host_link(h, ns("inet"))
    _veth(None, "fwl-inet0", ns("inet"), "p-deployer")
    _up(ns("inet"), "p-deployer", master="br0")
    on_internet = [h for h in HOSTS if h.segment == "internet"]
    _deployer_link(
        "fwl-inet0", DEPLOYER_INTERNET, [CLIENT, CGNAT_WAN, *(h.address for h in on_internet)],
        DEPLOYER_INTERNET_V6, [CLIENT_V6, CGNAT_WAN_V6, *(h.address6 for h in on_internet if h.address6)],
    )  # fmt: skip
    # CGNAT: 100.64.0.0/24 behind one public address, short UDP mappings
    _veth(ns("cgnat"), "eth1", ns("homegw"), "eth0")
    _up(ns("cgnat"), "eth1", f"{CGNAT_LAN}/24")
    _up(ns("homegw"), "eth0", f"{HOMEGW_WAN}/24")
    _nat(ns("cgnat"), "eth0", "100.64.0.0/24")
    cgnat = machine("cgnat")
    cgnat.execute(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=10"])
    cgnat.execute(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout_stream=20"])
    DEPLOYER.succeed(["ip", "-n", ns("homegw"), "route", "add", "default", "via", CGNAT_LAN])
    # The ISP's IPv6-only customer: a link of the CGNAT's own, routed, no NAT (no route from this machine).
    for h in HOSTS:
        if h.segment == "v6only":
            _veth(ns("cgnat"), "eth2", ns(h.name), "eth0")
            _up(ns("cgnat"), "eth2", f"{V6ONLY_LAN}1/64")
            cgnat.succeed(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            for argv in base_network(h):
                DEPLOYER.succeed(["ip", "-n", ns(h.name), *argv])
    # the home LAN
    _up(ns("homegw"), "br0", f"{LAN}.1/24")
    _nat(ns("homegw"), "eth0", f"{LAN}.0/24")
    for h in HOSTS:
        if h.segment == "lan":
            _host_link(h, ns("homegw"))
    _veth(None, "fwl-lan0", ns("homegw"), "p-deployer")
    _up(ns("homegw"), "p-deployer", master="br0")
    _deployer_link("fwl-lan0", DEPLOYER_LAN, [h.address for h in HOSTS if h.segment == "lan"])
