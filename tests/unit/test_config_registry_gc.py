"""registry.garbage_collection: defaults, each bad value named by key, and the staged settings."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import PROJECT, ConfigError, parse_stack
from components.registry_gc import settings_file
from tests.stacks import lab_stack

pytestmark = pytest.mark.unit

REGISTRY = f"{PROJECT}:registry"


def _parse(gc: dict[str, Any] | None) -> Any:
    config, secret_keys = lab_stack()
    if gc is not None:
        config[REGISTRY] = {**config.get(REGISTRY, {}), "garbage_collection": gc}
    return parse_stack(config, secret_keys)[0]


def test_defaults_a_weekly_window_outside_the_nightly_backup() -> None:
    gc = _parse(None).registry.garbage_collection
    assert (gc.enabled, gc.schedule, gc.timeout_minutes) == (True, "Sun *-*-* 04:30:00", 120)
    assert _parse({"schedule": "Mon..Fri 02:00", "timeout_minutes": 5}).registry.garbage_collection.timeout_minutes == 5


@pytest.mark.parametrize(
    ("gc", "key", "expected"),
    [
        ({"schedule": "every sunday"}, "schedule", "a systemd OnCalendar spec"),
        ({"schedule": "Sun 25:00"}, "schedule", "a systemd OnCalendar spec"),
        ({"timeout_minutes": 4}, "timeout_minutes", "greater than or equal to 5"),
        ({"timeout_minutes": 1441}, "timeout_minutes", "less than or equal to 1440"),
        ({"window": "Sun"}, "window", "unknown key"),
    ],
)
def test_errors_name_the_key_and_what_is_expected(gc: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _parse(gc)
    problems = {p.key: p.expected for p in raised.value.problems}
    full = f"{PROJECT}:registry.garbage_collection.{key}"
    assert full in problems and expected in problems[full], problems


def test_settings_name_the_container_the_storage_and_the_backups_lock() -> None:
    lines = settings_file().splitlines()
    assert lines[0].startswith("#")
    assert dict(line.split("=", 1) for line in lines[1:]) == {
        "CONTAINER": "forgeway-gitlab",
        "STORAGE": "/var/opt/gitlab/gitlab-rails/shared/registry",
        "BACKUP_LOCK": "/var/lib/forgeway/backup/lock",
    }


def test_the_backups_lock_is_the_one_forgeway_backup_takes() -> None:
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[2] / "components" / "scripts"
    assert "state=/var/lib/forgeway/backup\n" in (scripts / "backup-up.sh").read_text()
    # forgeway-backup takes $state/lock through host-files.sh's job_lock
    assert 'job_lock "$state" "a backup"' in (scripts / "forgeway-backup.sh").read_text()
    assert 'job_lock() {\n  exec 9>"$1/lock"' in (scripts / "host-files.sh").read_text()
    assert "BACKUP_LOCK=/var/lib/forgeway/backup/lock" in settings_file()
