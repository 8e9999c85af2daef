"""The offline plan (`make preview`) of a forge switch, both ways: a stack applied with one
forge (its state recorded as the lab applier keeps it), planned with the other. The plan
shows the new forge's resources to create, the forge-switch check in it, and refuses the
old forge's protected volumes' deletes by name: the engine would stop there too, which is
why the forge-switch check runs first (components/forge_switch.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.program.test_plan import _plan, _tree
from tests.stacks import ROOT

SWITCHES = [
    # (stack applied, stack planned, the old forge's protected volumes, a new forge's resource)
    ("prod", "gitea-example", ("jetson-gitlab-config", "jetson-gitlab-logs", "jetson-gitlab-data"), "jetson-gitea"),
    ("gitea-example", "prod", ("jetson-gitea-data",), "jetson-gitlab"),
]


@pytest.mark.parametrize(("applied", "planned", "volumes", "new"), SWITCHES, ids=["gitlab-to-gitea", "gitea-to-gitlab"])
def test_a_forge_switch_plans_the_new_forge_and_refuses_the_old_volumes(
    tmp_path: Path, applied: str, planned: str, volumes: tuple[str, ...], new: str
) -> None:
    state = tmp_path / "state.json"
    code = "import sys; from tests.program.test_plan import record_state; record_state(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(state), applied], cwd=ROOT, check=True, timeout=180)
    done = _plan("--stack", planned, "--state", str(state))
    assert done.returncode == 1, "a plan that deletes protected volumes is refused (exit 1)"
    refused = done.stdout.split("Refused", 1)[1].split("\n\n", 1)[0]
    named = {line.split("::")[-1].split(":")[0] for line in refused.splitlines() if "::" in line}
    assert named == set(volumes), refused
    ops = {(line.name, line.op) for line in _tree(done.stdout)}
    assert (new, "create") in ops, f"{new} is not created"
    check = [op for name, op in ops if name == "jetson-forge-check"]
    assert check and check[0] in ("create", "update"), check  # the guard looks at the other forge's volumes
