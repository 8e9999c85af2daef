"""`make preview` (tools/applier/plan.py): the offline plan of a stack, as text.

The plan runs the program under the mock monitor, one run per process, so each plan
here is the CLI in a subprocess. A state file "as the applier would have it" is made
by running the program once more with a handler that records what the applier
records (inputs with secret markers removed, the outputs it answered with); then it is
edited to show one replace, one update and one delete.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.program.conftest import Stack
from tests.stacks import ROOT, gitea_stack, prod_stack

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
COMMAND = "command:remote:Command"


@dataclass(frozen=True)
class Line:
    symbol: str
    depth: int
    type: str
    name: str
    op: str
    info: str
    text: str


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[Line]:
        return _tree(self.stdout)

    def line(self, type_: str, name: str) -> Line:
        (found,) = [ln for ln in self.lines if ln.type == type_ and ln.name == name]
        return found


def _tree(text: str) -> list[Line]:
    """The resource lines of a plan: from the column header to the first blank line."""
    rows = text.splitlines()
    start = next(i for i, row in enumerate(rows) if row.split()[:4] == ["Type", "Name", "Plan", "Info"])
    lines = []
    for row in rows[start + 1 :]:
        if not row.strip():
            break
        symbol, rest = row[1:4].strip(), row[5:]
        guides = len(rest) - len(rest.lstrip("│├└─ "))
        typ, name, op, *info = rest[guides:].split(maxsplit=3)
        lines.append(Line(symbol, guides // 3, typ, name, op, info[0] if info else "", row))
    return lines


def _plan(*args: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "tools.applier.plan", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def record_state(path: str, stack: str = "prod") -> None:
    """(Run in its own process.) Synthesize ``stack`` (prod or gitea-example) and write the state the lab applier
    would hold after applying it: the inputs it compares and the outputs it answered
    (the mocks' stand-ins here), with the resource options."""
    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    from tools.applier.state import Entry, State
    from tools.stack.synth import _mock_state, stack_config_strings, synthesize, unwrap

    state = State(Path(path))

    def handler(args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:
            return f"{args.name}-component", dict(args.inputs)
        outputs = _mock_state(args.typ, args.inputs)
        plain = unwrap(rpc.deserialize_properties(_sync_await(rpc.serialize_properties(outputs, {}))))
        state.entries[f"{args.typ}::{args.name}"] = Entry(
            args.typ,
            args.name,
            f"{args.name}-id",
            state.next_seq,
            unwrap(args.inputs),
            plain,
            provider=args.provider or "",
            protect=args.options.protect,
            retain_on_delete=args.options.retain_on_delete,
            delete_before_replace=args.options.delete_before_replace,
        )
        state.next_seq += 1
        return f"{args.name}-id", outputs

    config, secret_keys = gitea_stack() if stack == "gitea-example" else prod_stack()
    synthesize(stack, stack_config_strings(config), secret_keys, handler=handler)
    state.save()


def _edit_state(path: Path, extra: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]) -> None:
    data = json.loads(path.read_text())
    for key, inputs in changes.items():
        data["entries"][key]["inputs"].update(inputs)
    for key, entry in extra.items():
        data["entries"][key] = entry
    path.write_text(json.dumps(data))


def _extra_entry(type_: str, name: str, seq: int, protect: bool = False) -> dict[str, Any]:
    return {
        "type": type_,
        "name": name,
        "id": f"{name}-id",
        "seq": seq,
        "inputs": {"create": "true"},
        "outputs": {},
        "protect": protect,
    }


@pytest.fixture(scope="module")
def prod_plan() -> Run:
    return _plan("--stack", "prod")


@pytest.fixture(scope="module")
def recorded_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "state.json"
    code = "import sys; from tests.program.test_plan import record_state; record_state(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True, capture_output=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def changed_plan(recorded_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    path = tmp_path_factory.mktemp("changed") / "state.json"
    path.write_text(recorded_state.read_text())
    _edit_state(
        path,
        extra={f"{COMMAND}::old-hook": _extra_entry(COMMAND, "old-hook", 1000)},
        changes={
            f"{COMMAND}::vps-arch": {"triggers": ["an older check"]},  # a replace-on-change input
            f"{CONTAINER}::jetson-gitlab": {"restart": "always"},  # updated in place
        },
    )
    return _plan("--stack", "prod", "--state", str(path))


def test_the_cli_exits_zero_and_prints_the_disclaimer(prod_plan: Run) -> None:
    assert prod_plan.returncode == 0, prod_plan.stderr
    head = prod_plan.stdout.splitlines()[:6]
    assert head[0] == "forgeway offline plan: stack prod"
    assert "This is not `pulumi preview`" in head[1] and "mock monitor" in head[1], head
    assert any("No provider ran and the Pulumi engine was not involved" in h for h in head), head
    assert any("no state file: every resource is shown as create" in h for h in head), head


def test_the_plan_lists_every_registration_and_the_stack(prod: Stack, prod_plan: Run) -> None:
    expected = Counter((r.type, r.name) for r in prod.synth.resources)
    expected[("pulumi:pulumi:Stack", "forgeway-prod")] += 1
    assert Counter((ln.type, ln.name) for ln in prod_plan.lines) == expected
    kinds = Counter(r.type for r in prod.synth.resources)
    assert f"Resources: {sum(kinds.values()) + 1} to create" in prod_plan.stdout


def test_the_tree_follows_the_parents(prod: Stack, prod_plan: Run) -> None:
    by_urn = prod.synth.by_urn()

    def depth(urn: str) -> int:
        parent = by_urn[urn].parent
        return 1 + (depth(parent) if parent in by_urn else 0)

    for reg in prod.synth.resources:
        assert prod_plan.line(reg.type, reg.name).depth == depth(reg.urn), reg.urn
    (root,) = [ln for ln in prod_plan.lines if ln.depth == 0]
    assert root.type == "pulumi:pulumi:Stack"


def test_without_state_everything_is_create(prod_plan: Run) -> None:
    assert {(ln.symbol, ln.op) for ln in prod_plan.lines} == {("+", "create")}


def test_gitlab_lines(prod_plan: Run) -> None:
    text = prod_plan.stdout
    assert re.search(r"^ \+ {3}├─ forgeway:gitlab:GitLabServer +gitlab +create$", text, re.M), text
    assert re.search(r"^ \+ {3}│  ├─ docker:index/container:Container +jetson-gitlab +create$", text, re.M), text
    for volume in ("config", "data", "logs"):
        line = prod_plan.line(VOLUME, f"jetson-gitlab-{volume}")
        assert line.info == "[protect] [retain]", line.text
    assert prod_plan.line(CONTAINER, "jetson-gitlab").info == ""


def test_secret_outputs_are_masked_and_no_secret_is_printed(prod: Stack, prod_plan: Run) -> None:
    assert re.search(r"^ {4}gitlab_root_password *: \[secret\]$", prod_plan.stdout, re.M), prod_plan.stdout
    for secret in prod.secrets:
        assert secret not in prod_plan.stdout and secret not in prod_plan.stderr, "a secret config value is printed"
    assert 'gitlab_url          : "https://gitlab.example.org"' in prod_plan.stdout


def test_against_a_state_ops_follow_the_applier(prod: Stack, changed_plan: Run) -> None:
    assert changed_plan.returncode == 0, changed_plan.stderr
    assert "Compared: the lab applier's state" in changed_plan.stdout
    replaced = changed_plan.line(COMMAND, "vps-arch")
    assert (replaced.symbol, replaced.op, replaced.info) == ("+-", "replace", "[diff: ~triggers]"), replaced.text
    updated = changed_plan.line(CONTAINER, "jetson-gitlab")
    assert (updated.symbol, updated.op, updated.info) == ("~", "update", "[diff: ~restart]"), updated.text
    deleted = changed_plan.line(COMMAND, "old-hook")
    assert (deleted.symbol, deleted.op, deleted.depth) == ("-", "delete", 1), deleted.text
    moved = {("+-", "vps-arch"), ("~", "jetson-gitlab"), ("-", "old-hook")}
    for line in changed_plan.lines:
        if (line.symbol, line.name) not in moved:
            assert (line.symbol, line.op) == ("", "same"), line.text
    same = len(prod.synth.resources) + 1 - 2
    assert f"Resources: 1 to update, 1 to replace, 1 to delete, {same} unchanged" in changed_plan.stdout
    for secret in prod.secrets:
        assert secret not in changed_plan.stdout, "a secret config value is printed"


def test_the_recorded_state_alone_is_all_same(recorded_state: Path, prod: Stack) -> None:
    run = _plan("--stack", "prod", "--state", str(recorded_state))
    assert run.returncode == 0, run.stderr
    assert {ln.op for ln in run.lines} == {"same"}
    assert f"Resources: {len(prod.synth.resources) + 1} unchanged" in run.stdout


def test_deleting_a_protected_resource_is_refused(recorded_state: Path, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(recorded_state.read_text())
    _edit_state(path, extra={f"{VOLUME}::old-data": _extra_entry(VOLUME, "old-data", 1000, protect=True)}, changes={})
    run = _plan("--stack", "prod", "--state", str(path))
    assert run.returncode == 1, run.stderr
    line = run.line(VOLUME, "old-data")
    assert (line.op, line.info) == ("delete", "[protect] (refused: protected)"), line.text
    assert f"{VOLUME}::old-data: deleting a protected resource" in run.stdout


def test_config_and_state_problems_exit_2_with_a_message(tmp_path: Path) -> None:
    run = _plan("--stack", "no-such-stack")
    assert run.returncode == 2 and "no stack file Pulumi.no-such-stack.yaml" in run.stderr, run.stderr
    bad = tmp_path / "state.json"
    bad.write_text("{}")
    run = _plan("--stack", "prod", "--state", str(bad))
    assert run.returncode == 2 and "is not a lab applier state file" in run.stderr, run.stderr


def test_a_config_error_names_the_key() -> None:
    from tools.applier.plan import PlanError, _validate

    config, secret_keys = prod_stack()
    config["forgeway:forwarding"] = {**config["forgeway:forwarding"], "ports": [70000]}
    with pytest.raises(PlanError, match=r"forgeway:forwarding\.ports\[0\]"):
        _validate(config, secret_keys)
