"""A remote.Command's environment, delivered by the lab applier as pulumi-command does.

pulumi-command 1.2.1 (provider/pkg/provider/remote/commandOutputs.go, ``run``) sends
``environment`` and, with ``addPreviousOutputInEnv`` (default true), the previous
stdout/stderr as SSH env requests. sshd takes only the names its AcceptEnv allows: a
refused ``environment`` variable fails the command before it runs; a refused
PULUMI_COMMAND_STDOUT/STDERR is a warning. These tests run the applier's command path
(Applier.handle, as the mock monitor calls it; Applier.finish for the delete) against
namespace sshds with and without AcceptEnv.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.lab.netns import Lab, LabHost
from tools.applier.apply import Applier, ApplyError
from tools.stack.synth import RegistrationOptions

COMMAND = "command:remote:Command"
PREVIOUS = ("PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR")


def _connection(host: LabHost) -> dict[str, Any]:
    return {
        "host": host.address,
        "port": host.port,
        "user": "root",
        "hostKey": host.host_key,
        "privateKey": host.client_key.read_text(),
    }


def _register(applier: Applier, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What the mock monitor does for one registration (tools/stack/synth.py)."""
    args = SimpleNamespace(typ=COMMAND, name=name, custom=True, inputs=inputs, provider="")
    args.options = RegistrationOptions()
    return applier.handle(args)


def _apply(state: Path, logs: list[str], name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    applier = Applier(state, logs.append, seed=0, max_delay_s=0)
    try:
        _, outputs = _register(applier, name, inputs)
    finally:
        applier.close()
    return outputs


def _delete_all(state: Path, logs: list[str]) -> None:
    """A run that registers nothing: every resource in the state is deleted."""
    applier = Applier(state, logs.append, seed=0, max_delay_s=0)
    try:
        applier.finish()
    finally:
        applier.close()


def test_environment_refused_by_sshd_fails_before_the_command_runs(lab: Lab, tmp_path: Path) -> None:
    host = lab.add_host("noenv")  # sshd's default: no AcceptEnv
    ran = tmp_path / "ran"
    inputs = {
        "connection": _connection(host),
        "create": f"touch {ran}",
        "environment": {"FORGEWAY_PROBE": "the-value"},
    }
    logs: list[str] = []
    with pytest.raises(ApplyError) as failure:
        _apply(tmp_path / "state.json", logs, "probe", inputs)
    assert "could not set environment variable 'FORGEWAY_PROBE'" in str(failure.value)
    assert "AcceptEnv" in str(failure.value)
    assert "the-value" not in str(failure.value) + "".join(logs)
    assert not ran.exists(), "the command ran although sshd refused its environment"


def test_environment_accepted_by_sshd_reaches_the_command_and_delete_gets_the_previous_output(
    lab: Lab, tmp_path: Path
) -> None:
    host = lab.add_host("env", accept_env=["FORGEWAY_PROBE", "PULUMI_COMMAND_*"])
    seen = tmp_path / "seen-at-delete"
    inputs = {
        "connection": _connection(host),
        "create": 'printf "%s\\n" "$FORGEWAY_PROBE"; echo to-stderr >&2',
        "delete": f'printf "%s|%s|%s" "$FORGEWAY_PROBE" "$PULUMI_COMMAND_STDOUT" "$PULUMI_COMMAND_STDERR" > {seen}',
        "environment": {"FORGEWAY_PROBE": "value with 'quotes' and $dollars"},
    }
    logs: list[str] = []
    state = tmp_path / "state.json"
    outputs = _apply(state, logs, "probe", inputs)
    assert outputs["stdout"] == "value with 'quotes' and $dollars"
    assert outputs["stderr"] == "to-stderr"
    _delete_all(state, logs)
    assert seen.read_text() == "value with 'quotes' and $dollars|value with 'quotes' and $dollars|to-stderr"
    assert not any("warning" in line for line in logs), logs


def test_previous_output_refused_by_sshd_is_a_warning_and_off_with_add_previous_output_in_env_false(
    lab: Lab, tmp_path: Path
) -> None:
    host = lab.add_host("noprev", accept_env=["FORGEWAY_PROBE"])
    seen = tmp_path / "seen-at-delete"
    inputs = {
        "connection": _connection(host),
        "create": "echo printed",
        "delete": f'printf "%s" "${{PULUMI_COMMAND_STDOUT-unset}}" > {seen}',
    }
    logs: list[str] = []
    state = tmp_path / "state.json"
    _apply(state, logs, "probe", inputs)
    _delete_all(state, logs)
    assert seen.read_text() == "unset"  # the delete ran all the same
    assert [line for line in logs if "warning" in line] == [
        f"warning: probe: unable to set 'PULUMI_COMMAND_STDOUT' on host {host.address} (its sshd does not accept it)"
    ]
    # Off: nothing is sent, so nothing is refused (stderr was empty, so it never was).
    logs.clear()
    _apply(state, logs, "probe", {**inputs, "addPreviousOutputInEnv": False})
    _delete_all(state, logs)
    assert seen.read_text() == "unset"
    assert not any("warning" in line for line in logs), logs
