"""Numbers a stack file spells so that YAML reads another value than the one written.

The Pulumi CLI reads `Pulumi.<stack>.yaml` with Go's yaml.v3, which still reads YAML
1.1 octals (`0022` is 18) besides 1.2's `0o22`, and takes `0x16` and `0b10110` too
(strconv.ParseInt with base 0). The program gets the number only, so `ssh_port: 0022`
cannot be told from `ssh_port: 18` in config: the spelling is found here, in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["SurprisingNumber", "stack_file", "surprising_numbers"]

# A plain scalar YAML turns into a number of another base: a leading zero before a
# digit, or a base prefix. Signs and `_` separators as yaml.v3 accepts them.
_SURPRISING = re.compile(r"[-+]?0(?:[0-9_]*[0-9]|[oOxXbB][0-9A-Fa-f_]+)")


@dataclass(frozen=True)
class SurprisingNumber:
    top: str  # the config key (`forgeway:gitlab`)
    loc: tuple[int | str, ...]  # the path inside its value
    text: str  # as written


def _walk(node: yaml.Node, loc: tuple[int | str, ...]) -> Iterator[tuple[tuple[int | str, ...], str]]:
    if isinstance(node, yaml.ScalarNode):
        if node.style is None and _SURPRISING.fullmatch(node.value):
            yield loc, node.value
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*loc, index))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk(value, (*loc, str(key.value)))


def surprising_numbers(text: str, prefix: str) -> list[SurprisingNumber]:
    """Every number under `config:` keys starting with ``prefix`` that YAML reads in
    another base than decimal."""
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return []
    found: list[SurprisingNumber] = []
    for key, value in root.value:
        if key.value != "config" or not isinstance(value, yaml.MappingNode):
            continue
        for top, tree in value.value:
            if str(top.value).startswith(prefix):
                found += [SurprisingNumber(str(top.value), loc, raw) for loc, raw in _walk(tree, ())]
    return found


def stack_file(project_dir: Path, stack: str) -> Path | None:
    """The stack's settings file as the CLI finds it (Pulumi.yaml's stackConfigDir
    honoured), or None when there is none (config from the environment only)."""
    project = project_dir / "Pulumi.yaml"
    directory = project_dir
    if project.exists():
        settings = yaml.safe_load(project.read_text()) or {}
        if isinstance(settings, dict) and isinstance(settings.get("stackConfigDir"), str):
            directory = project_dir / settings["stackConfigDir"]
    for suffix in ("yaml", "yml"):
        candidate = directory / f"Pulumi.{stack}.{suffix}"
        if candidate.exists():
            return candidate
    return None
