"""forwarding-up.sh beside other firewalls on the VPS: native nft tables and iptables (nft
and legacy) with a drop policy or a catch-all reject get one labelled accept rule each,
replaced when the home address moves, kept through a reboot, and removed by
forwarding-down.sh, which leaves their tables as they were. Namespaces and helpers:
tests/lab/forwarding_chain.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.scripts import script
from tests.lab.forwarding_chain import (
    ADMIN_PORT,
    FORGEWAY_COMMENT,
    HOME_TUNNEL,
    PATH,
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


def _without_ours(listing: str) -> str:
    return "\n".join(line for line in listing.splitlines() if FORGEWAY_COMMENT not in line)


def _without_our_table(listing: str) -> str:
    """The listing without the block of table ip forgeway (a top-level `table ... {` to `}`)."""
    out, skip = [], False
    for line in listing.splitlines(keepends=True):
        if line.startswith("table ip forgeway {"):
            skip = True
        elif skip and line.startswith("}"):
            skip = False
        elif not skip:
            out.append(line)
    return "".join(out).strip("\n")


def _forward_without_our_help(chain: Chain) -> str:
    """What the client gets with our table loaded but nothing done about other tables."""
    chain.ns(chain.vps, "nft", "-f", "-", stdin=forward_ruleset())
    chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    try:
        return chain.connect(timeout=1.0)
    finally:
        chain.ns(chain.vps, "nft", "delete", "table", "ip", "forgeway")
        chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")


def _first_rule(listing: str, chain_name: str) -> str:
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"chain {chain_name} {{")
    return lines[start + 2].strip()  # after the chain line and its "type ... hook" line


HOSTILE_NFT = """
table inet hostile {
    chain forward {
        type filter hook forward priority filter + 10; policy drop;
        ct state established,related accept
        ip saddr 192.0.2.99 drop
    }
    chain input {
        type filter hook input priority filter; policy drop;
        tcp dport 22 accept
    }
}
table ip catchall {
    chain fwd_filter {
        type filter hook forward priority filter; policy accept;
        ip saddr 192.0.2.98 drop
        reject with icmp type admin-prohibited
    }
}
"""


def test_native_tables_with_a_drop_policy_or_a_catch_all_reject(chain: Chain) -> None:
    chain.start_server()
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    assert _forward_without_our_help(chain).startswith("failed"), "the hostile tables do not drop"
    baseline = chain.nft(chain.vps, "list", "ruleset")

    done = chain.up(forward_ruleset())
    assert "changed inet hostile forward (forward hook) drops by default" in done.stdout
    assert "changed inet hostile input (input hook) drops by default" in done.stdout
    assert "changed ip catchall fwd_filter (forward hook) drops by default" in done.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    only_ok(chain.up(forward_ruleset()))

    listing = chain.nft(chain.vps, "list", "ruleset")
    ours = f'ct status dnat ct reply ip saddr {HOME_TUNNEL} accept comment "forgeway: forwarded to {HOME_TUNNEL}"'
    assert _first_rule(listing, "forward") == ours  # inet hostile
    assert _first_rule(listing, "fwd_filter").startswith("ct status dnat ct reply")
    assert _first_rule(listing, "input") == 'udp dport 51820 accept comment "forgeway: wireguard udp 51820"'
    assert listing.count(FORGEWAY_COMMENT) == 3
    # Theirs is as it was, but for our labelled rules (and our own table).
    assert _without_ours(_without_our_table(listing)) == baseline.strip("\n")

    chain.down()
    assert chain.nft(chain.vps, "list", "ruleset") == baseline  # byte for byte


def test_iptables_drop_policy_and_catch_all_reject_nft_and_legacy(chain: Chain) -> None:
    # As Docker or ufw leave FORWARD (policy DROP), as cloud images leave it (a final
    # REJECT), and legacy iptables beside them.
    chain.start_server()
    for cmd in (
        ["iptables-nft", "-P", "FORWARD", "DROP"],
        ["iptables-nft", "-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"],
        ["iptables-legacy", "-P", "FORWARD", "DROP"],
        ["iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        ["iptables-legacy", "-A", "INPUT", "-j", "REJECT"],
    ):
        chain.ns(chain.vps, *cmd)
    assert _forward_without_our_help(chain).startswith("failed"), "the iptables rules do not drop"

    def state() -> dict[str, str]:
        return {
            "nft": chain.nft(chain.vps, "list", "ruleset"),
            "iptables-nft": chain.ns(chain.vps, "iptables-nft", "-S").stdout,
            "iptables-legacy": chain.ns(chain.vps, "iptables-legacy", "-S").stdout,
        }

    baseline = state()
    done = chain.up(forward_ruleset())
    for what in ("iptables-nft filter FORWARD", "iptables-legacy filter FORWARD", "iptables-legacy filter INPUT"):
        assert f"changed {what} drops by default" in done.stdout, done.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    only_ok(chain.up(forward_ruleset()))

    rules = chain.ns(chain.vps, "iptables-nft", "-S", "FORWARD").stdout.splitlines()
    assert rules[1] == (
        f"-A FORWARD -m conntrack --ctstate DNAT --ctreplsrc {HOME_TUNNEL}"
        f' -m comment --comment "forgeway: forwarded to {HOME_TUNNEL}" -j ACCEPT'
    )
    legacy_input = chain.ns(chain.vps, "iptables-legacy", "-S", "INPUT").stdout.splitlines()
    assert "--dport 51820" in legacy_input[1] and "forgeway: wireguard udp 51820" in legacy_input[1]

    chain.down()
    assert state() == baseline


def test_a_new_home_address_replaces_our_rules_in_other_tables(chain: Chain) -> None:
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    chain.ns(chain.vps, "iptables-nft", "-P", "FORWARD", "DROP")
    chain.ns(chain.vps, "iptables-nft", "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT")  # someone else's
    baseline = chain.nft(chain.vps, "list", "ruleset")
    chain.up(forward_ruleset())
    moved = forward_ruleset().replace(HOME_TUNNEL, "10.8.0.3")
    done = chain.up(moved)
    assert "changed iptables-nft filter FORWARD drops by default" in done.stdout
    only_ok(chain.up(moved))
    forward = chain.ns(chain.vps, "iptables-nft", "-S", "FORWARD").stdout.splitlines()
    assert forward[1].startswith("-A FORWARD -m conntrack --ctstate DNAT --ctreplsrc 10.8.0.3 ")
    assert forward[2:] == ["-A FORWARD -i eth9 -j ACCEPT"]
    listing = chain.nft(chain.vps, "list", "ruleset")
    assert listing.count(FORGEWAY_COMMENT) == 3 and "forwarded to 10.8.0.2" not in listing
    chain.down()
    assert chain.nft(chain.vps, "list", "ruleset") == baseline


def test_boot_mode_restores_everything_after_a_reboot(chain: Chain) -> None:
    chain.start_server()
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    # Run from a file as the program stages it (the library inlined), so the script saves a
    # copy of itself for the boot unit to run.
    env = [f"FORGEWAY_ETC={chain.etc['vps']}", "FORGEWAY_SYSTEMD=yes", f"PATH={PATH}"]
    staged = chain.etc["vps"].parent / "stage-vps" / "forwarding-up.sh"
    staged.parent.mkdir()
    staged.write_text(script("forwarding-up.sh"))
    chain.ns(chain.vps, "env", *env, "sh", str(staged), str(ADMIN_PORT), stdin=forward_ruleset())
    copy = chain.etc["vps"] / "forgeway" / "nftables" / "forwarding-up.sh"
    assert copy.read_text() == script("forwarding-up.sh")
    unit = (chain.etc["vps"] / "systemd" / "system" / "forgeway-nftables.service").read_text()
    assert f"ExecStart=/bin/sh {copy} --boot" in unit

    # "Reboot": no table of ours, the other firewall reloaded from its own file, no forwarding.
    chain.ns(chain.vps, "nft", "delete", "table", "ip", "forgeway")
    chain.ns(chain.vps, "nft", "delete", "table", "inet", "hostile")
    chain.ns(chain.vps, "nft", "delete", "table", "ip", "catchall")
    chain.ns(chain.vps, "nft", "-f", "-", stdin=HOSTILE_NFT)
    chain.ns(chain.vps, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    assert chain.connect(timeout=1.0).startswith("failed")

    booted = chain.ns(chain.vps, "env", *env, "sh", str(copy), "--boot")
    assert "changed table ip forgeway" in booted.stdout
    assert chain.connect().startswith(VPS_TUNNEL)
    only_ok(chain.ns(chain.vps, "env", *env, "sh", str(copy), "--boot"))
    chain.down()
    assert files_in(chain.etc["vps"]) == []
