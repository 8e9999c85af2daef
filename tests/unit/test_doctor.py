"""tools/doctor: each check's parsing and judging, on recorded probe outputs.

The recordings are what the probe printed on the `make lab` hosts (tests/unit/doctor/,
made with ``tools.doctor --record``), and hand-made variants of them for each break. The
probe script itself is checked by ``sh -n`` and shellcheck.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tools.doctor import judge
from tools.doctor.cli import diagnose, probe_specs, render_json, render_text
from tools.doctor.expected import Expected, backup_expectation, expected_from_synthesis, token_spec
from tools.doctor.findings import EXIT, Finding, overall
from tools.doctor.probe import ProbeSpec, Section, probe_script, sections
from tools.stack.configs import lab_placeholder_stack

RECORDED = Path(__file__).parent / "doctor"
NOW = datetime.datetime(2026, 12, 7, 10, 0, 0, tzinfo=datetime.UTC)
NOW_S = int(NOW.timestamp())
RULESET = "table ip forgeway {\n}\n"
LIVE_SHA = "a" * 64
PREFIX = "urn:pulumi:lab::forgeway::"
URNS = {
    "vps-forwarding": f"{PREFIX}forgeway:forwarding:PortForwarding$command:remote:Command::vps-forwarding",
    "home-gitlab": f"{PREFIX}forgeway:gitlab:GitLabServer$docker:index/container:Container::home-gitlab",
    "runner-amd-runner": f"{PREFIX}forgeway:runners:RunnerHost$docker:index/container:Container::runner-amd-runner",
    "runner-arm-runner": f"{PREFIX}forgeway:runners:RunnerHost$docker:index/container:Container::runner-arm-runner",
    "runner-amd-runner-registration": f"{PREFIX}forgeway:runner_registration:RunnerRegistration"
    "$gitlab:index/userRunner:UserRunner::runner-amd-runner-registration",
    "gitlab-api-token-value": f"{PREFIX}forgeway:runner_registration:RunnerRegistration"
    "$random:index/randomPassword:RandomPassword::gitlab-api-token-value",
}


def part(name: str, text: str, rc: int = 0) -> str:
    return f"\n@@ {name}\n{text}\n@@rc {rc}\n"


def probe(**parts: tuple[str, int] | str) -> dict[str, Section]:
    out = "".join(part(n.replace("_", "-"), *(v if isinstance(v, tuple) else (v, 0))) for n, v in parts.items())
    return sections(out)


@pytest.fixture(scope="module")
def expected() -> Expected:
    raw, secret_keys = lab_placeholder_stack()
    resources = [SimpleNamespace(name="vps-forwarding", urn=URNS["vps-forwarding"], custom=True,
                                 inputs={"stdin": RULESET})]  # fmt: skip
    resources += [SimpleNamespace(name=n, urn=u, custom=True, inputs={}) for n, u in URNS.items()]
    return expected_from_synthesis("lab", raw, secret_keys, resources)


# --------------------------------------------------------------------------- the probe


def test_sections_read_each_part_and_its_status() -> None:
    down = "Unable to access interface: No such device"
    out = f"noise\n@@ now\n1765000000\n@@rc 0\n\n@@ wg-handshakes\n{down}\n@@rc 1\n@@ cut"
    found = sections(out)
    assert found == {
        "now": Section("1765000000", 0),
        "wg-handshakes": Section("Unable to access interface: No such device", 1),
    }


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_the_probe_is_valid_sh_and_passes_shellcheck(tmp_path: Path) -> None:
    spec = ProbeSpec(vps=True, admin_port=2202, ruleset=RULESET, docker=True, gitlab=True, runner=True,
                     token_name="forgeway-provisioner")  # noqa: S106  # fmt: skip
    script = tmp_path / "probe.sh"
    script.write_text(probe_script(spec))
    subprocess.run(["sh", "-n", str(script)], check=True)
    subprocess.run(["shellcheck", "-s", "sh", str(script)], check=True)


def test_the_probe_never_reads_the_wireguard_private_key() -> None:
    script = probe_script(ProbeSpec(vps=True, ruleset=RULESET, gitlab=True, token_name="forgeway-provisioner"))  # noqa: S106
    assert "wg show wg0 latest-handshakes" in script
    assert "dump" not in script and "private-key" not in script and "wg showconf" not in script
    # the ruleset goes to the VPS in a quoted here-document: nothing in it is expanded
    assert "<<'FORGEWAY_DOCTOR_RULESET_END'\ntable ip forgeway {\n}\nFORGEWAY_DOCTOR_RULESET_END" in script


def test_probe_specs_follow_the_roles(expected: Expected) -> None:
    specs = probe_specs(expected)
    assert specs["vps"].vps and specs["vps"].ruleset == RULESET and specs["vps"].admin_port == 2202
    assert not specs["vps"].docker and specs["home"].gitlab and specs["home"].docker
    assert specs["home"].token_name == token_spec()[0] == "forgeway-provisioner"  # noqa: S105
    assert specs["runner-amd"].runner and specs["runner-amd"].docker and not specs["runner-amd"].gitlab
    # every docker host fetches the registry's chain (own-ca: with the CA its dockerd trusts), the VPS none
    assert {name: (s.registry, s.registry_ca) for name, s in specs.items()} == {
        "vps": ((), True),
        **{h: (("gitlab.forgeway.test:5050",), True) for h in ("home", "runner-arm", "runner-amd")},
    }


def test_token_spec_reads_the_script_constants() -> None:
    assert token_spec() == ("forgeway-provisioner", 364)
    with pytest.raises(ValueError, match="TOKEN_NAME"):
        token_spec("TOKEN_DAYS = 3\n")


# --------------------------------------------------------------------------- the tunnel

KEYS = {"vps": "VpsKey=", "home": "HomeKey=", "runner-arm": "ArmKey=", "runner-amd": "AmdKey="}
NAMES = {"10.8.0.1": "vps", "10.8.0.2": "home", "10.8.0.3": "runner-arm", "10.8.0.4": "runner-amd"}


def _vps_tunnel(home_age: int | None) -> dict[str, Section]:
    stamp = 0 if home_age is None else NOW_S - home_age
    return probe(
        now=str(NOW_S),
        wg_handshakes=f"HomeKey=\t{stamp}\nArmKey=\t{NOW_S - 10}\nAmdKey=\t{NOW_S - 3}",
        wg_endpoints="HomeKey=\t203.0.113.20:40001\nArmKey=\t203.0.113.20:40002\nAmdKey=\t203.0.113.20:40003",
        wg_allowed_ips="HomeKey=\t10.8.0.2/32\nArmKey=\t10.8.0.3/32\nAmdKey=\t10.8.0.4/32",
    )


def test_tunnel_reports_each_peer_handshake_and_endpoint() -> None:
    ctx = judge.TunnelContext("vps", True, 5, NAMES, "forgeway-tunnel@wg0.service")
    found = judge.tunnel(_vps_tunnel(12), ctx)
    assert [f.status for f in found] == ["ok", "ok", "ok"]
    assert found[0].detail == "peer home: handshake 12 s ago, endpoint 203.0.113.20:40001"


@pytest.mark.parametrize("age", [None, 186])
def test_a_stale_or_missing_handshake_names_the_peer_unit(age: int | None) -> None:
    ctx = judge.TunnelContext("vps", True, 5, NAMES, "forgeway-tunnel@wg0.service")
    stale = [f for f in judge.tunnel(_vps_tunnel(age), ctx) if f.status != "ok"]
    assert len(stale) == 1 and stale[0].detail.startswith("peer home: handshake " + ("never" if age is None else "186"))
    assert stale[0].repair is not None
    assert stale[0].repair.text == "on home: sudo systemctl restart forgeway-tunnel@wg0.service" + (
        "  (brings the interface and its peers back from the saved config)"
    )


def test_185_seconds_with_keepalive_5_is_still_fresh() -> None:
    ctx = judge.TunnelContext("vps", True, 5, NAMES, "forgeway-tunnel@wg0.service")
    assert all(f.status == "ok" for f in judge.tunnel(_vps_tunnel(185), ctx))


def test_a_down_interface_names_its_unit() -> None:
    parts = probe(
        now=str(NOW_S),
        wg_handshakes=("Unable to access interface: No such device", 1),
        wg_endpoints=("Unable to access interface: No such device", 1),
        wg_allowed_ips=("Unable to access interface: No such device", 1),
    )
    ctx = judge.TunnelContext("home", False, 5, NAMES, "forgeway-tunnel@wg0.service")
    (found,) = judge.tunnel(parts, ctx)
    assert found.status == "fail" and "the interface is down: Unable to access interface" in found.detail
    assert found.repair is not None and (found.repair.host, found.repair.subject) == ("home", ctx.unit)


def test_a_peer_without_an_endpoint_for_the_vps_fails() -> None:
    parts = probe(now=str(NOW_S), wg_handshakes="VpsKey=\t0", wg_endpoints="VpsKey=\t(none)",
                  wg_allowed_ips="VpsKey=\t10.8.0.1/32")  # fmt: skip
    (found,) = judge.tunnel(parts, judge.TunnelContext("home", False, 5, NAMES, "u"))
    assert found.status == "fail" and "no endpoint for the VPS" in found.detail


# --------------------------------------------------------------------------- the VPS


def _vps(live: tuple[str, int], saved: str, ip_forward: str = "1", admin: str = "LISTEN 0 128 0.0.0.0:2202") -> Any:
    return probe(nft_live=live, nft_expected=LIVE_SHA, nft_saved=saved, ip_forward=ip_forward, admin_port=admin)


def _ctx() -> judge.ForwardingContext:
    return judge.ForwardingContext("vps", RULESET, URNS["vps-forwarding"], 2202)


PROGRAM_SHA = hashlib.sha256(RULESET.encode()).hexdigest()


def test_the_programs_table_ip_forward_and_admin_port_are_ok() -> None:
    found = judge.forwarding(_vps((LIVE_SHA, 0), PROGRAM_SHA), _ctx())
    assert [(f.item, f.status) for f in found] == [("forwarding", "ok"), ("ip_forward", "ok"), ("admin-ssh", "ok")]


def test_a_flushed_table_with_the_programs_saved_file_names_the_boot_unit() -> None:
    flushed = hashlib.sha256(b"table ip forgeway {\n}\n").hexdigest()
    found = judge.forwarding(_vps((flushed, 0), PROGRAM_SHA), _ctx())
    assert found[0].status == "fail" and "differs from the program's" in found[0].detail
    assert found[0].repair is not None
    assert found[0].repair.text.startswith("on vps: sudo systemctl restart forgeway-nftables.service")


def test_a_missing_table_with_another_saved_file_names_the_target() -> None:
    found = judge.forwarding(_vps(("Error: No such file or directory", 1), "b" * 64), _ctx())
    assert found[0].detail.startswith("table ip forgeway is missing: Error: No such file")
    assert found[0].repair is not None
    assert found[0].repair.text.startswith(f"pulumi up --target '{URNS['vps-forwarding']}'")


def test_ip_forward_off_and_a_closed_admin_port_fail() -> None:
    found = judge.forwarding(_vps((LIVE_SHA, 0), PROGRAM_SHA, ip_forward="0", admin=""), _ctx())
    assert [(f.item, f.status) for f in found] == [("forwarding", "ok"), ("ip_forward", "fail"), ("admin-ssh", "fail")]
    assert "'0', not 1" in found[1].detail and "tcp 2202" in found[2].detail


# --------------------------------------------------------------------------- docker hosts

DF = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda 263174212 {used} {free} {pct}% /"


def _disk(pct: int) -> dict[str, Section]:
    return probe(disk=DF.format(used=100, free=73400320, pct=pct))


def test_disk_below_the_threshold_is_ok() -> None:
    (found,) = judge.disk(_disk(32), "runner-amd", 80, "forgeway-docker-prune.service")
    assert found.status == "ok" and found.detail == "/: 32% used, 71680 MiB free (threshold 80%)"


@pytest.mark.parametrize(("pct", "status"), [(80, "warn"), (96, "fail")])
def test_disk_past_the_threshold_names_the_prune_unit(pct: int, status: str) -> None:
    (found,) = judge.disk(_disk(pct), "runner-amd", 80, "forgeway-docker-prune.service")
    assert found.status == status and found.repair is not None
    assert (found.repair.kind, found.repair.subject) == ("start", "forgeway-docker-prune.service")


# --------------------------------------------------------------------------- GitLab and runners

GITLAB_OK = {
    "gitlab_state": "running healthy",
    "gitlab_version": "17.11.3",
    "gitlab_liveness": '{"status":"ok"}\n200',
    "gitlab_readiness": '{"status":"ok"}\n200',
}


def test_gitlab_live_and_ready_with_its_version() -> None:
    found = judge.gitlab(probe(**GITLAB_OK), "home", URNS["home-gitlab"])
    assert [(f.item, f.status) for f in found] == [("gitlab liveness", "ok"), ("gitlab readiness", "ok")]
    assert found[0].detail == "/-/liveness 200 (GitLab 17.11.3)"


def test_gitlab_not_ready_names_the_container_replace() -> None:
    parts = probe(**{**GITLAB_OK, "gitlab_state": "running unhealthy", "gitlab_readiness": '{"status":"failed"}\n503'})
    found = judge.gitlab(parts, "home", URNS["home-gitlab"])
    assert found[1].status == "fail" and "answered 503" in found[1].detail and "unhealthy" in found[1].detail
    assert found[1].repair is not None and found[1].repair.text.startswith(
        f"pulumi up --replace '{URNS['home-gitlab']}'"
    )


def test_a_starting_gitlab_is_a_warning_and_a_stopped_one_a_failure() -> None:
    starting = probe(**{**GITLAB_OK, "gitlab_state": "running starting", "gitlab_readiness": "URLError refused\n0"})
    assert judge.gitlab(starting, "home", "u")[1].status == "warn"
    (stopped,) = judge.gitlab(probe(**{**GITLAB_OK, "gitlab_state": "exited none"}), "home", "u")
    assert stopped.status == "fail" and "not running: exited none" in stopped.detail


def test_runner_verify_ok_removed_and_absent() -> None:
    reg, box = URNS["runner-amd-runner-registration"], URNS["runner-amd-runner"]
    alive = probe(runner_state="running", runner_verify="Verifying runner... is valid    runner=t1_AbCdE")
    assert judge.runner(alive, "runner-amd", box, reg)[0].status == "ok"
    removed = probe(runner_state="running", runner_verify=("ERROR: Verifying runner... is removed  runner=t1_AbCdE", 1))
    (found,) = judge.runner(removed, "runner-amd", box, reg)
    assert found.status == "fail" and "runner=[masked]" in found.detail and "t1_AbCdE" not in found.detail
    assert found.repair is not None and found.repair.subject == reg
    absent = probe(runner_state="running", runner_verify=('exec: "gitlab-runner": executable file not found', 127))
    assert judge.runner(absent, "runner-amd", box, reg)[0].status == "info"


def test_a_stopped_runner_names_its_container_replace() -> None:
    (found,) = judge.runner(probe(runner_state="exited"), "runner-amd", URNS["runner-amd-runner"], None)
    assert found.status == "fail" and found.repair is not None
    assert found.repair.text == f"pulumi up --replace '{URNS['runner-amd-runner']}'"


# --------------------------------------------------------------------------- backups and the token


def _status(**fields: Any) -> Section:
    import json

    base = {"result": "ok", "started": "2026-12-07T03:00:00Z", "finished": "2026-12-07T03:05:00Z",
            "snapshot": "0123456789abcdef", "gitlab_version": "17.11.3", "error": None}  # fmt: skip
    return Section(json.dumps({**base, **fields}), 0)


def test_backup_absent_ok_old_failed_running() -> None:
    assert judge.backup(Section("absent", 0), "home", "daily", NOW)[0].status == "info"
    ok = judge.backup(_status(), "home", "daily", NOW)[0]
    assert ok.status == "ok" and ok.detail == "last backup ok, 6.9 h ago, snapshot 01234567, GitLab 17.11.3"
    assert judge.backup(_status(finished="2026-12-06T06:00:00Z"), "home", "daily", NOW)[0].status == "ok"  # 28 h
    old = judge.backup(_status(finished="2026-12-05T20:00:00Z"), "home", "daily", NOW)[0]
    assert old.status == "warn" and "older than schedule 'daily' allows (30.5 h)" in old.detail
    failed = judge.backup(_status(result="failed", error="restic: wrong password"), "home", "daily", NOW)[0]
    assert failed.status == "fail" and failed.detail.endswith("restic: wrong password")
    assert failed.repair is not None and failed.repair.text.startswith("on home: sudo systemctl start forgeway-backup")
    slack = datetime.timedelta(hours=2)
    running = judge.backup(_status(result="running", finished=None), "home", "hourly", NOW, slack)[0]
    assert running.status == "warn" and "running for 7.0 h" in running.detail


@pytest.mark.parametrize(
    ("schedule", "hours"),
    [("daily", 24), ("hourly", 1), ("weekly", 168), ("*-*-* 03:30", 24), ("Sun *-*-* 02:00", 168),
     ("*-*-01 04:00", 744), ("*:0/15", 1), ("Mon..Fri 01:00", 24)],
)  # fmt: skip
def test_schedule_period_bounds_the_gap_between_runs(schedule: str, hours: int) -> None:
    assert judge.schedule_period(schedule) == datetime.timedelta(hours=hours)


def test_token_expiry_ok_soon_expired_none_unknown() -> None:
    urn = URNS["gitlab-api-token-value"]

    def one(text: str, rc: int = 0) -> Finding:
        return judge.token(Section(text, rc), "home", urn, "forgeway-provisioner", NOW)[0]

    assert one("forgeway-token-expires 2027-12-06").status == "ok"
    soon = one("forgeway-token-expires 2026-12-30")
    assert soon.status == "warn" and "in 22 days" in soon.detail
    assert soon.repair is not None and soon.repair.text.startswith(f"pulumi up --replace '{urn}'")
    assert one("forgeway-token-expires 2026-12-01").status == "fail"
    assert one("forgeway-token-expires none").status == "fail"
    assert one("usage (stand-in): gitlab-rails runner <FILE> create|revoke", 1).status == "info"


# --------------------------------------------------------------------------- the whole run


def test_an_unreachable_host_is_a_failure_and_secrets_are_masked(expected: Expected) -> None:
    secret = next(s for s in expected.secrets if "PRIVATE KEY" in s)
    found = [Finding("vps", "ssh", "fail", f"could not log in with {secret}")]
    found += diagnose(expected, {"vps": None, "home": None, "runner-arm": None, "runner-amd": None}, NOW)
    assert EXIT[overall(found)] == 2 and {f.item for f in found} == {"ssh"}
    for shown in (render_text(expected, found, NOW), render_json(expected, found, NOW)):
        assert secret not in shown and "[secret]" in shown


# --------------------------------------------------------------------------- recorded on the lab


def _recorded() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(RECORDED.glob("*.txt"))}


def _with(output: str, name: str, text: str, rc: int = 0) -> str:
    """A recorded probe output with part ``name`` replaced (a break, as the lab tests make it)."""
    head, _, rest = output.partition(f"@@ {name}\n")
    _, _, tail = rest.partition("@@rc ")
    return f"{head}@@ {name}\n{text}\n@@rc {rc}{tail[tail.index(chr(10)) :]}"


def _diagnose_recorded(expected: Expected, outputs: dict[str, str]) -> list[Finding]:
    from dataclasses import replace as copy

    # The lab's own ruleset (the program's for Pulumi.lab.yaml): its hash is the one the VPS saved.
    lab = copy(expected, ruleset=(RECORDED / "vps-ruleset.nft").read_text())
    now = datetime.datetime.fromtimestamp(int(sections(outputs["vps"])["now"].text), datetime.UTC)
    return diagnose(lab, outputs, now)


def test_the_recorded_lab_is_all_well(expected: Expected) -> None:
    outputs = _recorded()
    assert sorted(outputs) == ["home", "runner-amd", "runner-arm", "vps"]
    found = _diagnose_recorded(expected, outputs)
    assert overall(found) == "ok", [f for f in found if f.status not in ("ok", "info")]
    details = {(f.host, f.item): f.detail for f in found}
    assert details["vps", "forwarding"] == "table ip forgeway is the program's (sha256 9d64cafc5832)"
    assert details["home", "tunnel"].startswith("peer vps: handshake 13 s ago, endpoint 203.0.113.10:51820")
    assert details["runner-amd", "runner"].startswith("running; this image has no gitlab-runner verify")
    assert details["home", "api-token"].startswith("its expiry could not be read: usage (stand-in)")
    for host in ("home", "runner-arm", "runner-amd"):
        assert "verified with /etc/docker/certs.d/gitlab.forgeway.test:5050/ca.crt" in details[host, "registry-tls"]


def test_the_recorded_saved_ruleset_is_the_programs() -> None:
    saved = sections(_recorded()["vps"])["nft-saved"].text
    assert hashlib.sha256((RECORDED / "vps-ruleset.nft").read_bytes()).hexdigest() == saved


@pytest.mark.parametrize(
    ("host", "part", "text", "rc", "item", "repair"),
    [
        ("vps", "nft-live", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0, "forwarding",
         "on vps: sudo systemctl restart forgeway-nftables.service"),
        ("home", "wg-handshakes", "Unable to access interface: No such device", 1, "tunnel",
         "on home: sudo systemctl restart forgeway-tunnel@wg0.service"),
        ("runner-amd", "runner-state", "exited", 0, "runner", f"pulumi up --replace '{URNS['runner-amd-runner']}'"),
        ("home", "backup-status", '{"result": "failed", "started": "2026-12-07T03:00:00Z", "error": "locked"}', 0,
         "backup", "on home: sudo systemctl start forgeway-backup.service"),
        ("runner-arm", "disk", "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 1 1 1 97% /", 0,
         "disk", "on runner-arm: sudo systemctl start forgeway-docker-prune.service"),
        ("runner-arm", "registry-ca:gitlab.forgeway.test:5050", "cat: /etc/docker/certs.d/gitlab.forgeway.test:5050/"
         "ca.crt: No such file or directory", 1, "registry-tls",
         "on runner-arm: sudo sh /etc/forgeway/stage/docker-client/docker-client-up.sh"),
    ],
)  # fmt: skip
def test_each_recorded_break_names_its_item_and_repair(  # noqa: PLR0917 (the parametrized case)
    expected: Expected, host: str, part: str, text: str, rc: int, item: str, repair: str
) -> None:
    outputs = _recorded()
    outputs[host] = _with(outputs[host], part, text, rc)
    problems = [f for f in _diagnose_recorded(expected, outputs) if f.status in ("warn", "fail")]
    assert [(f.host, f.item) for f in problems] == [(host, item)], problems
    assert problems[0].repair is not None and problems[0].repair.text.startswith(repair), problems[0].repair


def test_backup_expectations_come_from_the_backup_section() -> None:
    minutes = datetime.timedelta(minutes=1)
    assert backup_expectation({}) == ("*-*-* 03:15:00", 390 * minutes)  # the section's defaults
    section = {"schedule": "hourly", "randomized_delay_minutes": 0, "timeout_minutes": 60}
    assert backup_expectation({"forgeway:backup": section}) == ("hourly", 60 * minutes)
    assert backup_expectation({"forgeway:backup": {"enabled": False}})[0] == ""


def test_no_backup_finding_when_backups_are_off(expected: Expected) -> None:
    from dataclasses import replace as copy

    outputs = _recorded()
    outputs["home"] = _with(outputs["home"], "backup-status", '{"result": "failed"}')
    assert ("home", "backup") in {(f.host, f.item) for f in _diagnose_recorded(expected, outputs)}
    off = _diagnose_recorded(copy(expected, backup_schedule=""), outputs)
    assert "backup" not in {f.item for f in off} and overall(off) == "ok"
