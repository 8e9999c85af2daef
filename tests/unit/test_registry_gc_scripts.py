"""registry-gc-up.sh / registry-gc-down.sh and forgeway-registry-gc, run as the program runs them
(the host-service seam's create and delete), with FORGEWAY_ETC under the test's own tree.

The up converges (a second run changes nothing), installs the units (FORGEWAY_SYSTEMD=yes: files
only, no systemd here) or the cron file, and the down leaves the tree as it found it. The run
script talks to a fake ``docker`` on PATH whose container is a directory: it measures the
registry's storage, runs ``gitlab-ctl registry-garbage-collect -m`` (the fake deletes the files it
is told to), and writes status.json; a failing collection and a running backup are reported.
The real chain (systemd, the stand-in's gitlab-ctl, docker-registry) is
tests/lab/test_lab_registry_gc.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.host_service import HostService
from components.registry_gc import RegistryGc, settings_file  # noqa: F401 - the component this tests
from components.scripts import script

pytestmark = pytest.mark.unit

FAKE_DOCKER = r"""#!/bin/sh
# docker exec forgeway-gitlab {find STORAGE -type f -printf '%s\n' | gitlab-ctl registry-garbage-collect -m}
c=$FAKE_CONTAINER
[ "$1" = exec ] && [ "$2" = forgeway-gitlab ] || { echo "Error: No such container: $2" >&2; exit 1; }
shift 2
case $1 in
  find) find "$c$2" -type f -printf '%s\n' ;;
  test) test "$2" "$c$3" ;;
  gitlab-ctl)
    echo "$*" >>"$c/gitlab-ctl.log"
    [ ! -e "$c/fail" ] || { echo "failed to garbage-collect: boom" >&2; exit 1; }
    echo "ok: down: registry: 0s, normally up"
    [ ! -e "$c/untagged" ] || xargs rm -f <"$c/untagged"
    echo "ok: run: registry: (pid 1) 0s" ;;
  *) exit 1 ;;
esac
"""


def _service(schedule: str = "Sun *-*-* 04:30:00", timeout: str = "120", storage: str = "/registry") -> HostService:
    return HostService(
        stage="registry-gc",
        up="registry-gc-up.sh",
        down="registry-gc-down.sh",
        args=[schedule, timeout],
        files={
            "forgeway-registry-gc.sh": script("forgeway-registry-gc.sh"),
            "settings": settings_file(storage=storage, backup_lock="/nonexistent/lock"),
        },
    )


def _sh(command: str, root: Path, systemd: str = "yes", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "FORGEWAY_ETC": str(root / "etc"), "FORGEWAY_SYSTEMD": systemd, **env}
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=environ, check=False, timeout=60)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("systemd", ["yes", "no"])
def test_up_converges_and_down_undoes_it(tmp_path: Path, systemd: str) -> None:
    (tmp_path / "etc").mkdir()
    baseline = _tree(tmp_path)
    service = _service()
    create = service.create()
    assert isinstance(create, str)
    first = _sh(create, tmp_path, systemd)
    assert first.returncode == 0, first.stderr
    home = tmp_path / "etc" / "forgeway" / "registry-gc"
    assert os.access(home / "forgeway-registry-gc", os.X_OK)
    settings = (home / "settings").read_text()
    assert f"STATE={tmp_path}/var/lib/forgeway/registry-gc" in settings and "CONTAINER=forgeway-gitlab" in settings
    units = tmp_path / "etc" / "systemd" / "system"
    if systemd == "yes":
        timer = (units / "forgeway-registry-gc.timer").read_text()
        assert "OnCalendar=Sun *-*-* 04:30:00" in timer and "Persistent=true" in timer
        assert "TimeoutStartSec=120min" in (units / "forgeway-registry-gc.service").read_text()
        assert (units / "timers.target.wants" / "forgeway-registry-gc.timer").is_symlink()
    else:
        cron = (tmp_path / "etc" / "cron.d" / "forgeway-registry-gc").read_text()
        assert "30 4 * * 0 root timeout 120m" in cron, cron  # cron cannot say the weekday calendar: Sundays 04:30
    second = _sh(create, tmp_path, systemd)
    assert second.returncode == 0 and "changed" not in second.stdout, second.stdout
    down = _sh(service.delete(), tmp_path, systemd)
    assert down.returncode == 0, down.stderr
    assert _tree(tmp_path) == baseline, sorted(_tree(tmp_path) - baseline)
    again = _sh(service.delete(), tmp_path, systemd)
    assert again.returncode == 0 and "changed" not in again.stdout and "removed" not in again.stdout


def test_a_bad_window_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    create = _service(schedule="Sun; rm -rf /").create()
    assert isinstance(create, str)
    done = _sh(create, tmp_path)
    assert done.returncode == 1 and "ON_CALENDAR 'Sun; rm -rf /' has characters" in done.stderr
    assert not (tmp_path / "etc" / "forgeway" / "registry-gc").exists()


def _installed(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    (tmp_path / "etc").mkdir()
    container = tmp_path / "container"
    blobs = container / "registry" / "blobs"
    blobs.mkdir(parents=True)
    (container / "registry" / "docker" / "registry" / "v2" / "repositories").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CONTAINER": str(container)}
    create = _service().create()
    assert isinstance(create, str)
    assert _sh(create, tmp_path, **env).returncode == 0
    run = tmp_path / "etc" / "forgeway" / "registry-gc" / "forgeway-registry-gc"
    return run, container, env


def _status(tmp_path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((tmp_path / "var/lib/forgeway/registry-gc/status.json").read_text())
    return loaded


def test_a_run_collects_and_reports_the_space_it_freed(tmp_path: Path) -> None:
    run, container, env = _installed(tmp_path)
    blobs = container / "registry" / "blobs"
    (blobs / "kept").write_bytes(b"k" * 1000)
    (blobs / "untagged").write_bytes(b"u" * 4096)
    (container / "untagged").write_text(f"{blobs / 'untagged'}\n")
    done = _sh(str(run), tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert "freed 4096 bytes (5096 -> 1000)" in done.stdout, done.stdout
    assert (container / "gitlab-ctl.log").read_text() == "gitlab-ctl registry-garbage-collect -m\n"
    status = _status(tmp_path)
    assert {k: status[k] for k in ("result", "bytes_before", "bytes_after", "freed_bytes", "error")} == {
        "result": "ok", "bytes_before": 5096, "bytes_after": 1000, "freed_bytes": 4096, "error": None,
    }  # fmt: skip


def test_a_registry_nothing_was_pushed_to_is_not_collected(tmp_path: Path) -> None:
    """docker-registry's garbage-collect fails without a repositories directory (checked
    with Debian's 2.8.2); the timer must not fail every week on a fresh GitLab."""
    run, container, env = _installed(tmp_path)
    (container / "registry" / "docker" / "registry" / "v2" / "repositories").rmdir()
    done = _sh(str(run), tmp_path, **env)
    assert done.returncode == 0 and "nothing was pushed yet" in done.stdout, done.stdout + done.stderr
    assert not (container / "gitlab-ctl.log").exists()  # the registry was never stopped
    status = _status(tmp_path)
    assert (status["result"], status["freed_bytes"], status["error"]) == ("ok", 0, None)


def test_a_failed_collection_is_reported_and_exits_non_zero(tmp_path: Path) -> None:
    run, container, env = _installed(tmp_path)
    (container / "fail").touch()
    done = _sh(str(run), tmp_path, **env)
    assert done.returncode == 1 and "FAILED: gitlab-ctl registry-garbage-collect -m failed" in done.stderr
    status = _status(tmp_path)
    assert status["result"] == "failed" and "boom" in str(status["error"]) and status["freed_bytes"] is None


def test_a_running_backup_makes_the_run_skip(tmp_path: Path) -> None:
    run, container, env = _installed(tmp_path)
    lock = tmp_path / "backup.lock"
    lock.touch()
    settings = run.parent / "settings"
    settings.write_text(settings.read_text().replace("BACKUP_LOCK=/nonexistent/lock", f"BACKUP_LOCK={lock}"))
    with subprocess.Popen(["flock", str(lock), "sleep", "30"]) as holder:
        try:
            for _ in range(50):  # until flock holds it
                if subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode != 0:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
            done = _sh(str(run), tmp_path, **env)
        finally:
            holder.kill()
    assert done.returncode == 0 and "skipped: a backup is running" in done.stdout, done.stdout + done.stderr
    assert _status(tmp_path)["result"] == "skipped"
    assert not (container / "gitlab-ctl.log").exists()
