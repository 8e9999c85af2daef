"""Container images for the lab's docker daemons, built here: nothing can be pulled.

The lab has no registry to pull from (no internet; Debian's archive and PyPI only), so
its images are stand-ins built from Debian: ``debootstrap --variant=minbase`` gives a
root file system, ``chroot <dir> apt-get install`` adds a recipe's packages, and
``docker import`` makes it an image.

Both steps are cached as tarballs under the cache directory (``$FORGEWAY_IMAGE_CACHE``,
else ``$XDG_CACHE_HOME/forgeway/images``, else ``~/.cache/forgeway/images``):

* ``minbase-<suite>-<hash>.tar``: the debootstrap result (~30 s to make), shared by
  every recipe;
* ``<name>-<tag>-<hash>.tar``: a recipe's root file system, ``<hash>`` being the hash
  of the recipe (suite, packages, image config, :data:`BUILDER_VERSION`).

So a machine pays each once (CI once per run, developers once). Builds take a lock per
cache file and rename into place, so two test runs at once do not build one file twice
or see half of it. :func:`ensure_image` is a no-op when the daemon has the image with
the recipe's hash (its ``forgeway.recipe`` label): no build, no import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.lab_docker import DaemonInfo, docker, docker_client, docker_env

__all__ = ["BASE", "RECIPES", "Recipe", "cache_dir", "debian_mirror", "ensure_image", "rootfs_tarball"]

BUILDER_VERSION = 2  # bump when the way images are built changes: every hash changes
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LABEL = "forgeway.recipe"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Recipe:
    """An image: minbase of ``suite`` plus ``packages``, with ``changes`` (Dockerfile lines)."""

    packages: tuple[str, ...] = ()
    changes: tuple[str, ...] = ('CMD ["/bin/sh"]',)
    suite: str = SUITE

    def key(self) -> str:
        text = json.dumps(
            {"v": BUILDER_VERSION, "suite": self.suite, "packages": sorted(self.packages), "changes": self.changes},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


BASE = "forgeway-lab/base:1.0"
RECIPES: dict[str, Recipe] = {
    BASE: Recipe(packages=("python3-minimal", "ca-certificates")),
}


def cache_dir() -> Path:
    if env := os.environ.get("FORGEWAY_IMAGE_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "forgeway" / "images"


def debian_mirror() -> str:
    """The Debian archive apt uses here (deb822 or one-line sources), else deb.debian.org."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        candidates = re.findall(r"^\s*URIs:\s*(\S+)", text, re.MULTILINE)
        candidates += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.MULTILINE)
        for uri in candidates:
            if uri.rstrip("/").endswith("/debian"):
                return str(uri).rstrip("/")
    return DEFAULT_MIRROR


def _run(cmd: list[str], *, timeout: float = 900.0) -> None:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PATH": _SEARCH_PATH, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _build_dir(cache: Path) -> Iterator[Path]:
    """A scratch root file system directory; removed after, mounts in it undone first."""
    directory = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        yield directory / "rootfs"
    finally:
        _unmount_under(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _unmount_under(directory: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{directory}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _tar(rootfs: Path, target: Path) -> None:
    """Tar ``rootfs`` into ``target`` atomically (written aside, then renamed)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _minbase(suite: str, timings: dict[str, float]) -> Path:
    """The cached ``debootstrap --variant=minbase`` tarball of ``suite``."""
    key = hashlib.sha256(f"{BUILDER_VERSION}:{suite}:minbase".encode()).hexdigest()[:16]
    target = cache_dir() / f"minbase-{suite}-{key}.tar"
    with _locked(target):
        if target.exists():
            return target
        started = time.monotonic()
        with _build_dir(cache_dir()) as rootfs:
            _run(["debootstrap", "--variant=minbase", suite, str(rootfs), debian_mirror()])
            _tar(rootfs, target)
        timings["debootstrap"] = time.monotonic() - started
    return target


def rootfs_tarball(recipe: Recipe, timings: dict[str, float] | None = None) -> Path:
    """The cached root file system tarball of ``recipe``, built if missing."""
    timings = {} if timings is None else timings
    base = _minbase(recipe.suite, timings)
    if not recipe.packages:
        return base
    name = hashlib.sha256(repr(sorted(recipe.packages)).encode()).hexdigest()[:6]
    target = cache_dir() / f"rootfs-{name}-{recipe.key()}.tar"
    with _locked(target):
        if target.exists():
            return target
        started = time.monotonic()
        with _build_dir(cache_dir()) as rootfs:
            rootfs.mkdir()
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-xf", str(base)])
            _install(rootfs, recipe.packages)
            _tar(rootfs, target)
        timings["packages"] = time.monotonic() - started
    return target


def _install(rootfs: Path, packages: tuple[str, ...]) -> None:
    """``chroot rootfs apt-get install`` with the machine's DNS, no daemons started, no /proc.

    Nothing of these packages' maintainer scripts needs /proc, so none is mounted.
    """
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    chroot = ["chroot", str(rootfs)]
    _run([*chroot, "apt-get", "update"])
    _run([*chroot, "apt-get", "install", "-y", "--no-install-recommends", *packages])
    _run([*chroot, "apt-get", "clean"])
    policy.unlink()
    resolv.write_text("")  # docker bind-mounts its own over it
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
    _trim(rootfs)


# Not needed in a lab container, and vfs copies the whole image for every container
# it creates (twice: its init layer and its own): every MB here costs on each `run`.
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
         "var/cache/apt", "var/cache/debconf/templates.dat-old", "var/log")  # fmt: skip


def _trim(rootfs: Path) -> None:
    for rel in _TRIM:
        path = rootfs / rel
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif path.exists():
            path.unlink()


def _image_recipe_label(daemon: DaemonInfo, name: str) -> str | None:
    done = docker(daemon, "image", "inspect", "--format", "{{json .Config.Labels}}", name, check=False, timeout=30)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout.decode() or "null") or {}
    return labels.get(LABEL)


def ensure_image(daemon: DaemonInfo, name: str, recipe: Recipe | None = None) -> dict[str, float]:
    """Make ``name`` exist in ``daemon``, built from ``recipe`` (default: :data:`RECIPES`).

    No-op when the daemon has it with this recipe's hash. Returns timings (seconds) of
    what it did: ``debootstrap``, ``packages``, ``import``, ``total``.
    """
    started = time.monotonic()
    if recipe is None:
        if name not in RECIPES:
            raise KeyError(f"no recipe for image {name!r}: known are {sorted(RECIPES)}")
        recipe = RECIPES[name]
    timings: dict[str, float] = {}
    key = recipe.key()
    if _image_recipe_label(daemon, name) != key:
        tarball = rootfs_tarball(recipe, timings)
        import_started = time.monotonic()
        changes = [*recipe.changes, f"LABEL {LABEL}={key}"]
        cmd = [docker_client(), "import", *(arg for c in changes for arg in ("--change", c)), "-", name]
        with tarball.open("rb") as stdin:
            done = subprocess.run(
                cmd, stdin=stdin, capture_output=True, timeout=600, check=False,
                env={**os.environ, **docker_env(daemon)},
            )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.decode(errors='replace')}")
        timings["import"] = time.monotonic() - import_started
    timings["total"] = time.monotonic() - started
    return timings
