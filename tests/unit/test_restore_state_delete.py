"""The dead device's steps, offline: `pulumi state delete` as the lab applier emulates it,
and which resources a dead host leaves in the state (tools/lab/wipe.py); and `pulumi state
unprotect` (a forge switch's step)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.applier.state import ApplyError, Entry, State, state_delete, state_unprotect
from tools.lab.wipe import dead_host_resources
from tools.stack.configs import ROOT

VOLUME = "docker:index/volume:Volume::home-gitlab-data"
CONTAINER = "docker:index/container:Container::home-gitlab"
PROVIDER = "pulumi:providers:docker::home-docker"
TOKEN = "command:remote:Command::gitlab-api-token"  # noqa: S105 - a state key
ARCH = "command:remote:Command::home-arch"
RUNNER = "command:remote:Command::runner-arm-segment"


def _state(tmp_path: Path) -> State:
    state = State(tmp_path / "state.json")

    def add(key: str, deps: list[str], *, protect: bool = False, host: str = "", provider: str = "") -> None:
        typ, name = key.split("::")
        inputs = {"connection": {"host": host}} if host else {}
        state.entries[key] = Entry(typ, name, f"{name}-id", len(state.entries), inputs, {}, provider=provider,
                                   protect=protect, dependencies=deps)  # fmt: skip

    add(ARCH, [], host="198.51.100.2")
    add(PROVIDER, [ARCH])
    add(VOLUME, [PROVIDER], protect=True, provider=f"urn:pulumi:lab::forgeway::{PROVIDER}::home-docker-id")
    add(CONTAINER, [PROVIDER, VOLUME], provider=f"urn:pulumi:lab::forgeway::{PROVIDER}::home-docker-id")
    add(TOKEN, [CONTAINER, ARCH], host="198.51.100.2")
    add(RUNNER, [ARCH], host="198.51.100.3")
    state.save()
    return state


def test_a_protected_resource_needs_force_and_nothing_is_forgotten_without_it(tmp_path: Path) -> None:
    state = _state(tmp_path)
    with pytest.raises(ApplyError, match=r"home-gitlab-data is protected.*--force"):
        state_delete(state, [VOLUME, CONTAINER, TOKEN, PROVIDER])
    assert len(State.load(state.path).entries) == 6


def test_a_resource_others_depend_on_is_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match=r"home-gitlab cannot be deleted: .*gitlab-api-token depend"):
        state_delete(_state(tmp_path), [CONTAINER], force=True)


def test_target_dependents_takes_them_too_and_dependents_go_first(tmp_path: Path) -> None:
    state = _state(tmp_path)
    gone = state_delete(state, [f"urn:pulumi:lab::forgeway::forgeway:gitlab:GitLabServer${CONTAINER}"],
                        target_dependents=True)  # fmt: skip
    assert [e.key for e in gone] == [TOKEN, CONTAINER]
    assert set(State.load(state.path).entries) == {ARCH, PROVIDER, VOLUME, RUNNER}


def test_the_dead_hosts_resources_are_all_but_its_check(tmp_path: Path) -> None:
    state = _state(tmp_path)
    raw = json.loads(state.path.read_text())["entries"]
    found = dead_host_resources(raw, "home", "198.51.100.2")
    assert set(found) == {PROVIDER, VOLUME, CONTAINER, TOKEN}
    state_delete(state, found, force=True)
    assert set(State.load(state.path).entries) == {ARCH, RUNNER}


def test_the_cli_forgets_and_prints_each(tmp_path: Path) -> None:
    state = _state(tmp_path)
    argv = [sys.executable, "-m", "tools.applier", "state-delete", "--state", str(state.path), "--force",
            "--target-dependents", VOLUME]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    names = [json.loads(line)["name"] for line in done.stdout.splitlines()]
    assert names == ["gitlab-api-token", "home-gitlab", "home-gitlab-data"]
    refused = subprocess.run([*argv[:5], str(state.path), "nope::x"], capture_output=True, text=True, cwd=ROOT,
                             check=False)  # fmt: skip
    assert refused.returncode == 1 and "no resource nope::x" in refused.stderr


def test_unprotect_clears_the_flag_on_disk_and_an_unknown_one_changes_nothing(tmp_path: Path) -> None:
    state = _state(tmp_path)
    with pytest.raises(ApplyError, match=r"no resource nope::x"):
        state_unprotect(state, [VOLUME, "nope::x"])
    assert State.load(state.path).entries[VOLUME].protect
    argv = [sys.executable, "-m", "tools.applier", "state-unprotect", "--state", str(state.path),
            f"urn:pulumi:lab::forgeway::forgeway:gitlab:GitLabServer${VOLUME}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["op"] for line in done.stdout.splitlines()] == ["unprotect"]
    after = State.load(state.path).entries
    assert not after[VOLUME].protect and len(after) == 6
