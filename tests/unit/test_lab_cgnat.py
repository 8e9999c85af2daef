"""tools/lab/cgnat.py's pure parts: the public ports it reads, the window it picks, its ruleset."""

from __future__ import annotations

import random

import pytest

from tools.lab.cgnat import HOME_SIDE, PORTS, TABLE, WINDOW, port_window, public_ports, ruleset

LISTING = (
    "udp      17 9 src=100.64.0.2 dst=203.0.113.10 sport=41000 dport=51820 "
    "src=203.0.113.10 dst=203.0.113.20 sport=51820 dport=41000 [ASSURED] mark=0 use=1\n"
    "udp      17 3 src=100.64.0.2 dst=203.0.113.10 sport=41001 dport=51820 "
    "src=203.0.113.10 dst=203.0.113.20 sport=51820 dport=1026 mark=0 use=1\n"
    "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n"
)


def test_public_ports_are_the_reply_tuples_destination_ports() -> None:
    assert public_ports(LISTING) == {41000, 1026}
    assert public_ports("") == set()


@pytest.mark.parametrize("seed", range(20))
def test_the_window_never_holds_an_old_port(seed: int) -> None:
    taken = {1024, 1026, 41000, 65535, 30000}
    start, end = port_window(taken, random.Random(seed))  # noqa: S311
    assert end - start + 1 == WINDOW and PORTS[0] <= start and end <= PORTS[1]
    assert not any(start <= port <= end for port in taken)


def test_no_window_left_is_an_error() -> None:
    every_window = set(range(PORTS[0], PORTS[1] + 1, WINDOW // 2))
    with pytest.raises(RuntimeError, match="no window"):
        port_window(every_window, random.Random(1))  # noqa: S311


def test_ruleset_replaces_its_own_table_and_maps_the_home_side_only() -> None:
    text = ruleset((2048, 4095))
    assert text.startswith(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
    assert f'ip saddr {HOME_SIDE} oifname "eth0" meta l4proto udp masquerade to :2048-4095' in text
    assert "priority srcnat - 1" in text  # before tools/lab/topology.py's masquerade
