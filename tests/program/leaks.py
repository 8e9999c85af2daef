"""Find secret values that appear outside Pulumi's secret marker in a synthesis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tools.stack.synth import Synthesis, is_secret_value

__all__ = ["plaintext_leaks"]


def _plain_strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if is_secret_value(value):
        return  # wrapped: the engine encrypts it in state and masks it in logs
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _plain_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _plain_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def plaintext_leaks(synth: Synthesis, secrets: Iterable[str]) -> list[str]:
    """Every place (resource input or stack output) where a secret shows unwrapped."""
    needles = [s for s in secrets if len(s) >= 6]  # shorter ones would match by chance
    found = []
    places = [(f"{r.type}::{r.name}", r.inputs) for r in synth.resources] + [("stack outputs", synth.outputs)]
    for where, tree in places:
        for path, text in _plain_strings(tree, ""):
            if any(n in text for n in needles):
                found.append(f"{where}{path}")
    return found
