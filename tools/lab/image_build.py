"""Building the lab's root file systems: debootstrap, apt in a chroot, cached tarballs.

The machinery under tools/lab/images.py (which holds the recipes and puts images into a
daemon) and tools/lab/nspawn.py (machine trees): a cached ``debootstrap
--variant=minbase`` tarball per suite, layers made by unpacking a tarball, changing the
tree and packing it again, each under a lock per cache file and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.lab.images import ImageFile

BUILDER_VERSION = 2  # bump when the way images are built changes: every hash changes
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def _layer(below: Path, target: Path, timings: dict[str, float], step: str, make: Callable[[Path], None]) -> Path:
    """``target``, built if missing: the tarball ``below`` unpacked, changed by ``make``, packed."""
    with _locked(target):
        if target.exists():
            return target
        started = time.monotonic()
        with _build_dir(cache_dir()) as rootfs:
            rootfs.mkdir()
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-xf", str(below)])
            make(rootfs)
            _tar(rootfs, target)
        timings[step] = time.monotonic() - started
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


def _remove(rootfs: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        if not pattern.startswith("/") or ".." in Path(pattern).parts:
            raise ValueError(f"remove pattern {pattern!r} must be an absolute path without '..'")
        for path in rootfs.glob(pattern.lstrip("/")):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _copy_files(rootfs: Path, files: tuple[ImageFile, ...]) -> None:
    """Write ``files`` into ``rootfs`` (owner root, their mode; parent directories 0755)."""
    for image_file in files:
        target = image_file.destination(rootfs)
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # never write through a symlink the packages left there
        target.write_bytes(image_file.content())
        os.chown(target, 0, 0)
        target.chmod(image_file.mode)


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
