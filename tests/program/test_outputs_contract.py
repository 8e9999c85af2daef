"""The outputs contract does not change by accident.

tests/program/outputs_contract.json is a checked-in snapshot of components/outputs.py
OUTPUTS (name, type, secret, stable). Other projects read these outputs with a
StackReference, so removing or renaming one, or changing its type or secret flag, breaks
them: these tests fail until the snapshot is updated in the same change, on purpose.
That the program exports exactly OUTPUTS (names and secret flags) is
test_program.py::test_outputs_match_the_documented_contract; the test below adds that
every output is exported by at least one example stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.outputs import OUTPUTS, OutputSpec
from tests.program.conftest import Stack

SNAPSHOT = Path(__file__).with_name("outputs_contract.json")
HOW_TO_UPDATE = (
    "If the change is deliberate: regenerate the README contract with "
    "`PYTHONPATH=. .venv/bin/python -m tools.ci.reference`, put this entry in "
    f"{SNAPSHOT.relative_to(SNAPSHOT.parents[2])} (one object per output, in OUTPUTS order), "
    "and for a stable output say in the commit message that it breaks consumers."
)


def _entry(spec: OutputSpec) -> dict[str, Any]:
    return {"name": spec.name, "type": spec.type, "secret": spec.secret, "stable": spec.stable}


def _snapshot() -> dict[str, dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(SNAPSHOT.read_text())
    return {e["name"]: e for e in entries}


def _contract() -> dict[str, dict[str, Any]]:
    return {o.name: _entry(o) for o in OUTPUTS}


def test_no_output_is_removed_or_renamed() -> None:
    contract = _contract()
    gone = [
        f"{e['name']!r} ({'STABLE: consumers break' if e['stable'] else 'unstable'})"
        for e in _snapshot().values()
        if e["name"] not in contract
    ]
    assert not gone, (
        f"outputs in the snapshot but no longer in components/outputs.py OUTPUTS (removed or renamed): "
        f"{', '.join(gone)}. {HOW_TO_UPDATE.replace('put this entry in', 'drop them from')}"
    )


def test_every_output_is_in_the_snapshot() -> None:
    snapshot = _snapshot()
    for name, entry in _contract().items():
        assert name in snapshot, f"new output {name!r} is not in the snapshot. {HOW_TO_UPDATE}: {json.dumps(entry)}"


def test_no_output_changes_its_type_secret_flag_or_stability() -> None:
    snapshot = _snapshot()
    for name, entry in _contract().items():
        before = snapshot.get(name)
        if before is None:
            continue  # test_every_output_is_in_the_snapshot
        changed = sorted(k for k in entry if entry[k] != before.get(k))
        assert not changed, (
            f"output {name!r} changed {', '.join(changed)}: snapshot {json.dumps(before)}, "
            f"OUTPUTS {json.dumps(entry)}. {HOW_TO_UPDATE}: {json.dumps(entry)}"
        )


def test_every_contract_output_is_exported_by_some_example_stack(
    prod: Stack, lab: Stack, gitea: Stack, gitea_woodpecker: Stack
) -> None:
    # Conditional outputs (`when`) are not in every stack, but a contract entry that no
    # example stack exports is one no test has seen the program produce.
    stacks = (prod, lab, gitea, gitea_woodpecker)
    exported = {name for stack in stacks for name in stack.synth.outputs}
    never = [o.name for o in OUTPUTS if o.name not in exported]
    assert not never, f"in the contract but exported by none of prod, lab, gitea-example (+ woodpecker): {never}"
