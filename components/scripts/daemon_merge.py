"""Merge forgeway's keys into a host's docker daemon.json (runs on the host with python3).

Usage: ``python3 daemon_merge.py CURRENT OURS OWNED_BEFORE DOCKERD_MAJOR > MERGED``

* CURRENT: the host's daemon.json (a missing or empty file is ``{}``);
* OURS: the keys forgeway sets now (components/render/docker_daemon.py);
* OWNED_BEFORE: a JSON list of the keys forgeway set last time (``[]`` the first time),
  so a setting removed from config goes away instead of lingering;
* DOCKERD_MAJOR: the daemon's major version (0 when unknown): below 27, IPv6 NAT
  (``ip6tables``) needs ``experimental``.

Keys forgeway does not own are kept exactly as they are. Output: the merged object,
indented, keys sorted, so an unchanged merge is byte-identical (the script compares).
Also importable (``merge``), so the program's tests use the same code as the host.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LEGACY_IPV6_BELOW_MAJOR = 27  # keep in step with components/render/docker_daemon.py LEGACY_IPV6


def merge(
    current: Mapping[str, Any], ours: Mapping[str, Any], owned_before: Iterable[str], major: int
) -> dict[str, Any]:
    merged = {k: v for k, v in current.items() if k not in set(owned_before)}
    merged.update(ours)
    if ours.get("ip6tables") and 0 < major < LEGACY_IPV6_BELOW_MAJOR:
        merged["experimental"] = True
    return merged


def render(merged: Mapping[str, Any]) -> str:
    return json.dumps(merged, indent=2, sort_keys=True) + "\n"


def _load(path: Path) -> Any:
    text = path.read_text() if path.exists() else ""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise SystemExit(f"{path} is not valid JSON ({exc}): refusing to change it") from exc


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    current, ours, owned = (_load(Path(a)) for a in argv[:3])
    if not isinstance(current, dict):
        print(f"{argv[0]} does not hold a JSON object: refusing to change it", file=sys.stderr)
        return 1
    sys.stdout.write(render(merge(current, ours, owned, int(argv[3] or 0))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
