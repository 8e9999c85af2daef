"""A directory tree as a value, to compare before and after a host script: a second up
changes nothing, a down leaves the tree as it was before the up."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["Listing", "listing"]

# relative path -> (mode, "uid:gid", content: the bytes of a file, a link's target, None for a directory)
Listing = dict[str, tuple[int, str, bytes | str | None]]


def listing(root: Path) -> Listing:
    """Everything below ``root``, links not followed."""
    out: Listing = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content: bytes | str | None = None
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        out[str(path.relative_to(root))] = (st.st_mode, f"{st.st_uid}:{st.st_gid}", content)
    return out
