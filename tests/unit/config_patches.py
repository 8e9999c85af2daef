"""Patches over a stack's config for the config tests: set or delete a value at a full key
path (``forgeway:hosts[1].arch``), and what a patched stack must never print.

Setting a path ``[n]`` one past the end of a list appends to it.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.config import PROJECT, SECRET_KEYS, SECTIONS

Config = dict[str, Any]

TOP_KEY = re.compile(r"[a-z0-9-]+:[A-Za-z0-9_]+")  # forgeway:hosts, docker:host
_PART = re.compile(r"\[(\d+)\]|\.([A-Za-z0-9_-]+)")
MISSING = object()  # what lookup returns for a path with nothing at it


def split_path(path: str) -> list[str | int]:
    """'forgeway:hosts[1].arch' -> ['forgeway:hosts', 1, 'arch']."""
    top = TOP_KEY.match(path)
    if top is None:
        raise ValueError(f"not a full key path: {path!r}")
    parts: list[str | int] = [top.group(0)]
    pos = top.end()
    while pos < len(path):
        part = _PART.match(path, pos)
        if part is None:
            raise ValueError(f"bad path {path!r} at {path[pos:]!r}")
        parts.append(int(part.group(1)) if part.group(1) is not None else part.group(2))
        pos = part.end()
    return parts


def lookup(config: Mapping[str, Any], path: str) -> Any:
    """The value at path, or MISSING."""
    try:
        parts = split_path(path)
    except ValueError:
        return MISSING
    current: Any = config
    for part in parts:
        in_list = isinstance(part, int) and isinstance(current, list) and part < len(current)
        in_dict = isinstance(part, str) and isinstance(current, dict) and part in current
        if not (in_list or in_dict):
            return MISSING
        current = current[part]
    return current


def _parent(config: Config, path: str, create: bool) -> tuple[Any, str | int]:
    parts = split_path(path)
    current: Any = config
    for part, following in itertools.pairwise(parts):
        if isinstance(current, dict) and part not in current and create and isinstance(following, str):
            current[part] = {}
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{path}: no {part!r} to descend into") from exc
    return current, parts[-1]


def set_path(config: Config, path: str, value: Any) -> None:
    parent, last = _parent(config, path, create=True)
    if isinstance(parent, list) and isinstance(last, int) and last == len(parent):
        parent.append(value)
        return
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = value
        return
    if isinstance(parent, dict) and isinstance(last, str):
        parent[last] = value
        return
    raise ValueError(f"{path}: cannot set {last!r} in a {type(parent).__name__}")


def delete_path(config: Config, path: str) -> None:
    parent, last = _parent(config, path, create=False)
    try:
        del parent[last]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: nothing to delete") from exc


@dataclass(frozen=True)
class Patched:
    config: Config
    secret_keys: list[str]
    sensitive: frozenset[str]  # top-level keys whose values are never printed
    hidden: frozenset[str]  # strings (secret values and parts of them) no message may contain


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    return [value] if isinstance(value, str) else []


def _fragments(secret: str) -> set[str]:
    """The secret and, so a truncated echo is caught too, its first and last 16 characters
    (PEM armour lines left out)."""
    core = "\n".join(line for line in secret.splitlines() if not line.startswith("-----")).strip()
    return {secret, core[:16], core[-16:]} if len(core) > 16 else {secret}


def apply_patch(base: tuple[Config, list[str]], patch: Mapping[str, Any]) -> Patched:
    config, secret_keys = copy.deepcopy(base[0]), list(base[1])
    for path, value in (patch.get("set") or {}).items():
        set_path(config, path, copy.deepcopy(value))
    for path in patch.get("delete") or []:
        delete_path(config, path)
    for key in patch.get("plaintext") or []:
        if key not in secret_keys:
            raise ValueError(f"plaintext: {key} is not a secret key of the base stack")
        secret_keys.remove(key)
    secret_keys += [k for k in patch.get("secret") or [] if k not in secret_keys]
    schema_secrets = {f"{PROJECT}:{k}" for k in SECRET_KEYS} & set(config)
    sensitive = set(secret_keys) | schema_secrets | set(patch.get("sensitive") or [])
    # Whole sections stored encrypted are checked by their [secret] values; their leaves
    # (arm64, runner, ...) are words every message uses.
    hidden = {
        fragment
        for key in sensitive
        if key.removeprefix(f"{PROJECT}:") not in SECTIONS
        for leaf in _leaves(config.get(key))
        if len(leaf) >= 8
        for fragment in _fragments(leaf)
    }
    return Patched(config, secret_keys, frozenset(sensitive), frozenset(hidden))
