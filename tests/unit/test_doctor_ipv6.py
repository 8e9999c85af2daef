"""doctor with IPv6 forwarding (forwarding.ipv6): table ip6 forgeway against the program's,
and net.ipv6.conf.all.forwarding, with the same repair as table ip forgeway; with IPv6 off
the probe and the findings are as before.

The probe's VPS parts run for real here, in a scratch network namespace (``unshare -rn``)
holding the program's dual-stack ruleset, loaded as forwarding-up.sh loads it."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from components.render.nftables import render_forwarding
from tests.unit.test_doctor import NOW, RULESET, URNS, probe
from tests.unit.test_nftables import _require, _with
from tools.doctor import judge
from tools.doctor.cli import diagnose, probe_specs
from tools.doctor.expected import Expected, expected_from_synthesis
from tools.doctor.findings import Finding
from tools.doctor.probe import ProbeSpec, Section, probe_script, sections
from tools.stack.configs import lab_placeholder_stack

pytestmark = pytest.mark.unit

DUAL = render_forwarding(_with(home_address6=ipaddress.IPv6Address("fd77:6179:7761::2")))
DUAL_SHA = hashlib.sha256(DUAL.encode()).hexdigest()
VPS_FIX = "on vps: sudo systemctl restart forgeway-nftables.service"
TARGET_FIX = f"pulumi up --target '{URNS['vps-forwarding']}'"


def _expected(ipv6: bool) -> Expected:
    raw, secret_keys = lab_placeholder_stack()
    if ipv6:
        raw = {**raw, "forgeway:tunnel": {**raw["forgeway:tunnel"], "ipv6": True},
               "forgeway:forwarding": {**raw["forgeway:forwarding"], "ipv6": True}}  # fmt: skip
    resources = [SimpleNamespace(name="vps-forwarding", urn=URNS["vps-forwarding"], custom=True,
                                 inputs={"stdin": DUAL if ipv6 else RULESET})]  # fmt: skip
    return expected_from_synthesis("lab", raw, secret_keys, resources)


def test_the_vps_probes_table_ip6_only_where_the_stack_forwards_ipv6() -> None:
    on, off = probe_specs(_expected(True)), probe_specs(_expected(False))
    assert on["vps"].ipv6 and not any(s.ipv6 for name, s in on.items() if name != "vps")
    assert not any(s.ipv6 for s in off.values())
    with_v6 = probe_script(on["vps"])
    assert "nft -s list table ip6 forgeway" in with_v6 and "sysctl -n net.ipv6.conf.all.forwarding" in with_v6
    # IPv6 off: the probe is the one doctor ran before forwarding.ipv6 existed
    without = probe_script(off["vps"])
    assert "ip6" not in without and "ipv6" not in without
    assert without.count("@@ ") == probe_script(on["vps"]).count("@@ ") - 3  # nft6-live, nft6-expected, ipv6-forward


def _vps(tmp_path: Path, extra: str, ruleset: str = DUAL) -> dict[str, Section]:
    """The VPS parts of the probe run in a scratch network namespace with the program's
    ``ruleset`` loaded and both forwarding sysctls on, after ``extra`` (a break)."""
    spec = ProbeSpec(vps=True, admin_port=2202, ruleset=ruleset, ipv6=True)
    script = (
        'nft -f "$1" && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1 || exit 99\n'
        f"{extra}\n"
        'exec sh -c "$2"'
    )
    f = tmp_path / "forgeway.nft"
    f.write_text(ruleset)
    done = subprocess.run(
        [_require("unshare"), "-rn", "sh", "-c", script, "sh", str(f), probe_script(spec)],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin"},
    )  # fmt: skip
    assert done.returncode != 99 and "@@ nft6-expected" in done.stdout, done.stdout + done.stderr
    return dict(sections(done.stdout))


def _judged(parts: dict[str, Section], ruleset: str = DUAL) -> dict[str, Finding]:
    ctx = judge.ForwardingContext("vps", ruleset, URNS["vps-forwarding"], 2202, ipv6=True)
    return {f.item: f for f in judge.forwarding(parts, ctx)}


def test_the_programs_ip6_table_and_ipv6_forwarding_are_ok_on_a_real_nft(tmp_path: Path) -> None:
    found = _judged(_vps(tmp_path, ""))
    assert [(i, f.status) for i, f in found.items() if i != "admin-ssh"] == [
        ("forwarding", "ok"), ("ip_forward", "ok"), ("forwarding6", "ok"), ("ipv6_forward", "ok")]  # fmt: skip
    assert found["forwarding6"].detail.startswith("table ip6 forgeway is the program's (sha256 ")
    assert found["ipv6_forward"].detail == "net.ipv6.conf.all.forwarding = 1"


@pytest.mark.parametrize(
    ("brk", "item", "detail"),
    [
        ("nft flush table ip6 forgeway", "forwarding6", "table ip6 forgeway differs from the program's"),
        ("nft delete table ip6 forgeway", "forwarding6", "table ip6 forgeway is missing: "),
        ("sysctl -qw net.ipv6.conf.all.forwarding=0", "ipv6_forward", "net.ipv6.conf.all.forwarding is '0', not 1"),
    ],
)
def test_a_broken_ip6_side_is_named_with_the_forwarding_repair(
    tmp_path: Path, brk: str, item: str, detail: str
) -> None:
    parts = _vps(tmp_path, brk)
    problems = [f for f in _judged(parts).values() if f.status != "ok" and f.item != "admin-ssh"]
    assert [(f.item, f.detail.startswith(detail)) for f in problems] == [(item, True)], problems
    # no saved file in the scratch namespace: `up` must send the ruleset (as for table ip) ...
    assert problems[0].repair is not None and problems[0].repair.text.startswith(TARGET_FIX)
    # ... and where the saved ruleset is the program's, its boot unit loads both tables again
    parts["nft-saved"] = probe(nft_saved=DUAL_SHA)["nft-saved"]
    fixed = next(f for f in _judged(parts).values() if f.item == item)
    assert fixed.repair is not None and fixed.repair.text.startswith(VPS_FIX)


def test_the_table_ip_side_is_judged_as_before_when_ipv6_is_on(tmp_path: Path) -> None:
    problems = [f for f in _judged(_vps(tmp_path, "nft flush table ip forgeway")).values() if f.status != "ok"]
    assert [f.item for f in problems if f.item != "admin-ssh"] == ["forwarding"], problems


def test_diagnose_reports_the_ip6_items_only_with_ipv6_forwarding() -> None:
    def vps_items(expected: Expected, **parts: str) -> list[str]:
        out = "".join(f"\n@@ {name.replace('_', '-')}\n{text}\n@@rc 0\n" for name, text in parts.items())
        found = diagnose(expected, {"vps": out}, NOW)
        return [f.item for f in found if f.host == "vps"]

    same = {"nft_live": "a" * 64, "nft_expected": "a" * 64, "ip_forward": "1"}
    assert vps_items(_expected(False), **same) == ["tunnel", "forwarding", "ip_forward", "admin-ssh"]
    on = vps_items(_expected(True), **same, nft6_live="b" * 64, nft6_expected="b" * 64, ipv6_forward="1")
    assert on == ["tunnel", "forwarding", "ip_forward", "forwarding6", "ipv6_forward", "admin-ssh"]
    # IPv6 on and the probe cut short before its IPv6 parts: a problem, not silence
    cut = diagnose(_expected(True), {"vps": "".join(f"\n@@ {n.replace('_', '-')}\n{t}\n@@rc 0\n"
                                                    for n, t in same.items())},
                   NOW)  # fmt: skip
    assert {(f.item, f.status) for f in cut if f.item in ("forwarding6", "ipv6_forward")} == {
        ("forwarding6", "fail"), ("ipv6_forward", "fail")}  # fmt: skip
