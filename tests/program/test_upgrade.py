"""The upgrade guard as registered (components/upgrade.py): a read-only check every change
on every host waits for, a backup before the container, a wait after it."""

from __future__ import annotations

import shlex

import pytest

from components.config import PROJECT
from components.upgrade import check_arguments, load_path, parse_version
from tests.program.conftest import Stack, _synth, as_root
from tests.program.test_hosts import COMMAND, DOCKER_ON_HOST
from tests.stacks import lab_stack
from tools.stack.synth import Registration, unwrap

TARGETS = {"prod": "18.5.1", "lab": "17.11.3"}  # Pulumi.prod.yaml's tag; Pulumi.lab.yaml's gitlab.version


def _named(stack: Stack, suffix: str) -> Registration:
    (found,) = [c for c in stack.synth.of_type(COMMAND) if c.name.endswith(suffix)]
    return found


def _words(cmd: Registration) -> list[str]:
    return shlex.split(as_root(unwrap(cmd.inputs["create"])))


def test_the_check_holds_the_target_and_the_stops_below_it(stack: Stack) -> None:
    check = _named(stack, "-gitlab-upgrade-check")
    gitlab_host = next(h for h in stack.config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"])
    assert check.name == f"{gitlab_host['name']}-gitlab-upgrade-check"
    words = _words(check)
    assert words[:2] == ["sh", "-c"] and words[3] == "gitlab-upgrade-check.sh"
    target = parse_version(TARGETS[stack.name])
    expected = check_arguments(target, load_path(), allow_edition_change=False)
    assert words[4:] == [gitlab_host["name"], "forgeway-gitlab", "forgeway-gitlab-data", *expected]
    assert expected[0] == TARGETS[stack.name] and "16.11" in expected  # a stop below both targets


def test_every_host_change_waits_for_the_upgrade_check(stack: Stack) -> None:
    check = _named(stack, "-gitlab-upgrade-check")
    arch = {c.urn for c in stack.synth.of_type(COMMAND) if c.name.endswith("-arch")}
    assert arch <= set(check.dependencies)  # after sudo and docker are known to work
    changes = [c for c in stack.synth.of_type(COMMAND) if c.urn not in arch | {check.urn}]
    changes += [r for t in DOCKER_ON_HOST for r in stack.synth.of_type(t)]
    assert changes
    for change in changes:
        assert check.urn in change.dependencies, f"{change.urn} does not wait for the upgrade check"


def test_the_container_waits_for_the_backup_and_the_wait_for_the_container(stack: Stack) -> None:
    backup, wait = _named(stack, "-gitlab-pre-upgrade-backup"), _named(stack, "-gitlab-upgrade-wait")
    (container,) = [c for c in stack.synth.of_type("docker:index/container:Container") if c.name.endswith("-gitlab")]
    assert backup.urn in container.dependencies
    assert container.urn in wait.dependencies
    words = _words(backup)
    assert words[3] == "gitlab-upgrade-backup.sh"
    assert words[5:8] == ["forgeway-gitlab", TARGETS[stack.name], "backup"]
    assert _words(wait)[3:7] == ["gitlab-upgrade-wait.sh", words[4], "forgeway-gitlab", TARGETS[stack.name]]


def test_backups_off_the_pre_upgrade_step_asks_for_a_manual_backup() -> None:
    config, secret_keys = lab_stack()
    config[f"{PROJECT}:backup"] = {"enabled": False}
    del config[f"{PROJECT}:backup_password"]
    off = _synth("lab-manual", (config, [k for k in secret_keys if k != f"{PROJECT}:backup_password"]))
    assert _words(_named(off, "-gitlab-pre-upgrade-backup"))[7] == "manual"


def test_no_version_anywhere_is_a_config_error_naming_the_key() -> None:
    config, secret_keys = lab_stack()
    del config[f"{PROJECT}:gitlab"]["version"]
    with pytest.raises(
        RuntimeError, match=r"gitlab\.images\.(amd64|arm64): 'forgeway-lab/gitlab-standin:1\.0' does not"
    ):
        _synth("lab-no-version", (config, secret_keys))
