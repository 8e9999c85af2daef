"""LEFTOVER of the split of this module (issue 16): the reboot tests only, unchanged.

Engineer nspawn2 moves them to tests/lab/test_reboot.py; until then they run here on the
session's `make lab` (fixture ``topology`` of tests/lab/conftest.py), through the shared
helpers of tests/lab/make_lab.py. Every other test of `make lab` is in a ``test_lab_*``
module of its feature.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab import make_lab
from tests.lab.machine import Machine

LAB = make_lab.MakeLab()


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return LAB.run(*args)


def _in(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return Machine(netns, netns).execute(argv)


def _https(topology: dict[str, Any], tries: int = 3) -> tuple[int, str]:
    return make_lab.https(LAB, tries=tries)


def _gitlab_ssh_key(topology: dict[str, Any]) -> str:
    return make_lab.gitlab_ssh_key(LAB)


def _push_and_pull(topology: dict[str, Any], name: str, size: int) -> None:
    make_lab.push_and_pull(LAB, name, size)


def _assert_admin_ssh(topology: dict[str, Any]) -> None:
    make_lab.assert_admin_ssh(LAB)


def _client_trusts_the_stack_ca(topology: dict[str, Any]) -> None:
    make_lab.client_trusts_the_stack_ca(LAB)


VPS = make_lab.VPS


# Seconds the service may take to come back after a reboot, from the moment the rebooted
# host's sshd answers again (issue 14: at most 20 s in the lab, where the keepalive is 5 s).
RECOVERY_BOUND = 20.0
# Event (a host name, or all) -> seconds until HTTPS, SSH on 22 and a registry push all
# worked from the client, or None: not within RECOVERY_BOUND.
RECOVERY: dict[str, float | None] = {}
RECOVERY_MISSED: list[str] = []  # the probes that were not back in time, for the failure message
# What a reboot must forget: a table, a policy rule and a sysctl no forgeway unit sets.
MARKER_TABLE, MARKER_RULE, MARKER_SYSCTL = "lab-reboot-marker", "4242", "net.ipv4.conf.all.arp_ignore"


def _booting_hosts(topology: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in topology["hosts"] if h.get("boots")]


def _inside(host: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` inside a booting host (its init's namespaces)."""
    from tools.lab_nspawn import inside

    return inside(Path(host["state"]), *argv)


def _kernel_state(host: dict[str, Any]) -> dict[str, str]:
    netns = host["netns"]
    return {
        "nft": _in(netns, "nft", "--stateless", "list", "ruleset").stdout,
        "rules": _in(netns, "ip", "rule").stdout,
        "rules6": _in(netns, "ip", "-6", "rule").stdout,
        # but link-local addresses: a new wireguard-go makes a new one for its wg0
        "routes": "\n".join(
            line
            for line in _in(netns, "ip", "route", "show", "table", "all").stdout.splitlines()
            if "fe80:" not in line
        ),
        "ip_forward": _in(netns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip(),
        "links": " ".join(
            sorted(line.split()[0].split("@")[0] for line in _in(netns, "ip", "-br", "link").stdout.splitlines())
        ),
    }


def _service_back(topology: dict[str, Any], since: float, bound: float) -> float | None:
    """Seconds from ``since`` (time.time()) until HTTPS, SSH on 22 (GitLab's key) and a
    registry push from the client have all worked; None if not within ``bound``."""
    gitlab_key = _gitlab_ssh_key(topology)

    def https() -> bool:
        try:
            return _https(topology, tries=1)[0] == 200
        except AssertionError:
            return False

    def ssh() -> bool:
        return gitlab_key in _in("fwl-client", "ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", "22", VPS).stdout

    last_error: list[str] = []

    def push() -> bool:
        try:
            _push_and_pull(topology, "client", size=16 << 10)
        except AssertionError as failed:
            last_error[:] = [str(failed).splitlines()[0][-300:]]
            return False
        return True

    for probe in (https, ssh, push):
        while not probe():
            if time.time() - since > bound:
                RECOVERY_MISSED.append(" ".join([probe.__name__, *last_error]))
                return None
            time.sleep(0.5)
    return time.time() - since


@pytest.mark.parametrize("event", ["vps", "all"])
def test_zy_a_real_reboot_forgets_the_kernel_state_and_the_boot_units_restore_it(
    topology: dict[str, Any], event: str
) -> None:
    """`tools.lab reboot`: systemd in the host reboots, the lab clears what the kernel
    forgets; the units forgeway installed bring back the same rules, once each."""
    hosts = [h for h in _booting_hosts(topology) if event in (h["name"], "all")]
    assert hosts, f"no lab host boots for event {event}"
    before = {h["name"]: _kernel_state(h) for h in hosts}
    for host in hosts:
        netns = host["netns"]
        assert _in(netns, "nft", "add", "table", "inet", MARKER_TABLE).returncode == 0
        assert _in(netns, "ip", "rule", "add", "pref", MARKER_RULE, "lookup", MARKER_RULE).returncode == 0
        assert _in(netns, "sysctl", "-qw", f"{MARKER_SYSCTL}=1").returncode == 0
    _client_trusts_the_stack_ca(topology)
    booted = _lab("reboot", event)
    assert booted.returncode == 0, booted.stderr
    back = {line["host"]: line["sshd_back"] for line in map(json.loads, booted.stdout.splitlines())}
    assert set(back) == {h["name"] for h in hosts}, booted.stdout
    RECOVERY[event] = _service_back(topology, min(back.values()), RECOVERY_BOUND)
    for host in hosts:
        name, netns = host["name"], host["netns"]
        # Everything the units restore is in place: wait for them (the tunnel's unit may still run).
        state = _kernel_state(host)
        for _ in range(60):
            if state == before[name]:
                break
            time.sleep(0.5)
            state = _kernel_state(host)
        assert MARKER_TABLE not in state["nft"] and MARKER_RULE not in state["rules"], f"{name}: not forgotten"
        assert _in(netns, "sysctl", "-n", MARKER_SYSCTL).stdout.strip() == "0", f"{name}: {MARKER_SYSCTL} kept"
        # The same tables, chains and rules as before, each once (no duplicates); ip_forward as configured.
        for part in ("nft", "rules", "rules6", "routes", "ip_forward", "links"):
            assert state[part] == before[name][part], f"{name} {part} after the reboot:\n{state[part]}"
        running = _inside(host, "systemctl", "is-system-running", "--wait")
        assert running.stdout.strip() == "running", _inside(host, "systemctl", "--failed", "--no-pager").stdout
        units = _inside(host, "systemctl", "list-units", "--all", "--plain", "--no-legend", "forgeway*").stdout
        assert "forgeway-tunnel@wg0.service" in units and "forgeway-nftables.service" in units, units
        for unit in (line.split()[0] for line in units.splitlines()):
            state_of = _inside(host, "systemctl", "is-active", unit).stdout.strip()
            assert state_of == "active", f"{name}: {unit} is {state_of} after the reboot"
    _assert_admin_ssh(topology)  # after a reboot


# Without the VPS's endpoint memory (components/scripts/tunnel-up.sh) the VPS-alone
# event waits for a peer's rekey: 46 to 117 s measured (docs/tunnel.md).
@pytest.mark.parametrize("event", ["vps", "all"])
def test_zy_b_the_service_is_back_within_the_bound_after_the_reboot(topology: dict[str, Any], event: str) -> None:
    assert event in RECOVERY, f"the reboot test of {event} did not run"
    seconds = RECOVERY[event]
    assert seconds is not None, (
        f"{event}: HTTPS, SSH on 22 and a registry push not back within {RECOVERY_BOUND} s (missed: {RECOVERY_MISSED})"
    )
