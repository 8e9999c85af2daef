"""The `make lab` topology's IPv6 (issue 20): the internet segment, the VPS and the client are
dual stack in 2001:db8::/64 (documentation prefix), and the lab keeps IPv6 as strict as IPv4.

Checked: topology.json says the addresses; the client reaches the VPS over IPv6, the VPS's
own sshd answers the deployer over IPv6 with its own key; the home LAN has no IPv6 route to
the internet (home is reached only by dialing out); this machine's root namespace holds one
/128 per lab address, never the segment's /64, and takes no router advertisement from a
lab segment. Forwarding over IPv6 (DNAT to the forge) is not here: it is ipv6net's part.
"""

from __future__ import annotations

from tests.lab.make_lab import MakeLab, ping
from tools.lab.hosts import sshd_answers
from tools.lab.layout import CGNAT_WAN_V6, CLIENT_V6, DEPLOYER_INTERNET_V6, LAN_V6, VPS_ADDRESS_V6
from tools.lab.machine import ROOT_NAMESPACE


def test_topology_json_describes_the_internet_segments_ipv6(make_lab: MakeLab) -> None:
    topology = make_lab.topology
    assert topology["vps_public_address6"] == VPS_ADDRESS_V6 == make_lab.host("vps")["address6"]
    assert topology["client"]["address6"] == CLIENT_V6
    assert topology["deployer"]["internet6"] == DEPLOYER_INTERNET_V6
    for name in ("home", "runner-amd"):  # runner-arm is IPv6-only: test_lab_ipv6_only_runner.py
        assert "address6" not in make_lab.host(name), f"{name} has no IPv6 on the internet"
    vps = make_lab.machine("vps").succeed(["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"])
    assert f"{VPS_ADDRESS_V6}/64" in vps, vps


def test_the_client_and_the_deployer_reach_the_vps_over_ipv6(make_lab: MakeLab) -> None:
    client = make_lab.machine("client")
    assert ping(client, VPS_ADDRESS_V6, tries=3), "the client cannot reach the VPS over IPv6"
    assert ping(make_lab.machine("cgnat"), VPS_ADDRESS_V6, tries=3), "the ISP router cannot reach the VPS over IPv6"
    vps = make_lab.host("vps")
    assert sshd_answers(VPS_ADDRESS_V6, vps["ssh_port"], vps["host_key"]), "the VPS's sshd over IPv6, its own key"


def test_the_home_lan_has_no_ipv6_way_to_the_internet(make_lab: MakeLab) -> None:
    home = make_lab.machine("home")
    assert not ping(home, VPS_ADDRESS_V6), "home must reach the internet only by dialing out over IPv4"
    assert not ping(make_lab.machine("client"), f"{LAN_V6}2"), "the home LAN's ULA must not be reachable from outside"


def test_this_machine_holds_only_the_lab_addresses_it_needs(make_lab: MakeLab) -> None:
    routes = ROOT_NAMESPACE.succeed(["ip", "-6", "route", "show", "dev", "fwl-inet0"])
    prefixes = {line.split()[0] for line in routes.splitlines() if not line.startswith("fe80")}
    assert prefixes == {VPS_ADDRESS_V6, CLIENT_V6, CGNAT_WAN_V6, DEPLOYER_INTERNET_V6}, routes
    accept_ra = ROOT_NAMESPACE.succeed(["sysctl", "-n", "net.ipv6.conf.fwl-inet0.accept_ra"]).strip()
    assert accept_ra == "0", "this machine must not take a default route from a lab segment"
