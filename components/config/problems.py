"""A problem of the stack config, and the error that carries all of them.

Each problem names the full key (``forgeway:hosts[2].arch``), the value given (never a
secret's) and what is expected; ``ConfigError`` lists every one, sorted, before any
resource is registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from components.config.types import PROJECT

_URL_USERINFO = re.compile(r"://[^/@\s\"]*@")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the config: the full key, the value given, what is expected."""

    key: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.key}: {self.expected} (got {self.value})"


class ConfigError(Exception):
    """Every problem of a stack config, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.key, p.expected, p.value))
        lines = [f"  - {p}" for p in self.problems]
        super().__init__(
            f"the stack config has {len(self.problems)} problem(s); nothing was changed:\n" + "\n".join(lines)
        )


def show(value: Any) -> str:
    # A URL's user:password@ is never shown (a proxy URL with credentials is refused by it).
    text = _URL_USERINFO.sub("://[secret]@", json.dumps(value, default=str))
    return text if len(text) <= 80 else text[:77] + "..."


def path_part(name: str) -> str:
    """`.name`, or Pulumi's `["..."]` path form for a map key that is no plain word (a
    newline in a key given must not start a line of its own in the error)."""
    return f".{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f"[{json.dumps(name)}]"


def key_path(top: str, loc: tuple[int | str, ...]) -> str:
    path = f"{PROJECT}:{top}"
    for part in loc:
        if part == "[key]":
            continue  # pydantic's marker for "the key of this map entry"
        path += f"[{part}]" if isinstance(part, int) else path_part(str(part))
    return path
