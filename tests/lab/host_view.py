"""What the host shows of a container's secrets: `docker inspect` and its processes' /proc files.

Anyone with the docker socket reads `docker inspect` (env, command, labels); root on the
host reads every process's /proc/<pid>/environ and cmdline. A secret belongs in neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path


def container_pids(init_pid: int) -> list[int]:
    """Every process in the PID namespace of the container's PID 1 (host PIDs)."""
    namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):  # gone meanwhile
            if os.readlink(f"/proc/{pid}/ns/pid") == namespace:
                pids.append(int(pid))
    return pids


def secrets_shown(inspect: bytes, pids: list[int], secrets: Mapping[str, bytes]) -> list[str]:
    """Where each secret shows: in the `docker inspect` output, or a process's environ or cmdline."""
    found = [f"docker inspect: {what}" for what, secret in secrets.items() if secret in inspect]
    for pid in pids:
        for part in ("environ", "cmdline"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/{part}").read_bytes()
                found += [f"/proc/{pid}/{part}: {what}" for what, secret in secrets.items() if secret in text]
    return found
