"""The machine's binfmt_misc, as the lab sees and cleans it (root).

binfmt_misc outside a user namespace is kernel-wide: a handler a lab host registers
(runner.multiarch, components/scripts/binfmt-up.sh) serves the whole machine until it
is removed. The lab's destroy runs binfmt-down.sh, which removes exactly what up
registered; :func:`remove_leftovers` is lab-down's safety net for a lab that never got
to its destroy. Each look happens in a private mount namespace of its own (``unshare
--mount``), so no mount of binfmt_misc is left behind either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

__all__ = ["handlers", "remove_leftovers", "unregister"]

_NAME = re.compile(r"^qemu-[a-z0-9_]+$")
_MOUNT = 'd=$(mktemp -d) && mount -t binfmt_misc binfmt_misc "$d" && cd "$d"'


def _in_private_mount(command: str) -> str:
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"{_MOUNT} && {command}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"binfmt_misc: {command!r} failed: {done.stderr.strip()}")
    return done.stdout


def handlers() -> list[str]:
    """The names of the handlers registered now."""
    names = _in_private_mount("ls").split()
    return sorted(n for n in names if n not in ("register", "status"))


def unregister(name: str) -> None:
    """Remove handler ``name`` (qemu-*) if it is there."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a qemu-* handler name")
    _in_private_mount(f"if [ -e {name} ]; then echo -1 >{name}; fi")


def remove_leftovers(lab_dir: Path) -> list[str]:
    """Unregister what a lab host's binfmt-up.sh registered and no destroy removed."""
    listed = {name for ours in lab_dir.glob("hosts/*/etc/forgeway/binfmt/ours") for name in ours.read_text().split()}
    if not listed:
        return []
    removed = sorted(name for name in listed & set(handlers()) if _NAME.fullmatch(name))
    for name in removed:
        unregister(name)
    return removed
