"""``python -m tools.lab.prebuild``: every cached tarball the lab uses, built now, at once.

The stand-in images' root file systems (tools/lab/images.py) and the booting hosts' roots
(tools/lab/rootfs.py) are built on first use and cached; on a machine without the cache
that is minutes of debootstrap and apt. ``make test`` runs this beside the non-lab tiers,
so the lab tier finds them built; with the cache in place it only checks that each file
is there. Each file is built under its own lock (two builders never make one twice), so
this and the lab tier may ask for the same file at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path


def main() -> int:
    from tools.lab import rootfs
    from tools.lab.images import RECIPES, SUITE, _minbase, rootfs_tarball

    started = time.monotonic()
    timings: dict[str, float] = {}
    _minbase(SUITE, timings)  # every other file starts from it
    builds: dict[str, Callable[[], Path]] = {
        "host root (docker)": partial(rootfs.rootfs_tarball, docker=True),  # the plain one first, below it
        **{name: partial(rootfs_tarball, recipe) for name, recipe in RECIPES.items()},
    }
    failed = []
    with ThreadPoolExecutor(max_workers=len(builds)) as pool:
        futures = {name: pool.submit(build) for name, build in builds.items()}
        for name, future in futures.items():
            try:
                future.result()
            except (OSError, RuntimeError, ValueError) as err:  # _run's RuntimeError names the command
                failed.append(f"{name}: {err}")
    for failure in failed:
        print(f"prebuild: {failure}", file=sys.stderr)
    print(f"prebuild: {len(builds) - len(failed)} of {len(builds)} cached in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
