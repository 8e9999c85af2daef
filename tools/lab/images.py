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
  of the recipe (suite, packages, image config, :data:`BUILDER_VERSION`, and the
  content of the files it copies in, so a changed script rebuilds its image).

So a machine pays each once (CI once per run, developers once). Builds take a lock per
cache file and rename into place, so two test runs at once do not build one file twice
or see half of it. :func:`ensure_image` is a no-op when the daemon has the image with
the recipe's hash (its ``forgeway.recipe`` label): no build, no import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tools.lab.docker import DaemonInfo, docker, docker_client, docker_env

__all__ = [
    "BASE",
    "BINFMT_STANDIN",
    "GITLAB_STANDIN",
    "HELLO_ARM64",
    "RECIPES",
    "RUNNER_STANDIN",
    "ImageFile",
    "Recipe",
    "cache_dir",
    "debian_mirror",
    "ensure_hello_arm64",
    "ensure_image",
    "ensure_image_as",
    "relabel_architecture",
    "rootfs_tarball",
]

BUILDER_VERSION = 2  # bump when the way images are built changes: every hash changes
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LABEL = "forgeway.recipe"
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class ImageFile:
    """A file of this repository copied into a recipe's root file system (owner root)."""

    source: str  # path relative to the repository root, e.g. tools/lab/standin_image/wrapper.py
    target: str  # absolute path in the image, e.g. /assets/wrapper
    mode: int = 0o644

    def content(self) -> bytes:
        path = REPO_ROOT / self.source
        try:
            return path.read_bytes()
        except OSError as err:
            raise RuntimeError(f"image file {self.source} ({path}) cannot be read: {err}") from err

    def destination(self, rootfs: Path) -> Path:
        parts = Path(self.target).parts
        if not self.target.startswith("/") or ".." in parts or len(parts) < 2:
            raise ValueError(f"image file target {self.target!r} must be an absolute path to a file, without '..'")
        return rootfs.joinpath(*parts[1:])


@dataclass(frozen=True)
class Recipe:
    """An image: minbase of ``suite`` plus ``packages`` and ``files``, with ``changes`` (Dockerfile lines).

    ``remove``: absolute paths (globs) deleted after the packages are in, e.g. the ssh host
    keys openssh-server's postinst makes, which every container of the image would share.
    """

    packages: tuple[str, ...] = ()
    changes: tuple[str, ...] = ('CMD ["/bin/sh"]',)
    suite: str = SUITE
    files: tuple[ImageFile, ...] = ()
    remove: tuple[str, ...] = ()

    def key(self) -> str:
        fields: dict[str, object] = {
            "v": BUILDER_VERSION, "suite": self.suite, "packages": sorted(self.packages), "changes": self.changes,
        }  # fmt: skip
        if self.files:  # only then: the keys (and cached images) of recipes without files stay as they were
            fields["files"] = [
                [f.source, f.target, f.mode, hashlib.sha256(f.content()).hexdigest()] for f in self.files
            ]
        if self.remove:
            fields["remove"] = sorted(self.remove)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


BASE = "forgeway-lab/base:1.0"
# Behaves on the wire like the omnibus gitlab/gitlab-ce container the program runs, given
# the same env, volumes, uploads and ports: nginx (80, 443, 5050 for the registry),
# Debian's docker-registry behind it, sshd on 22. See tools/lab/standin_image/wrapper.py.
GITLAB_STANDIN = "forgeway-lab/gitlab-standin:1.0"
# Run as the program runs gitlab/gitlab-runner (its config volume, the 0600 config.toml,
# the CA, the host's docker socket): checks them, logs "runner-standin ready: ..." and
# waits, or exits 1 naming the first problem; runs lab jobs and drains them on SIGQUIT.
# No STOPSIGNAL (gitlab-runner's image has SIGQUIT; `docker import` cannot set it): the
# lab proves the program's own stop_signal. See tools/lab/standin_image/runner_standin.py.
RUNNER_STANDIN = "forgeway-lab/runner-standin:1.0"
# Speaks tonistiigi/binfmt's interface against the kernel's binfmt_misc, with Debian's
# qemu-user-static (arm64 and amd64 only). See tools/lab/standin_image/binfmt_standin.py.
BINFMT_STANDIN = "forgeway-lab/binfmt-standin:1.0"
# One static aarch64 program, /hello (tools/lab/aarch64_hello.py): runs here only through QEMU.
HELLO_ARM64 = "forgeway-lab/hello-arm64:1.0"
_STANDIN_DIR = "tools/lab/standin_image"
RECIPES: dict[str, Recipe] = {
    BASE: Recipe(packages=("python3-minimal", "ca-certificates")),
    GITLAB_STANDIN: Recipe(
        packages=("python3-minimal", "ca-certificates", "openssl", "nginx", "openssh-server", "docker-registry"),
        files=(
            ImageFile(f"{_STANDIN_DIR}/wrapper.py", "/assets/wrapper", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_healthcheck.py", "/opt/gitlab/bin/gitlab-healthcheck", 0o755),
        ),
        remove=("/etc/ssh/ssh_host_*",),  # the wrapper keeps its own in /etc/gitlab, as omnibus
        changes=(
            "ENV PATH=/opt/gitlab/embedded/bin:/opt/gitlab/bin:/assets:" + _SEARCH_PATH,
            "ENV LANG=C.UTF-8",
            "EXPOSE 22 80 443 5050",
            'VOLUME ["/etc/gitlab", "/var/log/gitlab", "/var/opt/gitlab"]',
            'CMD ["/assets/wrapper"]',
        ),
    ),
    BINFMT_STANDIN: Recipe(
        packages=("python3-minimal", "libpython3-stdlib", "mount", "qemu-user-static"),
        files=(ImageFile(f"{_STANDIN_DIR}/binfmt_standin.py", "/usr/bin/binfmt", 0o755),),
        # every emulator but qemu-aarch64-static and qemu-x86_64-static (370 MB in all)
        remove=(
            "/usr/bin/qemu-[b-wyz]*",
            "/usr/bin/qemu-a[!a]*",
            "/usr/bin/qemu-aarch64_be*",
            "/usr/bin/qemu-x[!8]*",
            "/usr/libexec/qemu-binfmt",
        ),
        changes=("ENV PATH=" + _SEARCH_PATH, 'ENTRYPOINT ["/usr/bin/binfmt"]'),
    ),
    # python3-minimal has no tomllib: libpython3-stdlib brings it.
    RUNNER_STANDIN: Recipe(
        packages=("python3-minimal", "libpython3-stdlib"),
        files=(ImageFile(f"{_STANDIN_DIR}/runner_standin.py", "/usr/local/bin/runner-standin", 0o755),),
        changes=(
            "ENV PATH=" + _SEARCH_PATH,
            "ENV LANG=C.UTF-8",
            'VOLUME ["/etc/gitlab-runner"]',
            'CMD ["/usr/local/bin/runner-standin"]',
        ),
    ),
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
    """The cached root file system tarball of ``recipe``, built if missing.

    A recipe with ``files`` (or ``remove``) is two cache entries: its packages (the slow
    part, shared by every version of its files) and, on top, the files: a changed script
    costs seconds.
    """
    timings = {} if timings is None else timings
    base = _minbase(recipe.suite, timings)
    if not recipe.packages and not recipe.files and not recipe.remove:
        return base
    name = hashlib.sha256(repr(sorted(recipe.packages)).encode()).hexdigest()[:6]
    packaged = base
    if recipe.packages:
        packages_only = replace(recipe, files=(), remove=())
        packaged = _layer(base, cache_dir() / f"rootfs-{name}-{packages_only.key()}.tar", timings,
                          "packages", lambda rootfs: _install(rootfs, recipe.packages))  # fmt: skip
    if not recipe.files and not recipe.remove:
        return packaged

    def finish(rootfs: Path) -> None:
        _remove(rootfs, recipe.remove)
        _copy_files(rootfs, recipe.files)

    return _layer(packaged, cache_dir() / f"rootfs-{name}-{recipe.key()}.tar", timings, "files", finish)


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


def _image_recipe_label(daemon: DaemonInfo, name: str) -> str | None:
    done = docker(daemon, "image", "inspect", "--format", "{{json .Config.Labels}}", name, check=False, timeout=30)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout.decode() or "null") or {}
    return labels.get(LABEL)


def ensure_image(daemon: DaemonInfo, name: str, recipe: Recipe | None = None) -> dict[str, float]:
    """Make ``name`` exist in ``daemon``, built from ``recipe`` (default: :data:`RECIPES`).

    No-op when the daemon has it with this recipe's hash. Returns timings (seconds) of
    what it did: ``debootstrap``, ``packages``, ``files``, ``import``, ``total``.
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


def relabel_architecture(saved: bytes, arch: str) -> bytes:
    """A ``docker save`` archive whose image config says ``arch``, files unchanged.

    The lab's images are x86_64 builds; a host declared arm64 must find an image whose
    platform is linux/arm64 (the applier checks what the docker provider would pull). The
    content still runs here only because this machine is x86_64: nothing arm64 runs."""
    with tarfile.open(fileobj=io.BytesIO(saved)) as src:
        return _relabelled(src, arch)


def _relabelled(src: tarfile.TarFile, arch: str) -> bytes:
    members = {m.name: m for m in src.getmembers()}
    manifest_file = src.extractfile(members["manifest.json"])
    assert manifest_file is not None
    manifest = json.loads(manifest_file.read())
    renamed: dict[str, tuple[str, bytes]] = {}
    for entry in manifest:
        config_file = src.extractfile(members[entry["Config"]])
        assert config_file is not None
        config = json.loads(config_file.read())
        config["architecture"] = arch
        data = json.dumps(config).encode()
        name = hashlib.sha256(data).hexdigest() + ".json"  # a config is named by its digest
        renamed[entry["Config"]] = (name, data)
        entry["Config"] = name
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            if member.name != "manifest.json" and member.name not in renamed:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in [*renamed.values(), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_image_as(daemon: DaemonInfo, name: str, arch: str) -> None:
    """:func:`ensure_image`, then make its platform say ``arch`` (see relabel_architecture)."""
    ensure_image(daemon, name)
    current = docker(daemon, "image", "inspect", "--format", "{{.Architecture}}", name).stdout.decode().strip()
    if current != arch:
        saved = docker(daemon, "save", name, timeout=600).stdout
        docker(daemon, "load", input=relabel_architecture(saved, arch), timeout=600)


def ensure_hello_arm64(daemon: DaemonInfo) -> None:
    """:data:`HELLO_ARM64` on ``daemon``: /hello (tools/lab/aarch64_hello.py), platform linux/arm64."""
    from tools.lab.aarch64_hello import aarch64_hello

    if docker(daemon, "image", "inspect", HELLO_ARM64, check=False).returncode == 0:
        return
    program = aarch64_hello()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size, info.mode = len(program), 0o755
        tar.addfile(info, io.BytesIO(program))
    docker(daemon, "import", "--change", 'CMD ["/hello"]', "-", HELLO_ARM64, input=out.getvalue())
    saved = docker(daemon, "save", HELLO_ARM64, timeout=600).stdout
    docker(daemon, "load", input=relabel_architecture(saved, "arm64"), timeout=600)
