"""forwarding-up/-down.sh and home-routing-up/-down.sh on namespace hosts: converge, remove,
the data path through the VPS, refusals, changed parameters. The namespaces and helpers:
tests/lab/forwarding_chain.py; other firewalls on the VPS: test_forwarding_other_firewalls.py.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components.render.nftables import HomeRoutingSettings, render_home_routing
from tests.lab.forwarding_chain import (
    ADMIN_PORT,
    CLIENT,
    HOME_PORT,
    HOME_TUNNEL,
    PATH,
    PUBLIC_PORT,
    TUNNEL_MTU,
    VPS_TUNNEL,
    Chain,
    chain_in_namespaces,
    files_in,
    forward_ruleset,
    only_ok,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with chain_in_namespaces(tmp_path) as made:
        yield made


# --- converge, idempotence, removal ------------------------------------------------------------


def test_up_twice_changes_nothing_the_second_time_and_down_restores_the_baseline(chain: Chain) -> None:
    baseline = chain.nft(chain.vps, "list", "ruleset")
    forward_before = chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    ruleset = forward_ruleset()

    first = chain.up(ruleset)
    assert "changed table ip forgeway" in first.stdout
    only_ok(chain.up(ruleset))

    table = chain.nft(chain.vps, "list", "table", "ip", "forgeway")
    rules = [line.strip() for line in table.splitlines() if line.startswith("\t\t") and "type " not in line]
    assert len(rules) == len(set(rules)) == 7, table  # 1 dnat, 1 masquerade, 2 clamps, 1+2 accepts
    saved = chain.etc["vps"] / "forgeway" / "nftables" / "forgeway.nft"
    assert saved.read_text() == ruleset and saved.stat().st_mode & 0o777 == 0o600
    assert chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert (chain.etc["vps"] / "sysctl.d" / "60-forgeway-forwarding.conf").is_file()

    gone = chain.down()
    assert "removed table ip forgeway" in gone.stdout
    assert chain.nft(chain.vps, "list", "ruleset") == baseline
    assert chain.ns(chain.vps, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == forward_before
    assert files_in(chain.etc["vps"]) == []
    assert chain.down().stdout.strip() == "ok forwarding: nothing to remove"


def test_the_boot_unit_is_written_and_removed(chain: Chain) -> None:
    done = chain.script("vps", "forwarding-up.sh", str(ADMIN_PORT), stdin=forward_ruleset(), systemd="yes")
    units = chain.etc["vps"] / "systemd" / "system"
    unit = (units / "forgeway-nftables.service").read_text()
    # Run inline there is no copy of the script to run at boot: the unit loads the table.
    assert f"ExecStart={shutil.which('nft', path=PATH)} -f {chain.etc['vps']}/forgeway/nftables/forgeway.nft" in unit
    assert "After=nftables.service netfilter-persistent.service ufw.service" in unit
    assert (units / "multi-user.target.wants" / "forgeway-nftables.service").is_symlink()
    assert "changed enabled forgeway-nftables.service" in done.stdout
    only_ok(chain.script("vps", "forwarding-up.sh", str(ADMIN_PORT), stdin=forward_ruleset(), systemd="yes"))
    chain.down()
    assert files_in(chain.etc["vps"]) == []


# --- the data path -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["snat", "preserve-source"])
def test_a_client_reaches_the_home_listener_through_the_vps(chain: Chain, mode: str) -> None:
    chain.start_server()
    chain.up(forward_ruleset(mode))
    if mode == "preserve-source":
        # Without the return path the replies leave through the home's uplink: no answer.
        assert chain.connect(timeout=1.0).startswith("failed"), "replies found a way back without policy routing"
        home_baseline = {
            "nft": chain.nft(chain.home, "list", "ruleset"),
            "rules": chain.ns(chain.home, "ip", "rule").stdout,
            "rp_filter": chain.ns(chain.home, "sysctl", "-n", "net.ipv4.conf.wg0.rp_filter").stdout,
        }
        routing = render_home_routing(HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL)))
        chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables)
        only_ok(chain.script("home", "home-routing-up.sh", *routing.script_args(), stdin=routing.nftables))

    peer, server_mss, client_mss = chain.connect().split()
    assert peer == (VPS_TUNNEL if mode == "snat" else CLIENT)
    # Clamped in both directions (SYN and SYN-ACK) to 1400 - 40; timestamps take 12 more.
    assert int(server_mss) <= TUNNEL_MTU - 40 and int(client_mss) <= TUNNEL_MTU - 40

    if mode == "preserve-source":
        chain.script("home", "home-routing-down.sh")
        assert chain.nft(chain.home, "list", "ruleset") == home_baseline["nft"]
        assert chain.ns(chain.home, "ip", "rule").stdout == home_baseline["rules"]
        assert chain.ns(chain.home, "ip", "route", "show", "table", "4680").stdout == ""
        assert chain.ns(chain.home, "sysctl", "-n", "net.ipv4.conf.wg0.rp_filter").stdout == home_baseline["rp_filter"]
        assert files_in(chain.etc["home"]) == []
        assert "nothing to remove" in chain.script("home", "home-routing-down.sh").stdout


def test_a_changed_dnat_target_drops_the_old_targets_conntrack_entries(chain: Chain) -> None:
    chain.start_server()
    chain.up(forward_ruleset())
    assert chain.connect().startswith(VPS_TUNNEL)
    entries = ["conntrack", "-L", "-p", "tcp", "--reply-src", HOME_TUNNEL, "--reply-port-src", str(HOME_PORT)]
    assert chain.ns(chain.vps, *entries).stdout.strip(), "no conntrack entry for the first connection"
    moved = chain.up(forward_ruleset(home_port=HOME_PORT + 1))
    assert re.search(rf"changed conntrack: [1-9]\d* entries of the old target tcp {PUBLIC_PORT} ->", moved.stdout)
    assert chain.ns(chain.vps, *entries).stdout.strip() == ""


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace(f"tcp dport {PUBLIC_PORT} dnat", f"tcp dport {{ {PUBLIC_PORT}, 22 }} dnat"), "port 22"),
        (lambda t: t.replace("table ip forgeway\n", "flush ruleset\ntable ip forgeway\n", 1), "flush ruleset"),
        (lambda t: t + "table inet filter {\n}\n", "table inet filter"),
    ],
    ids=["admin-port", "flush-ruleset", "other-table"],
)
def test_a_dangerous_ruleset_is_refused_and_nothing_changes(
    chain: Chain, edit: Callable[[str], str], message: str
) -> None:
    baseline = chain.nft(chain.vps, "list", "ruleset")
    done = chain.up(edit(forward_ruleset()), check=False)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert chain.nft(chain.vps, "list", "ruleset") == baseline
    assert not chain.etc["vps"].exists()


def test_changed_home_routing_parameters_remove_the_old_rule_and_route(chain: Chain) -> None:
    old = render_home_routing(HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL)))
    new = render_home_routing(
        HomeRoutingSettings("wg0", ipaddress.IPv4Address(VPS_TUNNEL), route_table=4700, rule_priority=4700)
    )
    rules_before = chain.ns(chain.home, "ip", "rule").stdout
    chain.script("home", "home-routing-up.sh", *old.script_args(), stdin=old.nftables)
    done = chain.script("home", "home-routing-up.sh", *new.script_args(), stdin=new.nftables)
    assert "removed the old rule: priority 4680" in done.stdout
    assert "removed the old route: default via 10.8.0.1 dev wg0 table 4680" in done.stdout
    rules = chain.ns(chain.home, "ip", "rule").stdout
    assert "4700:\tfrom all fwmark 0x10000000/0x10000000 lookup 4700" in rules and "4680" not in rules
    assert chain.ns(chain.home, "ip", "route", "show", "table", "4680").stdout == ""
    chain.script("home", "home-routing-down.sh")
    assert chain.ns(chain.home, "ip", "rule").stdout == rules_before
    assert files_in(chain.etc["home"]) == []
