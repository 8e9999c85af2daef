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


def test_hostile_firewall_state_on_the_vps_does_not_break_forwarding(destroyed_lab: MakeLab) -> None:
    """Applied from scratch (the stack destroyed) on top of their tables; a destroy leaves
    their tables as they were. The lab is left destroyed, for the next test that wants it so."""
    lab = destroyed_lab
    vps = lab.machine("vps")
    try:
        vps.succeed(["nft", "-f", "-"], stdin=HOSTILE)
        before = vps.succeed(["nft", "list", "ruleset"])
        lab.up()
        assert seen_address(lab, tries=5) == "10.8.0.1"
        lab.destroy()
        assert vps.succeed(["nft", "list", "ruleset"]) == before, "their tables changed"
    finally:
        vps.execute(["nft", "delete", "table", "inet", "hostile"])
        vps.execute(["nft", "delete", "table", "ip", "catchall"])
