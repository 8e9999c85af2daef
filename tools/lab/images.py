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
the recipe's hash (its ``forgeway.recipe`` label): no build, no import. The build steps
themselves are in tools/lab/image_build.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tools.lab.docker import DaemonInfo, docker, docker_client, docker_env
from tools.lab.image_build import (  # the build steps; re-exported for tools/lab/nspawn.py and tests
    _SEARCH_PATH,
    BUILDER_VERSION,
    SUITE,
    _build_dir,
    _copy_files,
    _install,
    _layer,
    _locked,
    _minbase,
    _remove,
    _run,
    _tar,
    cache_dir,
    debian_mirror,
)

__all__ = [
    "BASE",
    "BINFMT_STANDIN",
    "DIND_STANDIN",
    "GITEA_STANDIN",
    "GITLAB_STANDIN",
    "HELLO_ARM64",
    "RECIPES",
    "RUNNER_STANDIN",
    "STANDIN_VERSION",
    "SUITE",
    "WOODPECKER_AGENT_STANDIN",
    "WOODPECKER_SERVER_STANDIN",
    "ImageFile",
    "Recipe",
    "cache_dir",
    "debian_mirror",
    "ensure_hello_arm64",
    "ensure_image",
    "ensure_image_as",
    "relabel_architecture",
    "rootfs_tarball",
    "standin_image",
]
# build steps tools/lab/nspawn.py and tests import from here (tools/lab/image_build.py)
__all__ += [
    "_build_dir",
    "_install",
    "_locked",
    "_minbase",
    "_run",
    "_tar",
]

LABEL = "forgeway.recipe"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class ImageFile:
    """A file of this repository copied into a recipe's root file system (owner root)."""

    source: str  # path relative to the repository root, e.g. tools/lab/standin_image/wrapper.py
    target: str  # absolute path in the image, e.g. /assets/wrapper
    mode: int = 0o644
    text: str | None = None  # the content itself, instead of a file's (source then only names it)

    def content(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
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
# Debian's docker-registry behind it, sshd on 22 (Git as user git), GitLab STANDIN_VERSION
# with gitlab-backup, gitlab-ctl and gitlab-rake at omnibus's paths. See
# tools/lab/standin_image/wrapper.py; another version: standin_image().
GITLAB_STANDIN = "forgeway-lab/gitlab-standin:1.0"
# Run as the program runs gitlab/gitlab-runner (its config volume, the 0600 config.toml,
# the CA, the host's docker socket): checks them, logs "runner-standin ready: ..." and
# verifies its token and polls GitLab for jobs (runner_gitlab.py), or exits 1 naming the
# first problem; runs GitLab's and lab jobs and drains them on SIGQUIT.
# No STOPSIGNAL (gitlab-runner's image has SIGQUIT; `docker import` cannot set it): the
# lab proves the program's own stop_signal. See tools/lab/standin_image/runner_standin.py.
RUNNER_STANDIN = "forgeway-lab/runner-standin:1.0"
# Speaks tonistiigi/binfmt's interface against the kernel's binfmt_misc, with Debian's
# qemu-user-static (arm64 and amd64 only). See tools/lab/standin_image/binfmt_standin.py.
BINFMT_STANDIN = "forgeway-lab/binfmt-standin:1.0"
# docker:dind's TLS start (DOCKER_TLS_CERTDIR: certificates made at start, 2376 with
# --tlsverify) with Debian's docker.io, which is also the job's docker client. See
# tools/lab/standin_image/dind_entrypoint.sh.
DIND_STANDIN = "forgeway-lab/dind-standin:1.0"
# One static aarch64 program, /hello (tools/lab/aarch64_hello.py): runs here only through QEMU.
HELLO_ARM64 = "forgeway-lab/hello-arm64:1.0"
_STANDIN_DIR = "tools/lab/standin_image"
# Gitea (the rootful gitea/gitea image's interface) and Woodpecker's server and agent: see
# docs/lab-gitea.md and tools/lab/standin_image/gitea_standin/, woodpecker_standin/.
GITEA_STANDIN = "forgeway-lab/gitea-standin:1.0"
WOODPECKER_SERVER_STANDIN = "forgeway-lab/woodpecker-server-standin:1.0"
WOODPECKER_AGENT_STANDIN = "forgeway-lab/woodpecker-agent-standin:1.0"
_GITEA_DIR = f"{_STANDIN_DIR}/gitea_standin"
_WOODPECKER_DIR = f"{_STANDIN_DIR}/woodpecker_standin"
# git: the repositories gitlab-shell serves and gitlab-backup bundles
_GITLAB_PACKAGES = (
    "python3-minimal",
    "ca-certificates",
    "openssl",
    "nginx",
    "openssh-server",
    "docker-registry",
    "git",
)
STANDIN_VERSION = "17.11.3"  # the GitLab (CE) the default stand-in says it is (the issue-18 contract)
_RAILS = "/opt/gitlab/embedded/service/gitlab-rails"
_SHELL = "/opt/gitlab/embedded/service/gitlab-shell"


def _version_files(version: str) -> tuple[ImageFile, ImageFile]:
    """Where omnibus says its version: gitlab-rails' VERSION (``17.11.3``, ``17.11.3-ee``) and the manifest."""
    edition = "ee" if version.endswith("-ee") else "ce"
    return (
        ImageFile("(generated) VERSION", f"{_RAILS}/VERSION", text=f"{version}\n"),
        ImageFile("(generated) version-manifest.txt", "/opt/gitlab/version-manifest.txt",
                  text=f"gitlab-{edition} {version.removesuffix('-ee')}\n"),
    )  # fmt: skip


RECIPES: dict[str, Recipe] = {
    BASE: Recipe(packages=("python3-minimal", "ca-certificates")),
    GITLAB_STANDIN: Recipe(
        # libpython3-stdlib: json and http.server for the API (gitlab_api.py)
        packages=(*_GITLAB_PACKAGES, "libpython3-stdlib"),
        files=(
            ImageFile(f"{_STANDIN_DIR}/wrapper.py", "/assets/wrapper", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_healthcheck.py", "/opt/gitlab/bin/gitlab-healthcheck", 0o755),
            # one file, several names (it acts on its name): the backend, gitlab-rails (omnibus
            # links it into /usr/bin too), the lab's job queue, gitlab-shell
            ImageFile(f"{_STANDIN_DIR}/gitlab_api.py", "/opt/gitlab/embedded/service/gitlab-rails/api.py", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_db.py", "/opt/gitlab/embedded/service/gitlab-rails/gitlab_db.py"),
            ImageFile(f"{_STANDIN_DIR}/gitlab_ci.py", "/opt/gitlab/embedded/service/gitlab-rails/gitlab_ci.py"),
            ImageFile(f"{_STANDIN_DIR}/gitlab_api.py", "/opt/gitlab/bin/gitlab-rails", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_api.py", "/usr/bin/gitlab-rails", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_api.py", "/opt/gitlab/bin/gitlab-standin-job", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_api.py", f"{_SHELL}/bin/gitlab-shell", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_projects.py", f"{_RAILS}/gitlab_projects.py"),
            ImageFile(f"{_STANDIN_DIR}/gitlab_secrets.py", f"{_RAILS}/gitlab_secrets.py"),
            ImageFile(f"{_STANDIN_DIR}/gitlab_backup.py", "/opt/gitlab/bin/gitlab-backup", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_backup.py", "/opt/gitlab/bin/gitlab-rake", 0o755),
            ImageFile(f"{_STANDIN_DIR}/gitlab_ctl.py", "/opt/gitlab/bin/gitlab-ctl", 0o755),
            *_version_files(STANDIN_VERSION),
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
    GITEA_STANDIN: Recipe(
        # libpython3-stdlib: sqlite3, http.server; docker-registry: the packages registry's storage
        packages=(
            "python3-minimal",
            "libpython3-stdlib",
            "ca-certificates",
            "openssh-server",
            "docker-registry",
            "git",
            "passwd",
            "curl",  # as gitea/gitea's (its Dockerfile's apk add): health checks and API calls in it
        ),
        files=(
            ImageFile(f"{_GITEA_DIR}/gitea_entrypoint.py", "/usr/bin/entrypoint", 0o755),
            ImageFile(f"{_GITEA_DIR}/gitea.py", "/usr/local/bin/gitea", 0o755),
            ImageFile(f"{_GITEA_DIR}/gitea_db.py", "/usr/local/bin/gitea_db.py"),
            ImageFile(f"{_GITEA_DIR}/gitea_web.py", "/usr/local/bin/gitea_web.py"),
            ImageFile(f"{_STANDIN_DIR}/wrapper.py", "/usr/local/bin/wrapper.py"),  # its supervisor
        ),
        remove=("/etc/ssh/ssh_host_*",),  # each container's are in /data/ssh, made once
        changes=(
            "ENV PATH=" + _SEARCH_PATH,
            "ENV LANG=C.UTF-8",
            "ENV USER=git",
            "ENV GITEA_CUSTOM=/data/gitea",
            "EXPOSE 22 3000",
            'VOLUME ["/data"]',
            'CMD ["/usr/bin/entrypoint"]',
        ),
    ),
    **{
        name: Recipe(
            packages=("python3-minimal", "libpython3-stdlib", "ca-certificates"),
            files=(
                ImageFile(f"{_WOODPECKER_DIR}/woodpecker_server.py", "/bin/woodpecker-server", 0o755),
                ImageFile(f"{_WOODPECKER_DIR}/woodpecker_agent.py", "/bin/woodpecker-agent", 0o755),
                ImageFile(f"{_WOODPECKER_DIR}/woodpecker_common.py", "/bin/woodpecker_common.py"),
            ),
            changes=("ENV PATH=" + _SEARCH_PATH, "ENV LANG=C.UTF-8", *changes),
        )
        for name, changes in (
            (
                WOODPECKER_SERVER_STANDIN,
                ("EXPOSE 8000 9000", 'VOLUME ["/var/lib/woodpecker"]', 'ENTRYPOINT ["/bin/woodpecker-server"]'),
            ),
            (WOODPECKER_AGENT_STANDIN, ('VOLUME ["/etc/woodpecker"]', 'ENTRYPOINT ["/bin/woodpecker-agent"]')),
        )
    },
    DIND_STANDIN: Recipe(
        packages=("docker.io", "openssl", "ca-certificates", "hostname"),
        files=(ImageFile(f"{_STANDIN_DIR}/dind_entrypoint.sh", "/usr/local/bin/dockerd-entrypoint.sh", 0o755),),
        changes=(
            "ENV PATH=" + _SEARCH_PATH,
            'VOLUME ["/var/lib/docker"]',
            "EXPOSE 2375 2376",
            'ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]',
        ),
    ),
    # python3-minimal has no tomllib: libpython3-stdlib brings it.
    RUNNER_STANDIN: Recipe(
        packages=("python3-minimal", "libpython3-stdlib"),
        files=(
            ImageFile(f"{_STANDIN_DIR}/runner_standin.py", "/usr/local/bin/runner-standin", 0o755),
            ImageFile(f"{_STANDIN_DIR}/runner_gitlab.py", "/usr/local/bin/runner_gitlab.py", 0o644),
            ImageFile(f"{_STANDIN_DIR}/runner_checks.py", "/usr/local/bin/runner_checks.py", 0o644),
        ),
        changes=(
            "ENV PATH=" + _SEARCH_PATH,
            "ENV LANG=C.UTF-8",
            'VOLUME ["/etc/gitlab-runner"]',
            'CMD ["/usr/local/bin/runner-standin"]',
        ),
    ),
}


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


def _image_recipe_label(daemon: DaemonInfo, name: str) -> str | None:
    done = docker(daemon, "image", "inspect", "--format", "{{json .Config.Labels}}", name, check=False, timeout=30)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout.decode() or "null") or {}
    return labels.get(LABEL)


# tag -> GitLab version, of the stand-ins standin_image() named: built by ensure_image
_VERSIONED: dict[str, str] = {}
_VERSION_RE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-ee)?")


def standin_image(version: str) -> str:
    """The local tag of the GitLab stand-in saying it is GitLab ``version`` (``17.10.0``, ``17.11.3-ee``).

    :data:`GITLAB_STANDIN` for :data:`STANDIN_VERSION`; else ``forgeway-lab/gitlab-standin:<version>``,
    which :func:`ensure_image` makes in a daemon as one small layer on top of GITLAB_STANDIN
    (its two version files: ``docker build``, seconds, cached in the daemon by a label).
    """
    if not _VERSION_RE.fullmatch(version):
        raise ValueError(f"GitLab version {version!r}: expected MAJOR.MINOR.PATCH or MAJOR.MINOR.PATCH-ee")
    if version == STANDIN_VERSION:
        return GITLAB_STANDIN
    tag = f"forgeway-lab/gitlab-standin:{version}"
    _VERSIONED[tag] = version
    return tag


def _ensure_versioned(daemon: DaemonInfo, name: str, version: str) -> dict[str, float]:
    started = time.monotonic()
    timings = ensure_image(daemon, GITLAB_STANDIN)
    key = hashlib.sha256(f"{RECIPES[GITLAB_STANDIN].key()}:{version}".encode()).hexdigest()[:16]
    if _image_recipe_label(daemon, name) != key:
        context = io.BytesIO()
        files = _version_files(version)
        dockerfile = f"FROM {GITLAB_STANDIN}\n" + "".join(f"COPY f{i} {f.target}\n" for i, f in enumerate(files))
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name_in_context, data in [("Dockerfile", dockerfile.encode()),
                                          *((f"f{i}", f.content()) for i, f in enumerate(files))]:  # fmt: skip
                info = tarfile.TarInfo(name_in_context)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        build_started = time.monotonic()
        docker(daemon, "build", "-q", "--label", f"{LABEL}={key}", "-t", name, "-", input=context.getvalue(),
               timeout=600)  # fmt: skip
        timings["version-layer"] = time.monotonic() - build_started
    timings["total"] = time.monotonic() - started
    return timings


def ensure_image(daemon: DaemonInfo, name: str, recipe: Recipe | None = None) -> dict[str, float]:
    """Make ``name`` exist in ``daemon``, built from ``recipe`` (default: :data:`RECIPES`, or a
    version of the GitLab stand-in named by :func:`standin_image`).

    No-op when the daemon has it with this recipe's hash. Returns timings (seconds) of
    what it did: ``debootstrap``, ``packages``, ``files``, ``import``, ``total``.
    """
    if recipe is None and name in _VERSIONED:
        return _ensure_versioned(daemon, name, _VERSIONED[name])
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
