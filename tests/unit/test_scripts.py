"""Host scripts: valid shell, shellcheck-clean, and they do what they say."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.scripts import script_command

pytestmark = pytest.mark.unit

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "components" / "scripts").glob("*.sh"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_and_shellcheck_clean(path: Path) -> None:
    subprocess.run(["sh", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make setup` (tools/ci/apt-packages.txt)")
    # -x: follow `. "$(dirname "$0")/host-files.sh"` (its directive names the library beside it)
    done = subprocess.run([shellcheck, "-x", path.name], cwd=path.parent, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def _run_with_machine(tmp_path: Path, machine: str, expected: str) -> subprocess.CompletedProcess[str]:
    # A fake uname first on PATH stands in for another CPU.
    fake = tmp_path / "uname"
    fake.write_text(f"#!/bin/sh\necho {machine}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", "-c", script_command("check-arch.sh", expected, "jetson")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(("machine", "expected"), [("aarch64", "arm64"), ("x86_64", "amd64")])
def test_check_arch_accepts_the_configured_arch(tmp_path: Path, machine: str, expected: str) -> None:
    done = _run_with_machine(tmp_path, machine, expected)
    assert done.returncode == 0 and done.stdout.splitlines()[0] == expected
    assert re.fullmatch(r"cores [1-9][0-9]*", done.stdout.splitlines()[1]), done.stdout


def test_check_arch_refuses_a_mismatch_naming_host_and_arch(tmp_path: Path) -> None:
    done = _run_with_machine(tmp_path, "armv7l", "arm64")
    assert done.returncode == 1
    assert "host 'jetson' is armv7l" in done.stderr and "arch: arm64" in done.stderr


def test_values_are_quoted_on_the_command_line(tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    done = _run_with_machine(tmp_path, "x86_64", f"arm64; touch {marker}")
    assert done.returncode == 1
    assert not marker.exists()


def _library(tmp_path: Path, body: str, systemd: str = "yes") -> subprocess.CompletedProcess[str]:
    """``body`` run after sourcing host-files.sh, with FORGEWAY_ETC in tmp_path."""
    etc = tmp_path / "etc"
    lib = Path(__file__).resolve().parents[2] / "components" / "scripts" / "host-files.sh"
    text = f"set -eu\nme=t tag=t\n. {lib}\n{body}\n"
    env = {**os.environ, "FORGEWAY_ETC": str(etc), "FORGEWAY_SYSTEMD": systemd}
    return subprocess.run(["sh", "-c", text], env=env, capture_output=True, text=True, check=False)


def test_a_unit_installed_twice_changes_once_and_remove_units_takes_exactly_it(tmp_path: Path) -> None:
    """The seam's shell side: install_unit converges; remove_units undoes it and nothing else."""
    unit = tmp_path / "unit"
    unit.write_text("[Unit]\nDescription=x\n")
    install = f'install_unit {unit} "$units/forgeway-x.service" "$units/multi-user.target.wants"'
    first = _library(tmp_path, install)
    assert first.returncode == 0, first.stderr
    assert [line.split(":")[0] for line in first.stdout.splitlines()] == ["changed t", "changed t"], first.stdout
    again = _library(tmp_path, install + '\n[ -z "$changes" ] && echo unchanged')
    assert again.stdout.strip() == "unchanged", again.stdout
    units = tmp_path / "etc" / "systemd" / "system"
    (units / "other.service").write_text("not ours\n")
    down = _library(
        tmp_path, 'remove_units "$units/multi-user.target.wants/forgeway-x.service" "$units/forgeway-x.service"'
    )
    assert down.returncode == 0, down.stderr
    left = sorted(str(p.relative_to(units)) for p in units.rglob("*"))
    assert left == ["multi-user.target.wants", "other.service"], left


# --- backups (issue 18): the calendar for cron, and what forgeway-backup and backup-up refuse -----


@pytest.mark.parametrize(
    ("calendar", "fields"),
    [
        ("daily", "0 0 * * *"),
        ("hourly", "0 * * * *"),
        ("*-*-* 03:15:00", "15 3 * * *"),
        ("*-*-01 04:00", "0 4 1 * *"),
        ("*:0/30", "0-59/30 * * * *"),
        ("Mon..Fri 03:00", ""),  # weekdays: cron's words differ; the caller says what it runs instead
    ],
)
def test_cron_fields_say_a_calendar_in_crons_words_or_nothing(tmp_path: Path, calendar: str, fields: str) -> None:
    done = _library(tmp_path, f"cron_fields '{calendar}'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == fields


# install_timer: its systemd and cron files converge, switch and go (the booted path: tests/lab/test_lab_nspawn.py)
TIMER = (
    "install_timer forgeway-t '*-*-* 03:15:00' /opt/t/run 'test at 80% disk use' 5 {timeout} '0 * * * *'"
    " After=x.service Nice=10"
)


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def test_install_timer_converges_switches_and_remove_timer_undoes_exactly_it(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "systemd/system").mkdir(parents=True)
    (etc / "systemd/system/other.timer").write_text("not ours\n")
    before = sorted(str(p.relative_to(etc)) for p in etc.rglob("*"))
    saved = f"save_dirs {tmp_path / 'dirs'}"
    units = etc / "systemd/system"

    first = _library(tmp_path, f"{TIMER.format(timeout=0)}\n{saved}")
    assert first.returncode == 0, first.stderr
    assert [line.split(": ", 1)[0] for line in first.stdout.splitlines()] == ["changed t"] * 3 + ["note t"], first
    assert "installed, not started" in first.stdout.splitlines()[3]
    files = _files(etc)
    assert files["systemd/system/timers.target.wants/forgeway-t.timer"] == str(units / "forgeway-t.timer")
    service = files["systemd/system/forgeway-t.service"]
    assert "\nDescription=forgeway: test at 80%% disk use\nAfter=x.service\n" in service, service
    assert '\nType=oneshot\nExecStart="/opt/t/run"\nNice=10\n' in service and "Timeout" not in service, service
    timer = files["systemd/system/forgeway-t.timer"]
    assert "\nOnCalendar=*-*-* 03:15:00\nPersistent=true\nRandomizedDelaySec=5min\n" in timer, timer
    again = _library(tmp_path, f"{TIMER.format(timeout=0)}\n{saved}\n" + '[ -z "$changes" ] && echo unchanged')
    assert again.stdout == "unchanged\n" and _files(etc) == files, again.stdout

    longer = _library(tmp_path, TIMER.format(timeout=30))
    assert longer.stdout.splitlines()[0] == f"changed t: {units}/forgeway-t.service", longer.stdout
    assert "\nTimeoutStartSec=30min\n" in (units / "forgeway-t.service").read_text()

    # Without systemd: the cron file, the units gone; twice; a calendar cron cannot say takes FALLBACK.
    cron = _library(tmp_path, f"{TIMER.format(timeout=30)}\n{saved}", systemd="no")
    assert cron.returncode == 0, cron.stderr
    assert sorted(_files(etc)) == ["cron.d/forgeway-t", "systemd/system/other.timer"], cron.stdout
    line = (etc / "cron.d/forgeway-t").read_text().splitlines()[-1]
    assert line.startswith("15 3 * * * root timeout 30m '/opt/t/run'"), line
    assert (etc / "cron.d/forgeway-t").stat().st_mode & 0o777 == 0o644
    body = f"{TIMER.format(timeout=30)}\n" + '[ -z "$changes" ] && echo unchanged'
    assert _library(tmp_path, body, systemd="no").stdout == "unchanged\n"
    weekdays = _library(tmp_path, TIMER.format(timeout=0).replace("*-*-* 03:15:00", "Mon 03:00"), systemd="no")
    assert "runs at '0 * * * *' (cron's time fields) instead" in weekdays.stdout, weekdays.stdout
    assert (etc / "cron.d/forgeway-t").read_text().splitlines()[-1].startswith("0 * * * * root '/opt/t/run'")

    back = _library(tmp_path, TIMER.format(timeout=0))  # and back to systemd: the cron file goes
    assert f"removed {etc}/cron.d/forgeway-t" in back.stdout.splitlines(), back.stdout
    assert _files(etc) == files

    down = _library(tmp_path, f"remove_timer forgeway-t\nremove_saved_dirs {tmp_path / 'dirs'}")
    assert down.returncode == 0, down.stderr
    assert sorted(str(p.relative_to(etc)) for p in etc.rglob("*")) == before
    assert _library(tmp_path, 'remove_timer forgeway-t\n[ -z "$changes" ] && echo unchanged').stdout == "unchanged\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("'bad name' daily /x d 0 0 '0 * * * *'", "timer name 'bad name'"),
        ("t daily x d 0 0 '0 * * * *'", "EXEC 'x' is not an absolute path"),
        ("t daily '/x y' d 0 0 '0 * * * *'", "EXEC '/x y' has characters"),
        ("t bogus /x d 0 0 '0 * * * *'", "timer t: OnCalendar 'bogus' is not a systemd calendar"),
        ("t daily /x d 5m 0 '0 * * * *'", "DELAY '5m' is not a number of minutes"),
        ("t daily /x d 0 0 '0 * * * *; rm'", "FALLBACK '0 * * * *; rm' is not cron time fields"),
        ("t daily /x d 0 0 '0 * * * *' Nice", "SETTING 'Nice' is not KEY=VALUE"),
    ],
)
def test_install_timer_refuses_bad_arguments_before_any_change(tmp_path: Path, args: str, message: str) -> None:
    done = _library(tmp_path, f"install_timer {args}")
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "etc").exists()


def _backup_home(tmp_path: Path, repository: str = "/nonexistent/repo") -> Path:
    home = tmp_path / "etc" / "forgeway" / "backup"
    home.mkdir(parents=True)
    scripts = Path(__file__).resolve().parents[2] / "components" / "scripts"
    from components.scripts import script

    for name in ("forgeway-backup", "forgeway-restic"):
        (home / name).write_text(script(f"{name}.sh"))
        (home / name).chmod(0o755)
    (home / "settings").write_text(
        f"REPOSITORY={repository}\nREPOSITORY_SHOWN={repository}\nHOST=jetson\nCONTAINER=forgeway-gitlab\n"
        f"RETENTION=--keep-last=1\nREGISTRY=included\nSTATE={tmp_path / 'state'}\n"
    )
    (home / "password").write_text("a-password-for-tests")
    assert scripts.is_dir()
    return home


def test_forgeway_backup_without_gitlab_fails_visibly(tmp_path: Path) -> None:
    home = _backup_home(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "restic").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "restic").chmod(0o755)
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "FORGEWAY_ETC": str(tmp_path / "etc")}
    done = subprocess.run([str(home / "forgeway-backup")], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    why = "cannot read GitLab's version from container forgeway-gitlab: Cannot connect to the Docker daemon"
    assert f"FAILED: {why}" in done.stderr
    import json

    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["result"] == "failed" and status["error"] == why, status
    assert status["finished"] and status["snapshot"] is None and status["repository"] == "/nonexistent/repo"
    assert (tmp_path / "state" / "status.json").stat().st_mode & 0o777 == 0o644


def test_backup_up_refuses_without_restic_or_a_password(tmp_path: Path) -> None:
    from components.scripts import script, staged_command

    files = {n: script(n) for n in ("backup-up.sh", "forgeway-backup.sh", "forgeway-restic.sh")}
    files |= {"settings": "REPOSITORY=/x\n", "known_hosts": ""}
    command = staged_command("backup", files, "backup-up.sh", ["daily", "30", "360"])
    env = {**os.environ, "FORGEWAY_ETC": str(tmp_path / "etc"), "FORGEWAY_SYSTEMD": "no"}
    no_restic = {**env, "PATH": "/usr/sbin:/sbin:" + ":".join(p for p in env["PATH"].split(":") if "bin" in p)}
    restic = shutil.which("restic")
    if restic is not None:  # hide it: a directory of links without restic
        shadow = tmp_path / "bin"
        shadow.mkdir()
        for d in no_restic["PATH"].split(":"):
            for tool in Path(d).glob("*") if Path(d).is_dir() else []:
                if tool.name != "restic" and not (shadow / tool.name).exists():
                    (shadow / tool.name).symlink_to(tool)
        no_restic["PATH"] = str(shadow)
    done = subprocess.run(
        ["sh", "-c", command], input="pw\n", env=no_restic, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "restic is not installed on this host: apt-get install restic" in done.stderr
    bad = staged_command("backup", files, "backup-up.sh", ["every night", "30", "360"])
    done = subprocess.run(["sh", "-c", bad], input="pw\n", env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "ON_CALENDAR 'every night' is not a systemd calendar" in done.stderr


def test_staged_files_arrive_byte_for_byte_and_the_command_is_stable(tmp_path: Path) -> None:
    """stage.sh (gzip in base64) writes each file exactly, an empty one too; the same files
    give the same command (an unchanged service must not run again)."""
    from components.scripts import decode_staged, encode_staged, staged_command

    files = {"run.sh": "echo staged\n", "empty": "", "settings": "A='b c'\n\u00e9\n", "big": script_text(10_000)}
    command = staged_command("probe", files, "run.sh", [])
    assert command == staged_command("probe", dict(reversed(files.items())), "run.sh", [])
    assert all(decode_staged(encode_staged(text)) == text for text in files.values())
    env = {**os.environ, "FORGEWAY_ETC": str(tmp_path / "etc")}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout == "staged\n", done.stderr
    stage = tmp_path / "etc" / "forgeway" / "stage" / "probe"
    assert {p.name: p.read_text() for p in stage.iterdir()} == files


def test_a_command_too_long_for_one_host_argument_is_refused_naming_its_stage() -> None:
    from components.scripts import MAX_ARGUMENT, staged_command

    noise = os.urandom(MAX_ARGUMENT).hex()  # incompressible: gzip cannot save it
    with pytest.raises(ValueError, match=r"stage 'huge': its command is \d+ bytes.*131072 \(Linux's MAX_ARG_STRLEN\)"):
        staged_command("huge", {"run.sh": "true\n", "blob": noise}, "run.sh", [])


def script_text(lines: int) -> str:
    return "".join(f"echo line {i}\n" for i in range(lines))
