"""The backup section and its secrets: defaults, and each error naming key, value and what is expected."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import PROJECT, ConfigError, parse_stack
from components.config.backup import Retention, repository_display, repository_host
from tests.stacks import lab_stack

pytestmark = pytest.mark.unit

BACKUP = f"{PROJECT}:backup"
PASSWORD = f"{PROJECT}:backup_password"
ENVIRONMENT = f"{PROJECT}:backup_environment"


def _stack(backup: dict[str, Any] | None = None, **secrets: Any) -> tuple[dict[str, Any], list[str]]:
    config, secret_keys = lab_stack()
    if backup is not None:
        config[BACKUP] = backup
    for key, value in secrets.items():
        full = f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
            secret_keys = [k for k in secret_keys if k != full]
        else:
            config[full] = value
            secret_keys = [*secret_keys, full]
    return config, secret_keys


def _problems(config: dict[str, Any], secret_keys: list[str]) -> dict[str, tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        parse_stack(config, secret_keys)
    return {p.key: (p.value, p.expected) for p in raised.value.problems}


def test_defaults_back_up_daily_to_the_vps_and_keep_a_sane_history() -> None:
    cfg, secrets = parse_stack(*_stack())
    b = cfg.backup
    assert (b.enabled, b.schedule, b.randomized_delay_minutes, b.timeout_minutes) == (True, "*-*-* 03:15:00", 30, 360)
    assert b.repository is None
    assert b.retention.restic_args() == ["--keep-last=3", "--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"]
    assert secrets["backup_password"]


def test_the_password_is_required_while_enabled_and_the_error_says_how_to_set_it() -> None:
    problems = _problems(*_stack(backup_password=None))
    value, expected = problems[PASSWORD]
    assert value == "nothing"
    assert f'pulumi config set --secret {PROJECT}:backup_password "$(openssl rand -base64 32)"' in expected
    assert "kept off the device" in expected and "backup.enabled' false" in expected
    cfg, _ = parse_stack(*_stack({"enabled": False}, backup_password=None))
    assert not cfg.backup.enabled


def test_a_plaintext_or_short_password_is_refused_without_showing_it() -> None:
    config, secret_keys = _stack()
    problems = _problems(config, [k for k in secret_keys if k != PASSWORD])
    assert problems[PASSWORD][0] == "[secret]" and "plaintext in the stack file" in problems[PASSWORD][1]
    problems = _problems(*_stack(backup_password="short"))  # noqa: S106 - test data
    assert problems[PASSWORD] == ("[secret]", "String should have at least 12 characters")
    problems = _problems(*_stack(backup_password="two\nlines-of-password"))  # noqa: S106 - test data
    assert problems[PASSWORD][0] == "[secret]" and "one line" in problems[PASSWORD][1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aws_access_key_id", "an environment variable name of A-Z, 0-9 and _"),
        ("1PASSWORD", "an environment variable name"),
        ("RESTIC_PASSWORD", "forgeway sets RESTIC_REPOSITORY* from backup.repository"),
        ("RESTIC_REPOSITORY", "forgeway sets RESTIC_REPOSITORY*"),
    ],
)
def test_environment_names_are_checked(name: str, expected: str) -> None:
    problems = _problems(*_stack(backup_environment={name: "value", "AWS_ACCESS_KEY_ID": "ok"}))
    assert list(problems) == [f"{ENVIRONMENT}.{name}"]
    value, message = problems[f"{ENVIRONMENT}.{name}"]
    assert value == "[secret]" and expected in message


def test_environment_for_an_s3_repository_parses() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret"}
    cfg, secrets = parse_stack(*_stack({"repository": "s3:https://s3.example.org/bucket"}, backup_environment=env))
    assert cfg.backup.repository == "s3:https://s3.example.org/bucket" and secrets["backup_environment"] == env


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("/srv/backups", "a local path keeps the backup on the disk it must survive"),
        ("local:/srv/backups", "a local path keeps the backup"),
        ("ftp://example.org/x", "a restic repository URL starting with one of sftp:, rest:, s3:"),
        ("rest:https://user:pw@backup.example.org/", "a URL without a password"),
        ("sftp://u:pw@backup.example.org//restic", "a URL without a password"),
        ("sftp: x", "without spaces"),
        ("s3:", "a location after 's3:'"),
    ],
)
def test_repositories_that_cannot_be_used_are_refused(repository: str, expected: str) -> None:
    problems = _problems(*_stack({"repository": repository}))
    value, message = problems[f"{BACKUP}.repository"]
    assert expected in message, message
    # A URL's user and password are never shown (problems.show), the rest is.
    assert value == f'"{repository}"' or ("[secret]@" in value and "pw" not in value), value


@pytest.mark.parametrize(
    ("repository", "why"),
    [
        ("sftp:backup@198.51.100.2:/srv/restic", "its hosts[].address of 'home'"),
        ("sftp://backup@10.8.0.2:22//srv/restic", "its tunnel address of 'home'"),
        ("rest:http://localhost:8000/", "a loopback name of 'home'"),
        ("rest:https://127.0.0.1:8000/", "a loopback address of 'home'"),
    ],
)
def test_a_repository_on_the_gitlab_host_itself_is_refused(repository: str, why: str) -> None:
    problems = _problems(*_stack({"repository": repository}))
    value, message = problems[f"{BACKUP}.repository"]
    assert why in message and "would die with the device" in message, message
    assert value.endswith(repository.rsplit("@", 1)[-1] + '"'), value


def test_a_repository_on_another_machine_is_taken() -> None:
    for repository in ("sftp:backup@203.0.113.10:/srv/restic", "rest:https://10.8.0.1:8000/", "b2:bucket:/forgeway"):
        cfg, _ = parse_stack(*_stack({"repository": repository}))
        assert cfg.backup.repository == repository


@pytest.mark.parametrize(
    ("backup", "key", "expected"),
    [
        ({"schedule": "every night"}, "schedule", "a systemd OnCalendar spec"),
        ({"randomized_delay_minutes": 721}, "randomized_delay_minutes", "less than or equal to 720"),
        ({"timeout_minutes": 5}, "timeout_minutes", "greater than or equal to 10"),
        (
            {"retention": {"keep_last": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}},
            "retention",
            "at least one",
        ),
        ({"retention": {"keep_yearly": 1}}, "retention.keep_yearly", "unknown key"),
        ({"enabled": "yes please"}, "enabled", "boolean"),
    ],
)
def test_section_errors_name_the_key(backup: dict[str, Any], key: str, expected: str) -> None:
    problems = _problems(*_stack(backup))
    assert f"{BACKUP}.{key}" in problems, problems
    assert expected in problems[f"{BACKUP}.{key}"][1], problems


def test_retention_names_only_the_policies_above_zero() -> None:
    assert Retention(keep_last=0, keep_daily=14, keep_weekly=0, keep_monthly=0).restic_args() == ["--keep-daily=14"]


def test_repository_host_and_display() -> None:
    assert repository_host("sftp:user@host.example:/x") == "host.example"
    assert repository_host("sftp://user@10.8.0.1:2202//restic") == "10.8.0.1"
    assert repository_host("rest:https://backup.example.org:8000/repo") == "backup.example.org"
    assert repository_host("s3:https://s3.example.org/bucket") is None
    assert repository_display("rest:https://u:secret@h/") == "rest:https://u@h/"
