"""docker-prune-up/-down.sh and forgeway-docker-prune with FORGEWAY_ETC under the test's directory.

The scripts run as components/runners.py runs them (staged_command / unstaged_command),
against a real dockerd in a namespace of its own (DOCKER_HOST). Up installs the script,
its settings and the units (FORGEWAY_SYSTEMD=yes: files only, no systemd runs here);
the unit's ExecStart, run by hand as the timer would, prunes an unused imported image
at threshold 0 and nothing at threshold 99, and keeps it while younger than keep hours.
A second up changes nothing; FORGEWAY_SYSTEMD=no swaps the units for a cron file; down
leaves FORGEWAY_ETC as it was before up.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.scripts import script, staged_command, unstaged_command
from tests.lab.netns import scratch_dockerd
from tests.lab.tree import Listing, listing
from tools.lab.docker import DaemonInfo, docker, docker_env

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.80"
STAGE = "docker-prune"  # components/runners.py PRUNE_STAGE
NAME = "forgeway-docker-prune"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonInfo]:
    with scratch_dockerd("fwdp", ADDRESS, index=13) as info:
        yield info


def _env(etc: Path, daemon: DaemonInfo, systemd: str) -> dict[str, str]:
    return {**os.environ, **docker_env(daemon), "FORGEWAY_ETC": str(etc), "FORGEWAY_SYSTEMD": systemd}


def _sh(command: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command[:60]}... failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


def _up(
    etc: Path, daemon: DaemonInfo, systemd: str, *, threshold: int, keep: int, calendar: str = "hourly"
) -> list[str]:
    files = {name: script(name) for name in ("docker-prune-up.sh", "docker-prune.sh")}
    command = staged_command(STAGE, files, "docker-prune-up.sh", [str(threshold), str(keep), calendar])
    return [line for line in _sh(command, _env(etc, daemon, systemd)) if "docker-prune" in line]


def _down(etc: Path, daemon: DaemonInfo) -> list[str]:
    return _sh(
        unstaged_command(STAGE, shlex.join(["sh", "-c", script("docker-prune-down.sh")])), _env(etc, daemon, "no")
    )


def _exec_start(etc: Path) -> list[str]:
    service = (etc / "systemd/system" / f"{NAME}.service").read_text()
    lines = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, service
    return shlex.split(lines[0].removeprefix("ExecStart="))


def _run_unit(etc: Path) -> str:
    """What the timer runs, with the environment of a unit: no DOCKER_HOST (the settings have it)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    started = time.monotonic()
    done = subprocess.run(_exec_start(etc), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{NAME}: "), done.stdout
    print(f"prune run ({time.monotonic() - started:.2f}s): {lines[0]}")
    return lines[0]


def _import(daemon: DaemonInfo, tag: str) -> str:
    """``docker import`` of a one-file root file system (random: a new image each time); its ID."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = os.urandom(64 << 10)
        info = tarfile.TarInfo("noise.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return docker(daemon, "import", "-", tag, input=out.getvalue()).stdout.decode().strip()


def _import_unused_image(daemon: DaemonInfo) -> str:
    """A dangling image (a newer import took its tag), used by no container; its ID."""
    old = _import(daemon, "forgeway-prune-test:latest")
    _import(daemon, "forgeway-prune-test:latest")
    docker(daemon, "create", "--name", "uses-latest", "forgeway-prune-test:latest", "/noise.bin")  # in use: kept
    tags = docker(daemon, "image", "inspect", "--format", "{{json .RepoTags}}", old).stdout
    assert tags.strip() == b"[]", tags
    return old


def _has_image(daemon: DaemonInfo, image_id: str) -> bool:
    return docker(daemon, "image", "inspect", image_id, check=False).returncode == 0


def test_up_prunes_converges_and_down_removes_what_up_added(tmp_path: Path, daemon: DaemonInfo) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    before = listing(etc)

    first = _up(etc, daemon, "yes", threshold=99, keep=0)
    assert sum(line.startswith("changed ") for line in first) == 5, first
    assert any("systemd is not running here" in line for line in first), first
    home = etc / "forgeway" / "docker-prune"
    assert (home / NAME).stat().st_mode & 0o777 == 0o755
    assert (home / NAME).read_text() == script("docker-prune.sh")
    settings = (home / "settings").read_text()
    assert "THRESHOLD_PERCENT=99\nKEEP_HOURS=0\n" in settings and f"DOCKER_HOST={daemon.host}\n" in settings
    timer = (etc / "systemd/system" / f"{NAME}.timer").read_text()
    for line in ("OnCalendar=hourly", "Persistent=true", "RandomizedDelaySec=5min", "WantedBy=timers.target"):
        assert f"\n{line}\n" in timer, timer
    assert "Type=oneshot" in (etc / "systemd/system" / f"{NAME}.service").read_text()
    wants = etc / "systemd/system/timers.target.wants" / f"{NAME}.timer"
    assert os.readlink(wants) == str(etc / "systemd/system" / f"{NAME}.timer")
    assert _exec_start(etc) == [str(home / NAME)]
    assert not (etc / "cron.d").exists()
    installed = listing(etc)

    second = _up(etc, daemon, "yes", threshold=99, keep=0)
    assert second and all(line.startswith("ok ") for line in second), second
    assert listing(etc) == installed

    # threshold 99: this disk is not that full, nothing goes
    image_id = _import_unused_image(daemon)
    time.sleep(1.1)  # until=0h means created before now
    line = _run_unit(etc)
    assert "(threshold 99%): nothing to prune" in line, line
    assert _has_image(daemon, image_id)

    # threshold 0, keep 1 h: the image is too young
    _up(etc, daemon, "yes", threshold=0, keep=1)
    line = _run_unit(etc)
    assert "(threshold 0%): pruned older than 1h, images: 0 deleted" in line, line
    assert _has_image(daemon, image_id)

    # threshold 0, keep 0 h: pruned
    _up(etc, daemon, "yes", threshold=0, keep=0)
    line = _run_unit(etc)
    assert "(threshold 0%): pruned older than 0h, images: 2 deleted" in line, line  # the image and its layer
    assert "build cache: " in line and "; now " in line, line
    assert not _has_image(daemon, image_id)
    assert _has_image(daemon, "forgeway-prune-test:latest")

    _cron_then_down(etc, daemon, before)


def _cron_then_down(etc: Path, daemon: DaemonInfo, before: Listing) -> None:
    """Without systemd: the cron file instead of the units; then down, twice."""
    home = etc / "forgeway" / "docker-prune"
    wants = etc / "systemd/system/timers.target.wants" / f"{NAME}.timer"
    cron_run = _up(etc, daemon, "no", threshold=80, keep=72)
    assert any(line.endswith(f"cron.d/{NAME}") for line in cron_run), cron_run
    assert not (etc / "systemd/system" / f"{NAME}.timer").exists() and not wants.is_symlink()
    cron = (etc / "cron.d" / NAME).read_text()
    assert f"\n0 * * * * root '{home / NAME}' " in cron, cron
    assert (etc / "cron.d" / NAME).stat().st_mode & 0o777 == 0o644
    assert all(line.startswith("ok ") for line in _up(etc, daemon, "no", threshold=80, keep=72))
    _up(etc, daemon, "no", threshold=80, keep=72, calendar="*-*-* 03:30")
    assert "\n30 3 * * * root " in (etc / "cron.d" / NAME).read_text()

    down = _down(etc, daemon)
    assert any("removed" in line for line in down), down
    assert listing(etc) == before
    again = _down(etc, daemon)
    assert again and all(line.startswith("ok ") for line in again), again
    assert listing(etc) == before


def test_up_refuses_bad_arguments(tmp_path: Path, daemon: DaemonInfo) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    for name in ("docker-prune-up.sh", "docker-prune.sh"):
        (stage / name).write_text(script(name))
    env = _env(tmp_path / "etc", daemon, "no")
    for args, message in (
        (["101", "1", "hourly"], "THRESHOLD 101 is above 100"),
        (["80", "x", "hourly"], "KEEP_HOURS 'x' is not a number of hours"),
        (["80", "1", "bogus"], "ON_CALENDAR 'bogus' is not a systemd calendar"),
        (["80", "1", "hourly\nExecStart=/bin/false"], "has characters OnCalendar does not use"),
    ):
        done = subprocess.run(["sh", str(stage / "docker-prune-up.sh"), *args], env=env, capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 1 and message in done.stderr, (args, done.stdout, done.stderr)
    assert not (tmp_path / "etc").exists()


def test_prune_goes_on_without_a_builder(tmp_path: Path, daemon: DaemonInfo) -> None:
    """A client without `docker builder` (no buildx, old CLI): noted, the image prune still counts."""
    real = shutil.which("docker", path="/usr/local/bin:/usr/bin")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(
        '#!/bin/sh\n[ "$1" != builder ] || { echo "docker: \'builder\' is not a docker command." >&2; exit 1; }\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    settings = tmp_path / "settings"
    settings.write_text(f"THRESHOLD_PERCENT=0\nKEEP_HOURS=0\nDOCKER_HOST={daemon.host}\n")
    prune = tmp_path / NAME
    prune.write_text(script("docker-prune.sh"))
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(["sh", str(prune), str(settings)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "build cache: skipped (docker: 'builder' is not a docker command.)" in done.stdout, done.stdout
    assert len(done.stdout.splitlines()) == 1, done.stdout
