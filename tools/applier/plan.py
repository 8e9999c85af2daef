"""`make preview`: forgeway's offline plan, in the shape of `pulumi preview`.

This is not `pulumi preview` and not the Pulumi engine. The program runs under Pulumi's
mock monitor (tools/stack/synth.py); no provider runs, so ids, keys, certificates and command
output of resources the plan would create are the mocks' stand-ins. What each resource
would go through is decided the way the lab applier decides it (tools/applier/apply.py),
against the applier's recorded state (``.lab/state.json`` for the lab stack, or
``--state PATH``):

- a resource whose inputs (secret markers removed, as the applier receives them)
  equal the recorded ones is ``same``; it gets the recorded outputs, as under the
  applier, so what depends on it sees the values it saw then;
- a changed one is ``replace`` if a changed input is in the applier's ``REPLACE_ON``
  set for its type (or a certificate is due for renewal), else ``update``;
- one the state has and the program no longer registers is ``delete``;
- without a state file, everything is ``create``.

The state holds no components (the applier records only custom resources): a
component is ``same`` when something under it is in the state, else ``create``.

Nothing secret is printed: secret stack outputs show as ``[secret]``, inputs are never
shown (only the names of changed ones), and the text is checked for every secret
config value (and every secret output value) before it is printed.

    python -m tools.applier.plan --stack lab|prod|<name> [--state PATH]

Exit status: 0 with a plan; 1 when the plan holds a step the engine would refuse
(deleting or replacing a protected resource), after printing it; 2 on a config or
state problem (the message names it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.applier.apply import REPLACE_ON
from tools.applier.docker import _provider_deletes_first
from tools.applier.plan_text import SECRET_MASK, Decision, Plan, PlanError, Step, render
from tools.applier.state import Entry, State, delete_order
from tools.applier.tls import _due_for_renewal
from tools.stack.synth import (
    PROJECT,
    Synthesis,
    _mock_state,
    stack_config_strings,
    synthesize,
    unwrap,
)

__all__ = ["PlanError", "Planner", "load_stack_config", "main", "make_plan", "plan_stack"]

ROOT = Path(__file__).resolve().parent.parent.parent
LAB_DIR = ROOT / ".lab"
LAB_STATE = LAB_DIR / "state.json"
LAB_TOPOLOGY = LAB_DIR / "topology.json"
STACK_TYPE = "pulumi:pulumi:Stack"


# --- config ---------------------------------------------------------------------------


def _passphrase() -> str | None:
    """PULUMI_CONFIG_PASSPHRASE(_FILE), as the CLI reads it; None if neither is set."""
    if "PULUMI_CONFIG_PASSPHRASE" in os.environ:
        return os.environ["PULUMI_CONFIG_PASSPHRASE"]
    if path := os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        try:
            return Path(path).read_text().rstrip("\n")
        except OSError as exc:
            raise PlanError(f"PULUMI_CONFIG_PASSPHRASE_FILE={path}: {exc.strerror}") from exc
    return None


def load_stack_config(stack: str) -> tuple[dict[str, Any], list[str], str]:
    """(config, secret keys, where the config came from) for a stack, as `pulumi` would
    hand it to the program; for the lab, with the lab's per-run values."""
    from cryptography.exceptions import InvalidTag

    from tools.stack.configs import EXAMPLE_PASSPHRASE, lab_placeholder_stack
    from tools.stack.file import load_stack_file

    if not re.fullmatch(r"[A-Za-z0-9._-]+", stack):
        raise PlanError(f"--stack {stack!r}: a stack name is letters, digits, '.', '_' and '-'")
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise PlanError(f"--stack {stack}: no stack file {path.name} in {ROOT}")
    try:
        if stack == "lab":
            if LAB_TOPOLOGY.exists():
                from tools.lab.config import lab_config

                config, secret_keys = lab_config(json.loads(LAB_TOPOLOGY.read_text()))
                return config, secret_keys, f"{path.name} with the lab's keys and tokens from .lab/"
            config, secret_keys = lab_placeholder_stack()
            return config, secret_keys, f"{path.name} with placeholder keys and tokens (no lab built: no .lab/)"
        passphrase = _passphrase()
        if passphrase is None and stack in ("prod", "gitea-example"):
            passphrase = EXAMPLE_PASSPHRASE  # the example stacks' published passphrase (README)
        config, secret_keys = load_stack_file(path, passphrase)
    except PermissionError as exc:
        raise PlanError(f"cannot read {exc.filename}: the lab writes .lab/ as root, owner-only; run as root") from exc
    except OSError as exc:
        raise PlanError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except (ValueError, InvalidTag) as exc:
        # A wrong passphrase fails the salt's check ("incorrect passphrase").
        raise PlanError(
            f"{path.name}: {exc or 'a secure value does not decrypt'}; set PULUMI_CONFIG_PASSPHRASE "
            "(or PULUMI_CONFIG_PASSPHRASE_FILE) to this stack's passphrase"
        ) from exc
    return config, secret_keys, path.name


def _validate(config: Mapping[str, Any], secret_keys: list[str]) -> None:
    """The program's own config check, before anything runs (its message names each key
    and shows [secret] for secret values)."""
    from components.config import ConfigError, parse_stack

    try:
        parse_stack(config, secret_keys)
    except ConfigError as exc:
        raise PlanError(str(exc)) from exc


def _secret_config_strings(config: Mapping[str, Any], secret_keys: Iterable[str]) -> list[str]:
    return [s for key in secret_keys if key in config for s in _strings(config[key])]


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) and value else []


# --- the decisions, made while the program runs -----------------------------------------


def _diff_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) input names; "differs" is the applier's test (a missing
    key and None are alike)."""
    differs = sorted(k for k in {*old, *new} if new.get(k) != old.get(k))
    added = [k for k in differs if k not in old]
    removed = [k for k in differs if k not in new]
    return added, removed, [k for k in differs if k in old and k in new]


class Planner:
    """The synthesis handler: decides each custom resource's op as the applier would,
    and answers with what the applier would answer (recorded outputs when unchanged)."""

    def __init__(self, state: State | None) -> None:
        self.state = state
        self.decisions: dict[str, Decision] = {}
        self.secret_values: list[str] = []  # recorded outputs that are secret: never printed

    def handle(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)  # as the applier answers a component
        typ, name = str(args.typ), str(args.name)
        key = f"{typ}::{name}"
        inputs = unwrap(args.inputs)  # what the applier compares (tools/applier/apply.py, handle)
        mock = _mock_state(typ, args.inputs)  # the default mock's answer: stand-ins, secrets marked
        previous = self.state.entries.get(key) if self.state is not None else None
        if previous is None:
            self.decisions[key] = Decision("create")
            return f"{name}-id", mock
        recorded = self._recorded(previous, mock)
        added, removed, changed = _diff_keys(previous.inputs, inputs)
        different = {*added, *removed, *changed}
        if not different:
            if _due_for_renewal(previous):
                self.decisions[key] = Decision("replace", note="due for renewal")
                return f"{name}-id", mock
            self.decisions[key] = Decision("same")
            return previous.id, recorded
        replace_on = REPLACE_ON.get(typ, set())
        op = "replace" if "*" in replace_on or different & replace_on else "update"
        self.decisions[key] = Decision(op, added, removed, changed)
        if op == "replace":
            return f"{name}-id", mock
        # An update keeps the resource and what it computed; the inputs are the new ones.
        return previous.id, {**mock, **recorded, **args.inputs}

    def _recorded(self, previous: Entry, mock: Mapping[str, Any]) -> dict[str, Any]:
        """The recorded outputs, with those the mock marks secret marked secret again
        (the state holds them plain; the engine would keep them secret)."""
        import pulumi

        outputs: dict[str, Any] = {}
        for k, v in previous.outputs.items():
            if isinstance(mock.get(k), pulumi.Output):
                self.secret_values += _strings(v)
                outputs[k] = pulumi.Output.secret(v)
            else:
                outputs[k] = v
        return outputs


# --- the plan ----------------------------------------------------------------------------


def _diff_text(decision: Decision) -> str:
    parts = []
    if decision.added:
        parts.append("+" + ",".join(decision.added))
    if decision.removed:
        parts.append("-" + ",".join(decision.removed))
    if decision.changed:
        parts.append("~" + ",".join(decision.changed))
    return "".join(parts)


def make_plan(
    synthesis: Synthesis,
    planner: Planner,
    *,
    config_source: str = "",
    state_path: Path | None = None,
    secret_values: Sequence[str] = (),
) -> Plan:
    """The steps, as a tree by parent (the stack first, siblings by name), then deletes."""
    state = planner.state
    stack_urn = f"urn:pulumi:{synthesis.stack}::{PROJECT}::{STACK_TYPE}::{PROJECT}-{synthesis.stack}"
    by_urn = synthesis.by_urn()
    children: dict[str, list[str]] = {}
    for reg in synthesis.resources:
        parent = reg.parent if reg.parent in by_urn else stack_urn
        children.setdefault(parent, []).append(reg.urn)
    for urns in children.values():
        urns.sort(key=lambda u: (by_urn[u].name, by_urn[u].type))

    def recorded_under(urn: str) -> bool:
        for child in children.get(urn, []):
            reg = by_urn[child]
            decision = planner.decisions.get(f"{reg.type}::{reg.name}")
            if (decision is not None and decision.op != "create") or recorded_under(child):
                return True
        return False

    existing = state is not None and bool(state.entries)
    steps = [Step("same" if existing else "create", STACK_TYPE, f"{PROJECT}-{synthesis.stack}", 0)]

    def walk(urn: str, depth: int) -> None:
        for child in children.get(urn, []):
            reg = by_urn[child]
            if reg.read:
                step = Step("read", reg.type, reg.name, depth)
            elif not reg.custom:
                step = Step("same" if recorded_under(child) else "create", reg.type, reg.name, depth)
            else:
                decision = planner.decisions.get(f"{reg.type}::{reg.name}", Decision("create"))
                step = Step(decision.op, reg.type, reg.name, depth, diff=_diff_text(decision), note=decision.note)
            step.protect, step.retain_on_delete = reg.protect, reg.retain_on_delete
            if step.op == "replace":
                previous = state.entries.get(f"{reg.type}::{reg.name}") if state is not None else None
                step.delete_first = reg.delete_before_replace or _provider_deletes_first(reg.type, reg.inputs)
                if previous is not None and previous.protect and reg.protect:
                    step.refused = "replacing a protected resource: remove `protect` in the program and apply first"
            steps.append(step)
            walk(child, depth + 1)

    walk(stack_urn, 1)
    seen = {f"{r.type}::{r.name}" for r in synthesis.resources}
    stale = [] if state is None else [e for k, e in state.entries.items() if k not in seen]
    for entry in delete_order(stale):  # as the applier deletes: dependents first
        step = Step("delete", entry.type, entry.name, 1, protect=entry.protect, retain_on_delete=entry.retain_on_delete)
        if entry.protect:
            step.refused = "deleting a protected resource: remove `protect` in the program and apply first"
        elif entry.retain_on_delete:
            step.note = "retained: dropped from the state, left on the host"
        steps.append(step)
    return Plan(
        stack=synthesis.stack,
        config_source=config_source,
        state_path=state_path,
        state_entries=0 if state is None else len(state.entries),
        steps=steps,
        outputs=synthesis.outputs,
        secret_values=[*secret_values, *planner.secret_values],
    )


# --- the command line --------------------------------------------------------------------


def _load_state(path: Path) -> State:
    try:
        return State.load(path)
    except PermissionError as exc:
        raise PlanError(f"cannot read {path}: the lab writes its state as root, owner-only; run as root") from exc
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"{path} is not a lab applier state file ({type(exc).__name__}: {exc})") from exc


def plan_stack(stack: str, state_path: Path | None) -> Plan:
    """Load the config, run the program under the mocks with a Planner; one per process."""
    config, secret_keys, source = load_stack_config(stack)
    _validate(config, secret_keys)
    if state_path is not None and not state_path.exists():
        raise PlanError(f"--state {state_path}: no such file")
    state = _load_state(state_path) if state_path is not None else None
    planner = Planner(state)
    secrets = _secret_config_strings(config, secret_keys)
    try:
        synthesis = synthesize(stack, stack_config_strings(config), secret_keys, handler=planner.handle)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        for value in secrets:
            message = message.replace(value, SECRET_MASK)
        raise PlanError(f"the program failed under the mock monitor: {message}") from exc
    return make_plan(synthesis, planner, config_source=source, state_path=state_path, secret_values=secrets)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.applier.plan",
        description="forgeway's offline plan: the program under Pulumi's mock monitor, "
        "compared with the lab applier's state. Not `pulumi preview`.",
    )
    parser.add_argument("--stack", default="lab", help="stack name: Pulumi.<stack>.yaml (default: lab)")
    parser.add_argument(
        "--state",
        type=Path,
        help="a lab applier state file to compare with (default for the lab stack: .lab/state.json if it exists)",
    )
    args = parser.parse_args(argv)
    state_path: Path | None = args.state
    if state_path is None and args.stack == "lab" and LAB_STATE.exists():
        state_path = LAB_STATE
    try:
        plan = plan_stack(args.stack, state_path)
        text = render(plan)
    except PlanError as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 1 if plan.refused else 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK leaves an asyncio loop to the interpreter's shutdown, whose __del__ may print
    # "Exception ignored ... Invalid file descriptor": the plan is done, so skip that noise.
    os._exit(status)
