"""The lab applier's ``command:local:Command`` (tools/applier/local_command.py): run on this
machine as the deploying user, as pulumi-command 1.2.1's local provider runs it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tools.applier.apply import Applier, ApplyError
from tools.stack.synth import RegistrationOptions

pytestmark = pytest.mark.unit

LOCAL = "command:local:Command"


def _args(name: str, inputs: dict[str, Any]) -> SimpleNamespace:
    args = SimpleNamespace(typ=LOCAL, name=name, custom=True, inputs=inputs, provider="")
    args.options = RegistrationOptions()
    return args


def test_a_local_command_creates_updates_and_deletes_on_this_machine(tmp_path: Path) -> None:
    target = tmp_path / "ca.pem"
    inputs: dict[str, Any] = {
        "create": 'umask 077; cat > "$TARGET"; echo wrote',
        "update": 'echo "was: $PULUMI_COMMAND_STDOUT"; cat > "$TARGET"',
        "delete": 'rm -f "$TARGET"; pwd',
        "stdin": "-----BEGIN CERTIFICATE-----\nlab\n-----END CERTIFICATE-----\n",
        "environment": {"TARGET": str(target)},
        "dir": str(tmp_path),
        "triggers": ["one"],
    }

    def up(given: dict[str, Any] | None) -> tuple[Applier, dict[str, Any]]:
        applier = Applier(tmp_path / "state.json", lambda _: None, seed=0, max_delay_s=0)
        out: dict[str, Any] = {}
        if given is not None:
            _, out = applier.handle(_args("gitlab-api-ca", given))
        applier.finish()
        return applier, out

    applier, out = up(inputs)
    assert target.read_text() == inputs["stdin"] and target.stat().st_mode & 0o777 == 0o600
    assert out["stdout"] == "wrote" and out["stderr"] == ""
    applier, out = up({**inputs, "stdin": "new\n"})
    assert [c.op for c in applier.changes] == ["update"]
    assert out["stdout"] == "was: wrote" and target.read_text() == "new\n"
    applier, out = up({**inputs, "stdin": "new\n", "triggers": ["two"]})  # replace: create, then the old delete
    assert [c.op for c in applier.changes] == ["replace"] and not target.exists()
    up(None)
    assert not target.exists()
    with pytest.raises(ApplyError, match=f"does not emulate assetPaths of {LOCAL}"):
        up({**inputs, "assetPaths": ["*"]})


def test_a_failing_local_command_names_its_step_without_its_stdin(tmp_path: Path) -> None:
    applier = Applier(tmp_path / "state.json", lambda _: None, seed=0, max_delay_s=0)
    given = {"create": "cat; echo boom >&2; exit 3", "stdin": "s3cret-value"}
    with pytest.raises(ApplyError) as failure:
        applier.handle(_args("c", given))
    message = str(failure.value)
    assert "c: local `create` failed on this machine (exit 3)" in message and "boom" in message
    assert "s3cret-value" not in message and "[secret]" in message
