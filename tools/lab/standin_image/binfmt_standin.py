#!/usr/bin/python3
"""Entrypoint of the lab image forgeway-lab/binfmt-standin (tools/lab/images.py).

tonistiigi/binfmt cannot be pulled in the lab. This stand-in speaks the part of its
interface that components/scripts/binfmt-up.sh uses, against the kernel's real
binfmt_misc (it mounts binfmt_misc when /proc/sys/fs/binfmt_misc is empty and writes to
``register``: run it with the rights binfmt-up.sh gives), with Debian's
qemu-user-static as interpreters:

* no argument: print ``{"supported": [...], "emulators": [...]}`` (every registered
  handler's name);
* ``--install P[,P...]`` (``arm64``, ``amd64``): register ``qemu-aarch64`` or
  ``qemu-x86_64`` with the magic and mask of Debian's ``/usr/share/binfmts/qemu-<cpu>``
  and the F flag (the kernel opens the interpreter now, so it serves every mount
  namespace); the machine's own CPU and a handler already there are skipped, as the
  real image does;
* ``--uninstall NAME[,NAME...]``: remove those handlers (``-1`` to their file).

binfmt_misc outside a user namespace is the whole machine's: what this registers serves
every process here until it is removed (the lab removes what it made; tests/lab).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMTS = Path("/usr/share/binfmts")
CPUS = {"arm64": "aarch64", "amd64": "x86_64"}


def ensure_mounted() -> None:
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)


def registered() -> list[str]:
    return sorted(p.name for p in BINFMT.iterdir() if p.name not in ("register", "status"))


def _debian_entry(cpu: str) -> dict[str, str]:
    """binfmt-support's format: one ``key value`` per line (magic and mask \\x-escaped)."""
    fields: dict[str, str] = {}
    for line in (BINFMTS / f"qemu-{cpu}").read_text().splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def install(platforms: list[str]) -> None:
    native = os.uname().machine
    for platform in platforms:
        cpu = CPUS.get(platform)
        if cpu is None:
            raise SystemExit(f"binfmt-standin: unknown platform {platform!r}")
        name = f"qemu-{cpu}"
        if cpu == native:
            print(f"installing: {platform} skipped: the machine's own")
            continue
        if name in registered():
            print(f"installing: {platform} OK (already registered)")
            continue
        entry = _debian_entry(cpu)
        interpreter = f"/usr/bin/qemu-{cpu}-static"
        line = f":{name}:M:{entry.get('offset', '0') or '0'}:{entry['magic']}:{entry['mask']}:{interpreter}:F"
        (BINFMT / "register").write_text(line)
        print(f"installing: {platform} OK")


def uninstall(names: list[str]) -> None:
    for name in names:
        entry = BINFMT / name
        if name in ("register", "status") or "/" in name:
            raise SystemExit(f"binfmt-standin: {name!r} is not a handler")
        if entry.exists():
            entry.write_text("-1")
            print(f"uninstalling: {name} OK")
        else:
            print(f"uninstalling: {name} not found")


def main(argv: list[str]) -> int:
    ensure_mounted()
    if len(argv) == 2 and argv[0] == "--install":
        install(argv[1].split(","))
    elif len(argv) == 2 and argv[0] == "--uninstall":
        uninstall(argv[1].split(","))
    elif argv:
        print("usage: binfmt [--install P[,P...] | --uninstall NAME[,NAME...]]", file=sys.stderr)
        return 2
    supported = ["linux/amd64" if os.uname().machine == "x86_64" else "linux/arm64"]
    supported += [f"linux/{p}" for p, cpu in CPUS.items() if f"qemu-{cpu}" in registered()]
    print(json.dumps({"supported": sorted(set(supported)), "emulators": registered()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
