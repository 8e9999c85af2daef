"""The lab applier's state file and its errors (tools/applier/apply.py): like the engine's
checkpoint, plain JSON with mode 0600."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ApplyError", "Change", "Entry", "State", "state_delete"]


class ApplyError(RuntimeError):
    """A resource could not be applied; the message names the resource, host and step."""


@dataclass
class Change:
    op: str  # create | update | replace | delete | same
    type: str
    name: str


@dataclass
class Entry:
    type: str
    name: str
    id: str
    seq: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str = ""  # the provider reference ("urn::id") it was made through
    provider_inputs: dict[str, Any] = field(default_factory=dict)  # that provider's inputs then (docker)
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    # What it depends on, as state keys (type::name): dependsOn, property dependencies,
    # parent and provider of its registration. Deletes go dependents first (delete_order).
    dependencies: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.type}::{self.name}"


def key_of_urn(urn: str) -> str:
    """The state key (type::name) of a URN, or of a provider reference (``urn::id``)."""
    parts = urn.split("::")
    if len(parts) > 4:  # a provider reference: the id follows the URN
        parts = parts[:4]
    return f"{parts[2].rsplit('$', 1)[-1]}::{parts[3]}" if len(parts) == 4 else urn


def delete_order(entries: Iterable[Entry]) -> list[Entry]:
    """The order the engine deletes in: a resource only after everything that depends on it
    (reverse dependency order), the newest first among those free to go. The order of the
    last changes alone is not enough: an in-place update makes a dependency newer than a
    dependent the run left the same."""
    pending = {entry.key: entry for entry in entries}
    dependents: dict[str, set[str]] = {key: set() for key in pending}
    for key, entry in pending.items():
        for dependency in entry.dependencies:
            if dependency in dependents and dependency != key:
                dependents[dependency].add(key)
    order: list[Entry] = []
    while pending:
        free = [e for k, e in pending.items() if not dependents[k] & pending.keys()] or list(pending.values())
        chosen = max(free, key=lambda e: e.seq)
        order.append(chosen)
        del pending[chosen.key]
    return order


@dataclass
class State:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    next_seq: int = 0

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        entries = {k: Entry(**v) for k, v in data["entries"].items()}
        return cls(path, entries, data["next_seq"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Holds secrets, as the engine's state does (encrypted there): owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {"entries": {k: asdict(v) for k, v in self.entries.items()}, "next_seq": self.next_seq}, out, indent=1
            )
        tmp.replace(self.path)


def state_delete(
    state: State, targets: Iterable[str], *, force: bool = False, target_dependents: bool = False
) -> list[Entry]:
    """Forget resources without touching them, as `pulumi state delete [--force]
    [--target-dependents] URN...` does (the dead device's step, docs/operations.md).

    ``targets`` are URNs or state keys (type::name). As the CLI: a resource that others
    still depend on is refused unless ``target_dependents`` (then they go too), a
    protected one unless ``force``. All are checked before any is forgotten; the state
    is saved once. Returns what was forgotten, dependents first.
    """
    chosen: set[str] = set()
    for target in targets:
        key = key_of_urn(target) if target.startswith("urn:") else target
        if key not in state.entries:
            raise ApplyError(f"state delete: no resource {target} in the state")
        chosen.add(key)
    while target_dependents:
        more = {k for k, e in state.entries.items() if k not in chosen and chosen & set(e.dependencies)}
        if not more:
            break
        chosen |= more
    for key in sorted(chosen):
        dependents = sorted(k for k, e in state.entries.items() if k not in chosen and key in e.dependencies)
        if dependents:
            raise ApplyError(
                f"state delete: {key} cannot be deleted: {', '.join(dependents)} depend(s) on it "
                "(delete them too, or pass --target-dependents)"
            )
        if state.entries[key].protect and not force:
            raise ApplyError(f"state delete: {key} is protected (pass --force to delete it from the state)")
    gone = delete_order(state.entries[k] for k in chosen)
    for entry in gone:
        del state.entries[entry.key]
    state.save()
    return gone


def state_unprotect(state: State, targets: Iterable[str]) -> list[Entry]:
    """Clear the ``protect`` flag of resources in the state, as `pulumi state unprotect URN...`
    does (a forge switch's step, docs/lab-gitea.md): the next apply may then delete them (a
    ``retain_on_delete`` one only leaves the state). All are checked first; saved once."""
    keys = [key_of_urn(t) if t.startswith("urn:") else t for t in targets]
    missing = [t for t, k in zip(targets, keys, strict=True) if k not in state.entries]
    if missing:
        raise ApplyError(f"state unprotect: no resource {', '.join(missing)} in the state")
    for key in keys:
        state.entries[key].protect = False
    state.save()
    return [state.entries[k] for k in keys]


def state_main(command: str, argv: list[str]) -> int:
    """``python -m tools.applier state-delete --state PATH [--force] [--target-dependents] URN...``
    or ``python -m tools.applier state-unprotect --state PATH URN...``: one JSON line per resource."""
    import argparse
    import sys

    delete = command == "state-delete"
    action = state_delete if delete else state_unprotect
    parser = argparse.ArgumentParser(prog=f"python -m tools.applier {command}", description=action.__doc__)
    parser.add_argument("--state", type=Path, required=True)
    if delete:
        parser.add_argument("--force", action="store_true")
        parser.add_argument("--target-dependents", action="store_true")
    parser.add_argument("urns", nargs="+")
    args = parser.parse_args(argv)
    try:
        state = State.load(args.state)
        if delete:
            done = state_delete(state, args.urns, force=args.force, target_dependents=args.target_dependents)
        else:
            done = state_unprotect(state, args.urns)
    except ApplyError as exc:
        print(exc, file=sys.stderr)
        return 1
    for entry in done:
        print(json.dumps(asdict(Change("forget" if delete else "unprotect", entry.type, entry.name))))
    return 0
