"""The lab applier's state file and its errors (tools/applier/apply.py): like the engine's
checkpoint, plain JSON with mode 0600."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ApplyError", "Change", "Entry", "State"]


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
