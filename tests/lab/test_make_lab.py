"""`make lab` and `make lab-down` as a user runs them (tools/lab.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.stacks import ROOT

LAB = [sys.executable, "-m", "tools.lab"]


def _lab(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, action], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def lab_up() -> Iterator[subprocess.CompletedProcess[str]]:
    if (ROOT / ".lab" / "topology.json").exists() or any(n.startswith("fwl-") for n in _netns()):
        pytest.fail("a lab is already up (fwl-* namespaces or .lab/): run `make lab-down` first")
    try:
        yield _lab("up")
    finally:
        _lab("down")


def test_lab_comes_up_reapplies_as_a_no_op_and_goes_away(lab_up: subprocess.CompletedProcess[str]) -> None:
    assert lab_up.returncode == 0, lab_up.stderr
    topology = json.loads((ROOT / ".lab" / "topology.json").read_text())
    assert {h["name"] for h in topology["hosts"]} == {"vps", "home", "runner-arm", "runner-amd"}
    assert set(topology["namespaces"]) <= _netns()

    again = _lab("up")
    assert again.returncode == 0, again.stderr
    assert "0 change(s)" in again.stdout

    down = _lab("down")
    assert down.returncode == 0, down.stderr
    assert not any(n.startswith("fwl-") for n in _netns())
    assert not (ROOT / ".lab").exists()
    pids = [h["pid"] for h in topology["hosts"]]
    listed = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, pids))], capture_output=True, text=True, check=False
    )
    # A dead process whose new parent (PID 1 here) has not reaped it yet shows as Z.
    alive = [line for line in listed.stdout.splitlines() if not line.split()[1].startswith("Z")]
    assert alive == [], f"lab processes still running: {alive}"


def test_home_reaches_the_internet_only_by_dialing_out(lab_up: subprocess.CompletedProcess[str]) -> None:
    assert lab_up.returncode == 0, lab_up.stderr

    ping = _ping
    assert ping("fwl-home", "203.0.113.10"), "home cannot reach the VPS through the home router and the CGNAT"
    assert not ping("fwl-client", "198.51.100.2"), "the home LAN must not be reachable from the internet"
    assert not ping("fwl-client", "100.64.0.2"), "the CGNAT side must not be reachable from the internet"


def test_the_tunnel_is_up_through_the_cgnat_both_ways(lab_up: subprocess.CompletedProcess[str]) -> None:
    assert lab_up.returncode == 0, lab_up.stderr
    peers = {"home": "10.8.0.2", "runner-arm": "10.8.0.3", "runner-amd": "10.8.0.4"}
    for name in peers:
        assert _ping(f"fwl-{name}", "10.8.0.1", tries=5), f"{name} cannot reach the VPS through the tunnel"
    for name, address in peers.items():
        assert _ping("fwl-vps", address), f"the VPS cannot reach {name} through the tunnel"


def _ping(netns: str, address: str, tries: int = 1) -> bool:
    # The first packets may wait for the handshake: a few tries, one second each.
    cmd = ["ip", "netns", "exec", netns, "ping", "-c1", "-W1", address]
    return any(subprocess.run(cmd, capture_output=True, check=False).returncode == 0 for _ in range(tries))
