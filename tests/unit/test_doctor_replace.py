"""The applier's ``"replace": [URN]`` (tools/applier/apply.py), which the lab runs for doctor's
``pulumi up --replace URN``: the resource is replaced though nothing changed; others stay."""

from __future__ import annotations

from pathlib import Path

from tools.applier.apply import Applier
from tools.stack.synth import RegistrationOptions

TYPE = "random:index/randomPassword:RandomPassword"
URN = f"urn:pulumi:lab::forgeway::forgeway:runner_registration:RunnerRegistration${TYPE}::gitlab-api-token-value"


def _apply(state: Path, replace: list[str]) -> dict[str, str]:
    applier = Applier(state, lambda _: None, seed=0, max_delay_s=0, replace=replace)
    results = {}
    for name in ("gitlab-api-token-value", "home-gitlab-root-password"):
        _, outputs = applier._handle(TYPE, name, {"length": 20}, "", RegistrationOptions())
        results[name] = outputs["result"]
    ops = {c.name: c.op for c in applier.changes}
    results.update({f"op {name}": op for name, op in ops.items()})
    return results


def test_replace_makes_a_new_value_and_leaves_the_rest(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = _apply(state, [])
    again = _apply(state, [])
    assert again == {**first, "op gitlab-api-token-value": "same", "op home-gitlab-root-password": "same"}
    replaced = _apply(state, [URN])
    assert replaced["op gitlab-api-token-value"] == "replace"
    assert replaced["gitlab-api-token-value"] != first["gitlab-api-token-value"]
    assert replaced["op home-gitlab-root-password"] == "same"
    assert replaced["home-gitlab-root-password"] == first["home-gitlab-root-password"]


def test_replace_of_a_command_runs_delete_and_create(tmp_path: Path) -> None:
    """A type that only ``triggers`` replaces (as the forwarding command): replaced, not updated."""
    log = tmp_path / "log"
    inputs = {"create": f"echo create >>{log}", "delete": f"echo delete >>{log}"}
    urn = "urn:pulumi:lab::forgeway::forgeway:x:X$command:local:Command::c"
    for replace in ([], [], [urn]):
        applier = Applier(tmp_path / "state.json", lambda _: None, seed=0, max_delay_s=0, replace=replace)
        applier._handle("command:local:Command", "c", inputs, "", RegistrationOptions())
    assert [c.op for c in applier.changes] == ["replace"]
    assert log.read_text().split() == ["create", "create", "delete"]  # the engine's order: create, then delete
