"""The offline plan's model and its text, as `pulumi preview` lays it out (tools/applier/plan.py decides it).

Kept apart from the deciding so each reads alone: this module knows nothing of the program,
the state or the applier's rules, only a :class:`Plan` and how to print it without a secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.stack.synth import is_secret_value

__all__ = ["OPS", "SECRET_MASK", "Decision", "Plan", "PlanError", "Step", "render"]

ROOT = Path(__file__).resolve().parent.parent.parent
# op -> (symbol, word), in the order the summary lists them.
OPS = {
    "create": ("+", "create"),
    "update": ("~", "update"),
    "replace": ("+-", "replace"),
    "delete": ("-", "delete"),
    "read": (">", "read"),
    "same": ("", "same"),
}
SECRET_MASK = "[secret]"  # noqa: S105 (what is shown instead of a secret)


class PlanError(Exception):
    """A config or state problem: the message says which and how to fix it."""


@dataclass
class Decision:
    op: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Step:
    op: str
    type: str
    name: str
    depth: int
    protect: bool = False
    retain_on_delete: bool = False
    delete_first: bool = False
    diff: str = ""  # e.g. "+a-b~c,d": names only, never values
    note: str = ""
    refused: str = ""  # why the engine (and the applier) would refuse this step


@dataclass
class Plan:
    stack: str
    config_source: str
    state_path: Path | None
    state_entries: int
    steps: list[Step]
    outputs: dict[str, Any]
    secret_values: list[str]

    def counts(self) -> dict[str, int]:
        found = {op: 0 for op in OPS}
        for step in self.steps:
            found[step.op] += 1
        return found

    @property
    def refused(self) -> list[Step]:
        return [s for s in self.steps if s.refused]


# --- the text ------------------------------------------------------------------------------


def _header(plan: Plan) -> list[str]:
    if plan.state_path is None:
        against = "no state file: every resource is shown as create"
    else:
        against = (
            f"the lab applier's state {_shown_path(plan.state_path)} ({plan.state_entries} resources), "
            "decided with the applier's rules (tools/applier/apply.py REPLACE_ON)"
        )
    return [
        f"forgeway offline plan: stack {plan.stack}",
        "  This is not `pulumi preview`: forgeway's program ran under Pulumi's mock monitor (tools/stack/synth.py).",
        "  No provider ran and the Pulumi engine was not involved; ids, keys, certificates and command",
        "  output of resources to create are stand-ins. Inputs are compared, never shown.",
        f"  Config:   {plan.config_source}",
        f"  Compared: {against}",
        "",
    ]


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _tree_prefixes(steps: Sequence[Step]) -> list[str]:
    """`├─ ` / `└─ ` guides, as `pulumi preview` draws them."""
    prefixes = []
    for i, step in enumerate(steps):
        if step.depth == 0:
            prefixes.append("")
            continue
        parts = []
        for level in range(1, step.depth + 1):
            # Is there a later sibling at this level before the subtree ends?
            later = False
            for after in steps[i + 1 :]:
                if after.depth < level:
                    break
                if after.depth == level:
                    later = True
                    break
            if level == step.depth:
                parts.append("├─ " if later else "└─ ")
            else:
                parts.append("│  " if later else "   ")
        prefixes.append("".join(parts))
    return prefixes


def _info(step: Step) -> str:
    marks = []
    if step.protect:
        marks.append("[protect]")
    if step.retain_on_delete:
        marks.append("[retain]")
    if step.diff:
        marks.append(f"[diff: {step.diff}]")
    if step.delete_first:
        marks.append("[delete before replace]")
    if step.note:
        marks.append(f"({step.note})")
    if step.refused:
        marks.append("(refused: protected)")
    return " ".join(marks)


def _value_lines(value: Any, indent: int) -> list[str]:
    """A stack output as `pulumi preview` lays it out; a secret is [secret], whole."""
    pad = " " * indent
    if is_secret_value(value):
        return [SECRET_MASK]
    if isinstance(value, float) and value.is_integer():
        return [str(int(value))]  # the wire format has only doubles
    if not isinstance(value, (dict, list)) or not value:
        return [json.dumps(value)]
    items = sorted(value.items()) if isinstance(value, dict) else [(f"[{i}]", v) for i, v in enumerate(value)]
    width = max(len(k) for k, _ in items) if isinstance(value, dict) else 0
    lines = ["{" if isinstance(value, dict) else "["]
    for k, v in items:
        inner = _value_lines(v, indent + 4)
        lines.append(f"{pad}    {k:<{width}}: {inner[0]}")
        lines += inner[1:]
    return [*lines, f"{pad}{'}' if isinstance(value, dict) else ']'}"]


def render(plan: Plan) -> str:
    """The plan as text; raises PlanError rather than return text holding a secret."""
    lines = _header(plan)
    prefixes = _tree_prefixes(plan.steps)
    rows = [
        (OPS[s.op][0], p + s.type, s.name, OPS[s.op][1], _info(s)) for s, p in zip(plan.steps, prefixes, strict=True)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(1, 4)]
    lines.append(f" {'':3} {'Type':<{widths[0]}}  {'Name':<{widths[1]}}  {'Plan':<{widths[2]}}  Info".rstrip())
    for symbol, typ, name, word, info in rows:
        lines.append(f" {symbol:<3} {typ:<{widths[0]}}  {name:<{widths[1]}}  {word:<{widths[2]}}  {info}".rstrip())
    if plan.refused:
        lines += ["", "Refused (the engine, and the lab applier, stop here):"]
        lines += [f"    {s.type}::{s.name}: {s.refused}" for s in plan.refused]
    lines += ["", "Outputs:"]
    if plan.outputs:
        width = max(len(k) for k in plan.outputs)
        for k in sorted(plan.outputs):
            value = _value_lines(plan.outputs[k], 4)
            lines.append(f"    {k:<{width}}: {value[0]}")
            lines += value[1:]
    counts = plan.counts()
    words = {"create": "to create", "update": "to update", "replace": "to replace", "delete": "to delete"}
    words |= {"read": "to read", "same": "unchanged"}
    summary = ", ".join(f"{counts[op]} {words[op]}" for op in OPS if counts[op])
    lines += ["", f"Resources: {summary}"]
    text = "\n".join(lines) + "\n"
    _refuse_secrets(text, plan.secret_values)
    return text


def _refuse_secrets(text: str, secret_values: Iterable[str]) -> None:
    for value in secret_values:
        if value and value in text:
            raise PlanError("refusing to print the plan: a secret value would appear in it (a forgeway bug)")
