"""The placeholders a new stack is written with, each refused by its key with the fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.config.problems import Problem, show
from components.config.types import LABEL, PROJECT

# What `make new-stack` (tools/stack/new.py) writes where the example has a host, key or
# domain of its own; the check below refuses each one by its key, with the fix.
PLACEHOLDER = "FILL-IN"


def _placeholders(key: str, value: Any) -> list[Problem]:
    if isinstance(value, str) and value.startswith(PLACEHOLDER):
        given = "<value>"
        if key.endswith(".host_key"):
            given = "\"$(ssh-keyscan -t ed25519 -p <ssh_port> <address> | cut -d' ' -f2-)\""
        fix = f"pulumi config set --path '{key}' {given}"
        return [Problem(key, show(value), f"your own value in place of new-stack's placeholder: {fix}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(f"{key}.{k}", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholders(f"{key}[{i}]", v)]
    return []


def with_placeholders(problems: list[Problem], sections: Mapping[str, Any]) -> list[Problem]:
    """Each placeholder as one problem; what its value's type check said about it is noise."""
    unfilled = [p for top, value in sections.items() for p in _placeholders(f"{PROJECT}:{top}", value)]
    keys = tuple(p.key for p in unfilled)
    return [p for p in problems if not (keys and p.key.startswith(keys))] + unfilled


def runner_names_as_given(hosts: Any) -> list[str]:
    """Runner host names from hosts that did not validate (a placeholder in them, say),
    so a new stack's missing runner tokens are reported in the same run."""
    if not isinstance(hosts, list):
        return []
    return [
        h["name"]
        for h in hosts
        if isinstance(h, dict)
        and isinstance(h.get("name"), str)
        and LABEL.fullmatch(h["name"])  # a bad name is reported by its own key
        and isinstance(h.get("roles"), list)
        and "runner" in h["roles"]
    ]
