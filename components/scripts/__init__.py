"""Shell scripts that run on hosts, kept as files so shellcheck and bash -n read them."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

__all__ = ["script", "script_command"]

_DIR = Path(__file__).parent


@cache
def script(name: str) -> str:
    return (_DIR / name).read_text()


def script_command(name: str, *args: str) -> str:
    """A command line that runs a script with arguments, every value quoted.

    The script travels inline (``sh -c``) so a host needs no copy of it; it must
    not hold secrets, which go on stdin.
    """
    return shlex.join(["sh", "-c", script(name), name, *args])
