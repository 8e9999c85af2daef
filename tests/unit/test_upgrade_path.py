"""The upgrade guard's rules (components/upgrade.py) over GitLab's whole table, and the
host check (gitlab-upgrade-check.sh) agreeing with them on a fake docker."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from components import upgrade
from components.scripts import script
from components.upgrade import Version, image_version, load_path, next_step, parse_version

PATH = load_path()


def v(text: str) -> Version:
    return parse_version(text)


def test_the_table_says_where_and_when_it_was_read() -> None:
    assert PATH.source.endswith("gitlab-org/gitlab/-/raw/master/config/upgrade_path.yml")
    assert PATH.read == "2026-12-07"
    keys = [s.minor_key for s in PATH.stops]
    assert keys == sorted(set(keys))
    assert [str(s) for s in PATH.stops if s.conditional] == ["17.1"]
    assert [str(s) for s in PATH.required][-9:] == [
        "16.11",
        "17.3",
        "17.5",
        "17.8",
        "17.11",
        "18.2",
        "18.5",
        "18.8",
        "18.11",
    ]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("gitlab/gitlab-ce:17.11.3-ce.0", "17.11.3"),
        ("gitlab/gitlab-ee:17.11.3-ee.0", "17.11.3-ee"),
        ("yrzr/gitlab-ce-arm64v8:18.5.1-ce.0", "18.5.1"),
        ("registry.example.org:5000/mirror/gitlab-ee:18.2.1-ee.0@sha256:" + "a" * 64, "18.2.1-ee"),
        ("forgeway-lab/gitlab-standin:17.10.0", "17.10.0"),
        ("forgeway-lab/gitlab-standin:17.11.3-ee", "17.11.3-ee"),
        ("gitlab/gitlab-ee:17.11.3", "17.11.3-ee"),  # a bare tag: the name says the edition
        ("forgeway-lab/gitlab-standin:1.0", None),
        ("gitlab/gitlab-ce@sha256:" + "b" * 64, None),
        ("registry.example.org:5000/gitlab", None),
    ],
)
def test_image_version_reads_the_tag(image: str, expected: str | None) -> None:
    said = image_version(image)
    assert (str(said) if said else None) == expected


def _cfg(image: str, version: str | None) -> Any:
    return SimpleNamespace(
        gitlab_host=SimpleNamespace(arch="amd64"),
        gitlab=SimpleNamespace(images={"amd64": image}, version=version),
    )


def test_target_version_needs_a_version_somewhere() -> None:
    assert str(upgrade.target_version(_cfg("gitlab/gitlab-ee:18.2.1-ee.0", None))) == "18.2.1-ee"
    assert str(upgrade.target_version(_cfg("forgeway-lab/gitlab-standin:1.0", "17.11.3"))) == "17.11.3"
    with pytest.raises(ValueError, match=r"gitlab\.images\.amd64: 'forgeway-lab/gitlab-standin:1\.0' .*gitlab\.ver"):
        upgrade.target_version(_cfg("forgeway-lab/gitlab-standin:1.0", None))
    with pytest.raises(ValueError, match=r"gitlab\.version: '18\.5\.1' but gitlab\.images\.amd64 .* says 18\.2\.1"):
        upgrade.target_version(_cfg("gitlab/gitlab-ce:18.2.1-ce.0", "18.5.1"))


def test_walking_the_whole_table_names_every_required_stop_in_turn() -> None:
    """From 8.10 towards 18.11: each refusal names the next required stop; deploying it
    (its latest patch) moves on; the conditional 17.1 is never demanded."""
    current, target, named = v("8.10.0"), v("18.11.4"), []
    while (verdict := next_step(current, target, PATH)).next_stop is not None:
        assert not verdict.ok and str(current) in verdict.message and str(target) in verdict.message
        stop = verdict.next_stop
        named.append(str(stop))
        assert next_step(current, v(f"{stop}.9"), PATH).ok  # the stop itself is allowed
        current = v(f"{stop}.9")
    assert verdict.ok
    assert named == [str(s) for s in PATH.required if s.minor_key < (18, 11)]


@pytest.mark.parametrize(
    ("current", "target", "ok", "says"),
    [
        (None, "17.3.0", True, "fresh install"),
        ("17.8.1", "17.8.7", True, "no required stop"),  # a patch bump
        ("17.8.7", "17.8.7", True, "configured version"),
        ("17.8.1", "17.11.3", True, "no required stop"),  # to the next stop
        ("17.8.1", "17.10.2", True, "no required stop"),  # short of the next stop
        ("17.8.1", "18.2.1", False, "required upgrade stop 17.11"),
        ("17.3.6", "17.8.1", False, "required upgrade stop 17.5"),
        ("16.11.10", "17.3.6", True, "no required stop"),  # the conditional 17.1 skipped
        ("16.11.10", "17.1.8", True, "no required stop"),  # ... or deployed
        ("17.1.8", "17.3.6", True, "no required stop"),
        ("17.11.3", "17.10.0", False, "downgrade"),
        ("17.11.3", "17.11.2", False, "downgrade"),  # a patch downgrade too
        ("17.11.3", "17.11.3-ee", False, "edition change"),
        ("17.11.3-ee", "17.11.3", False, "edition change"),
        ("18.11.2", "19.0.1", False, "past the upgrade path data"),
        ("18.8.1", "19.0.1", False, "required upgrade stop 18.11"),
    ],
)
def test_next_step_edges(current: str | None, target: str, ok: bool, says: str) -> None:
    verdict = next_step(v(current) if current else None, v(target), PATH)
    assert (verdict.ok, says in verdict.message) == (ok, True), verdict.message


def test_an_allowed_edition_change_still_follows_the_stops() -> None:
    assert next_step(v("17.11.3"), v("17.11.3-ee"), PATH, allow_edition_change=True).ok
    assert not next_step(v("17.8.1"), v("18.2.1-ee"), PATH, allow_edition_change=True).ok


# --- the host check agrees ------------------------------------------------------------


def _fake_docker(bin_dir: Path) -> None:
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "volume inspect" ] && [ -d "$FAKE_VOLUME" ] || exit 1\n'
        'case "$*" in *Mountpoint*) echo "$FAKE_VOLUME" ;; *Options*) echo ;; esac\n'
    )
    docker.chmod(0o755)


def _check(tmp_path: Path, current: str | None, target: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    volume = tmp_path / "volume"
    if current is not None:
        (volume / "gitlab-rails").mkdir(parents=True, exist_ok=True)
        (volume / "gitlab-rails" / "VERSION").write_text(current + "\n")
    args = upgrade.check_arguments(v(target), PATH, allow_edition_change=allow)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_VOLUME": str(volume)}
    names = ["home", "forgeway-gitlab", "forgeway-gitlab-data"]
    return subprocess.run(
        ["sh", "-c", script("gitlab-upgrade-check.sh"), "check", *names, *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


VERSIONS = ["16.7.2", "16.11.10", "17.1.8", "17.3.6", "17.5.1", "17.8.7", "17.10.0", "17.11.3", "17.11.3-ee",
            "18.2.1", "18.5.0", "18.11.2", "19.0.1"]  # fmt: skip


def test_the_host_check_agrees_with_next_step(tmp_path: Path) -> None:
    _fake_docker(tmp_path)
    for current, target in itertools.product(VERSIONS, VERSIONS):
        verdict = next_step(v(current), v(target), PATH)
        ran = _check(tmp_path, current, target)
        assert (ran.returncode == 0) == verdict.ok, (current, target, ran.stderr, verdict.message)
        if not verdict.ok:
            assert f"runs {current} " in ran.stderr and f"deploys {target}" in ran.stderr, ran.stderr
            assert "Nothing was changed on any host" in ran.stderr
            if verdict.next_stop is not None:
                assert f"required upgrade stop {verdict.next_stop}:" in ran.stderr


def test_the_host_check_allows_a_fresh_install_and_an_allowed_edition_change(tmp_path: Path) -> None:
    _fake_docker(tmp_path)
    fresh = _check(tmp_path, None, "18.5.1")
    assert fresh.returncode == 0 and "fresh install" in fresh.stdout
    assert _check(tmp_path, "17.11.3", "17.11.3-ee", allow=True).returncode == 0


# --- the pre-upgrade backup step, backups off ----------------------------------------


def _backup_step(tmp_path: Path, running: str, target: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "VERSION").write_text(running + "\n")
    docker = tmp_path / "docker"
    docker.write_text(
        f"#!/bin/sh\ncase $1 in inspect) exit 0 ;; cp) tar -C {data} -cf - VERSION ;; *) exit 1 ;; esac\n"
    )
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FORGEWAY_ETC": str(tmp_path / "etc")}
    args = ["home", "forgeway-gitlab", target, "manual", "lab", "24"]
    return subprocess.run(
        ["sh", "-c", script("gitlab-upgrade-backup.sh"), "gitlab-upgrade-backup.sh", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_backups_off_an_upgrade_waits_for_a_recorded_manual_backup(tmp_path: Path) -> None:
    assert "no upgrade, no backup" in _backup_step(tmp_path, "17.8.1", "17.8.1").stdout
    refused = _backup_step(tmp_path, "17.8.1", "17.11.3")
    assert refused.returncode == 1 and "backups are off" in refused.stderr and "not replaced" in refused.stderr
    marker = tmp_path / "etc" / "forgeway" / "upgrade" / "manual-backup-17.8.1"
    assert str(marker) in refused.stderr
    marker.touch()
    done = _backup_step(tmp_path, "17.8.1", "17.11.3")
    assert done.returncode == 0, done.stderr
    last = (marker.parent / "last-upgrade").read_text()
    assert last == "from=17.8.1\nto=17.11.3\nsnapshot=manual\nstack=lab\n"
    os.utime(marker, (time.time() - 25 * 3600,) * 2)  # older than 24 hours: not enough
    assert _backup_step(tmp_path, "17.8.1", "17.11.3").returncode == 1
