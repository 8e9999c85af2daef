#!/usr/bin/env python3
"""runc for a lab dockerd on a machine whose capability bounding set lacks some of the kernel's.

This machine may run the lab inside a container whose bounding set is reduced (the session
sandbox here has no ``cap_sys_resource``; see ``grep CapBnd /proc/1/status``). No process
below it can get such a capability back, nspawn's ``--capability=all`` included. Debian's
dockerd 20.10 gives a ``--privileged`` container every capability the kernel knows, and runc
then fails "unable to apply caps: operation not permitted". Docker 23 and later give it the
capabilities of the daemon's own bounding set instead (moby/moby#42933); this wrapper does
that for 20.10: it takes out of a new container's config.json the capabilities this process
cannot have, then execs runc. Nothing else changes, and on a machine with the full set
:func:`runtime_args` is empty: the lab daemon runs plain runc, as a real host's does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# linux/capability.h, by number
NAMES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
RUNTIME = "fwl-runc-bounded"
RUNC = "runc"


def missing(status: str | None = None, last_cap: int | None = None) -> list[str]:
    """``CAP_*`` names the kernel knows (up to cap_last_cap) that are not in this process's bounding set."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    if last_cap is None:
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    (line,) = [x for x in status.splitlines() if x.startswith("CapBnd:")]
    bounding = int(line.split()[1], 16)
    return [f"CAP_{NAMES[n]}" for n in range(min(last_cap + 1, len(NAMES))) if not bounding >> n & 1]


def runtime_args() -> tuple[str, ...]:
    """dockerd flags that make this wrapper its default runtime, or none when nothing is missing."""
    if not missing():
        return ()
    shim = Path(__file__).resolve().with_suffix(".sh")  # create and run through this module, the rest to runc
    return ("--add-runtime", f"{RUNTIME}={shim}", "--default-runtime", RUNTIME)


def bound(config: dict[str, object], drop: list[str]) -> dict[str, object]:
    """``config`` with the capabilities in ``drop`` taken out of every set of its process."""
    process = config.get("process")
    if isinstance(process, dict) and isinstance(process.get("capabilities"), dict):
        caps: dict[str, list[str]] = process["capabilities"]
        for kind, names in caps.items():
            caps[kind] = [name for name in names if name not in drop]
    return config


def main(argv: list[str]) -> None:
    # runc [global flags] create|run --bundle DIR ... : only a new container's config changes
    if ("create" in argv or "run" in argv) and "--bundle" in argv:
        spec = Path(argv[argv.index("--bundle") + 1]) / "config.json"
        drop = missing()
        if drop and spec.exists():
            spec.write_text(json.dumps(bound(json.loads(spec.read_text()), drop)))
    os.execvp(RUNC, [RUNC, *argv])  # noqa: S606 (runc takes argv as given; no shell)


if __name__ == "__main__":
    main(sys.argv[1:])
