"""Firewall state not ours on the VPS (`make lab`): the forwarding works through it and leaves it as it was."""

from __future__ import annotations

from tests.lab.make_lab import MakeLab, seen_address

# A default-drop forward policy and a catch-all reject in tables not ours, as Docker,
# ufw or a cloud image leave them.
HOSTILE = """table inet hostile {
  chain forward {
    type filter hook forward priority 0; policy drop;
  }
}
table ip catchall {
  chain forward {
    type filter hook forward priority 10; policy accept;
    reject
  }
}
"""


def test_hostile_firewall_state_on_the_vps_does_not_break_forwarding(make_lab: MakeLab) -> None:
    """Applied from scratch on top of their tables; a destroy leaves their tables as they were."""
    vps = make_lab.machine("vps")
    try:
        assert make_lab.run("destroy").returncode == 0
        vps.succeed(["nft", "-f", "-"], stdin=HOSTILE)
        before = vps.succeed(["nft", "list", "ruleset"])
        make_lab.up()
        assert seen_address(make_lab, tries=5) == "10.8.0.1"
        assert make_lab.run("destroy").returncode == 0
        assert vps.succeed(["nft", "list", "ruleset"]) == before, "their tables changed"
    finally:
        vps.execute(["nft", "delete", "table", "inet", "hostile"])
        vps.execute(["nft", "delete", "table", "ip", "catchall"])
        make_lab.up()  # the lab as it was: applied
