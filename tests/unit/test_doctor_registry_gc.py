"""doctor and the registry's garbage collection (components/registry_gc.py): the last run's
status.json, written here by the real forgeway-registry-gc (against the fake docker of
tests/unit/test_registry_gc_scripts.py), judged as the backup's is (one judge,
judge.timed_job); its timer; and each problem's repair."""

from __future__ import annotations

import datetime
import json
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.test_doctor import URNS, probe
from tests.unit.test_registry_gc_scripts import _installed, _sh
from tools.doctor import judge
from tools.doctor.cli import REGISTRY_GC_STAGE, REGISTRY_GC_UP, diagnose, probe_specs, render_text
from tools.doctor.expected import Expected, expected_from_synthesis
from tools.doctor.findings import Finding, staged_up
from tools.doctor.probe import REGISTRY_GC_STATUS, REGISTRY_GC_UNIT, Section, probe_script
from tools.stack.configs import lab_placeholder_stack

pytestmark = pytest.mark.unit

WEEKLY = "Sun *-*-* 04:30:00"
UP = staged_up("home", REGISTRY_GC_STAGE, REGISTRY_GC_UP, (WEEKLY, "120"))
ACTIVE = "LoadState=loaded\nActiveState=active"
GC_URN = "urn:pulumi:lab::forgeway::forgeway:registry_gc:RegistryGc$command:remote:Command::home-registry-gc"


def _real_status(tmp_path: Path, *, fail: bool = False) -> tuple[str, datetime.datetime]:
    """status.json as forgeway-registry-gc writes it (one run, 4096 bytes to free), and when it ran."""
    run, container, env = _installed(tmp_path)
    blobs = container / "registry" / "blobs"
    (blobs / "kept").write_bytes(b"k" * 1000)
    (blobs / "untagged").write_bytes(b"u" * 4096)
    (container / "untagged").write_text(f"{blobs / 'untagged'}\n")
    if fail:
        (container / "fail").touch()
    done = _sh(str(run), tmp_path, **env)
    assert done.returncode == (1 if fail else 0), done.stderr
    text = (tmp_path / "var/lib/forgeway/registry-gc/status.json").read_text()
    return text, datetime.datetime.now(datetime.UTC)


def _gc(status: str, timer: str = ACTIVE, now: datetime.datetime | None = None, rc: int = 0) -> list[Finding]:
    parts = probe(registry_gc_status=status, registry_gc_timer=(timer, rc))
    return judge.registry_gc(parts, "home", WEEKLY, now or datetime.datetime.now(datetime.UTC), UP)


def test_an_ok_run_reports_the_space_it_freed_and_the_active_timer(tmp_path: Path) -> None:
    status, _ = _real_status(tmp_path)
    last, timer = _gc(status)
    assert (last.item, last.status, last.repair) == ("registry-gc", "ok", None)
    assert last.detail.startswith("last collection ok, 0.0 h ago, freed 4096 bytes"), last.detail
    assert (timer.item, timer.status, timer.detail) == (
        "registry-gc timer",
        "ok",
        "forgeway-registry-gc.timer is active",
    )
    big = json.dumps({**json.loads(status), "freed_bytes": 3 * 2**20})
    assert _gc(big)[0].detail.endswith("freed 3.0 MiB")
    # Pushes during the window can outgrow what was collected (seen in the lab: -3132).
    grew = json.dumps({**json.loads(status), "freed_bytes": -3132})
    assert _gc(grew)[0].detail.endswith("freed nothing: pushes during the run added 3132 bytes")


def test_a_failed_run_is_a_warning_naming_the_unit_that_runs_one_now(tmp_path: Path) -> None:
    status, _ = _real_status(tmp_path, fail=True)
    last = _gc(status)[0]
    assert last.status == "warn" and "the last collection failed (" in last.detail and "boom" in last.detail
    assert last.repair is not None and (last.repair.kind, last.repair.subject) == ("start", REGISTRY_GC_UNIT)
    assert last.repair.text.startswith("on home: sudo systemctl start forgeway-registry-gc.service")


def test_a_status_older_than_two_periods_is_a_warning(tmp_path: Path) -> None:
    status, ran = _real_status(tmp_path)
    thirteen_days = _gc(status, now=ran + datetime.timedelta(days=13))[0]
    assert thirteen_days.status == "ok" and "freed 4096 bytes" in thirteen_days.detail  # weekly: two periods, 14 days
    old = _gc(status, now=ran + datetime.timedelta(days=15))[0]
    assert old.status == "warn" and old.detail.endswith(f"older than schedule {WEEKLY!r} allows (14.0 days)")
    assert old.repair is not None and old.repair.subject == REGISTRY_GC_UNIT


def test_a_skip_is_said_and_judged_by_its_age() -> None:
    now = datetime.datetime(2026, 12, 7, 10, tzinfo=datetime.UTC)
    skipped = json.dumps({"result": "skipped", "started": "2026-12-06T04:30:00Z", "finished": "2026-12-06T04:30:01Z",
                          "duration_seconds": 0.4, "bytes_before": None, "bytes_after": None, "freed_bytes": None,
                          "error": "a backup is running (lock /var/lib/forgeway/backup/lock)"})  # fmt: skip
    last = _gc(skipped, now=now)[0]
    assert last.status == "info" and last.detail.startswith("the last collection was skipped, 29.5 h ago: a backup")
    stale = _gc(skipped, now=now + datetime.timedelta(days=14))[0]
    assert stale.status == "warn" and stale.repair is not None and stale.repair.subject == REGISTRY_GC_UNIT


def test_no_run_yet_a_running_one_and_a_long_running_one() -> None:
    assert _gc("absent")[0].status == "info"
    now = datetime.datetime(2026, 12, 7, 10, tzinfo=datetime.UTC)
    running = json.dumps({"result": "running", "started": "2026-12-07T09:00:00Z", "finished": None})
    assert _gc(running, now=now)[0].status == "ok"
    stuck = _gc(running, now=now + datetime.timedelta(days=15))[0]
    assert stuck.status == "warn" and "has been running for" in stuck.detail
    assert stuck.repair is not None and (stuck.repair.kind, stuck.repair.subject) == ("restart", REGISTRY_GC_UNIT)
    assert _gc("{not json")[0].status == "warn"


@pytest.mark.parametrize(
    ("timer", "status", "detail", "repair"),
    [
        ("LoadState=loaded\nActiveState=inactive", "warn", "forgeway-registry-gc.timer is inactive: no collection runs",
         "on home: sudo systemctl start forgeway-registry-gc.timer"),
        ("LoadState=not-found\nActiveState=inactive", "warn", "forgeway-registry-gc.timer is not installed",
         f"on home: sudo sh /etc/forgeway/stage/registry-gc/registry-gc-up.sh '{WEEKLY}' 120 /etc/forgeway/stage/"
         "registry-gc"),
        ("cron=absent", "warn", "forgeway-registry-gc.timer is not installed", "on home: sudo sh /etc/forgeway/stage"),
        ("cron=present", "ok", "no systemd here: cron.d/forgeway-registry-gc runs it", None),
    ],
)  # fmt: skip
def test_the_timer_and_its_repair(timer: str, status: str, detail: str, repair: str | None) -> None:
    found = _gc("absent", timer=timer)[1]
    assert (found.item, found.status) == ("registry-gc timer", status) and found.detail.startswith(detail), found
    if repair is None:
        assert found.repair is None, found.repair
    else:
        assert found.repair is not None and found.repair.text.startswith(repair), found.repair


def test_the_timer_probe_reads_systemd_and_says_cron_otherwise(tmp_path: Path) -> None:
    spec = probe_specs(_expected(gc=True))["home"]
    script = probe_script(spec)
    assert f"cat {REGISTRY_GC_STATUS}" in script
    assert "systemctl show -p LoadState -p ActiveState forgeway-registry-gc.timer" in script
    # here (no systemd as PID 1 in the test's sandbox) the part says what cron has
    part = script[script.index("\nprintf '\\n@@ %s\\n' registry-gc-timer") :]
    part = part[: part.index("@@rc %s") + 20]
    done = subprocess.run(["sh", "-c", part], capture_output=True, text=True, check=False, timeout=30)
    assert "@@ registry-gc-timer\n" in done.stdout
    assert any(line in done.stdout for line in ("cron=absent", "cron=present", "LoadState="))


def _expected(gc: bool) -> Expected:
    raw, secret_keys = lab_placeholder_stack()
    resources = [SimpleNamespace(name=n, urn=u, custom=True, inputs={}) for n, u in URNS.items()]
    if gc:
        resources.append(SimpleNamespace(name="home-registry-gc", urn=GC_URN, custom=True, inputs={}))
    return expected_from_synthesis("lab", raw, secret_keys, resources)


def test_doctor_reads_it_only_where_the_program_has_it(tmp_path: Path) -> None:
    assert not probe_specs(_expected(gc=False))["home"].registry_gc
    specs = probe_specs(_expected(gc=True))
    assert specs["home"].registry_gc and not any(s.registry_gc for n, s in specs.items() if n != "home")
    status, ran = _real_status(tmp_path)
    out = "".join(
        f"\n@@ {n}\n{t}\n@@rc 0\n" for n, t in (("registry-gc-status", status), ("registry-gc-timer", ACTIVE))
    )
    with_gc = diagnose(_expected(gc=True), {"home": out}, ran)
    items = {(f.item, f.status) for f in with_gc if f.host == "home"}
    assert {("registry-gc", "ok"), ("registry-gc timer", "ok")} <= items
    text = render_text(_expected(gc=True), with_gc, ran)
    assert "registry-gc        last collection ok, 0.0 h ago, freed 4096 bytes" in text, text
    without = diagnose(_expected(gc=False), {"home": out}, ran)
    assert not {f.item for f in without} & {"registry-gc", "registry-gc timer"}


def test_the_program_has_it_under_the_name_and_stage_doctor_uses() -> None:
    """The repair's stage and script, and the resource doctor looks for, are the program's."""
    from tools.stack.synth import synthesize_in_subprocess, unwrap

    raw, secret_keys = lab_placeholder_stack()
    synthesis = synthesize_in_subprocess("lab", raw, secret_keys)
    expected = expected_from_synthesis("lab", raw, secret_keys, synthesis.resources)
    assert expected.registry_gc
    command = next(r for r in synthesis.resources if r.name == "home-registry-gc")
    create = str(unwrap(command.inputs)["create"])
    assert f'/forgeway/stage/"{REGISTRY_GC_STAGE} ' in create, create[:400]
    assert f'sh "$d"/{REGISTRY_GC_UP} ' in create
    gc = expected.config.registry.garbage_collection
    # the same arguments as doctor's staged_up (the command's text quotes them once more)
    args = f"{shlex.quote(gc.schedule)} {gc.timeout_minutes}".replace("'", "'\"'\"'")
    assert create.endswith(f'sh "$d"/{REGISTRY_GC_UP} {args} "$d"\''), create[-300:]
    up = staged_up("home", REGISTRY_GC_STAGE, REGISTRY_GC_UP, (gc.schedule, str(gc.timeout_minutes)))
    assert up.subject.endswith(
        f"/{REGISTRY_GC_UP} {shlex.quote(gc.schedule)} {gc.timeout_minutes} /etc/forgeway/stage/{REGISTRY_GC_STAGE}"
    )


def test_the_backup_is_judged_by_the_same_code() -> None:
    """judge.backup is judge.timed_job with the backup's names: one way to read a job's status."""
    part = Section(json.dumps({"result": "failed", "started": "2026-12-07T03:00:00Z", "error": "locked"}), 0)
    (found,) = judge.backup(part, "home", "daily", datetime.datetime(2026, 12, 7, 10, tzinfo=datetime.UTC))
    assert (found.item, found.status, found.detail) == (
        "backup",
        "fail",
        "the last backup failed (2026-12-07T03:00:00Z): locked",
    )
