"""The upgrade guard: GitLab moved only along its required upgrade stops (docs/gitlab.md, "Upgrades").

GitLab keeps its stops as data (config/upgrade_path.yml); forgeway keeps a copy in
components/data/gitlab_upgrade_path.yml, with its source and the date it was read.

The pure part, unit-tested over the whole table: :func:`parse_version` (a VERSION file),
:func:`image_version` (an image tag), :func:`target_version` (the stack config) and
:func:`next_step` (running version, target) -> what to do. The host part: Pulumi cannot read
a host before registering, so the guard is a read-only command every change on every host
waits for (``<host>-gitlab-upgrade-check``, components/hosts.py ``add_preflight``): it reads
the data volume's ``gitlab-rails/VERSION`` and refuses, naming both versions, with the
checks this module computed for the target written into its command text (so it runs
again whenever the target changes). Then one stop is one ``up``:
``<host>-gitlab-pre-upgrade-backup`` before the container is replaced, and
``<host>-gitlab-upgrade-wait`` after it (readiness, then background migrations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import pulumi
import yaml
from pulumi_command import remote

from components.config import StackConfig
from components.hosts import Host, add_preflight
from components.scripts import script_command

__all__ = [
    "DATA_FILE",
    "MANUAL_BACKUP_MAX_HOURS",
    "UPGRADE_WAIT_SECONDS",
    "Edition",
    "Stop",
    "UpgradePath",
    "Verdict",
    "Version",
    "check_arguments",
    "guard_upgrades",
    "image_version",
    "load_path",
    "next_step",
    "parse_version",
    "pre_upgrade_backup",
    "target_version",
    "upgrade_wait",
]

DATA_FILE = Path(__file__).parent / "data" / "gitlab_upgrade_path.yml"
# How long an upgraded GitLab may take to be ready and finish its background migrations.
UPGRADE_WAIT_SECONDS = 3600
# How recent a manual backup recorded on the host must be (backups off; docs/gitlab.md).
MANUAL_BACKUP_MAX_HOURS = 24

Edition = Literal["ce", "ee"]

# The image's and the data volume's VERSION: "17.11.3" (CE) or "17.11.3-ee".
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-(ee|ce))?")
# An image tag: GitLab's own "17.11.3-ce.0" / "17.11.3-ee.0", or a bare "17.11.3" / "17.11.3-ee".
_TAG_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-(ce|ee)(?:\.\d+)?)?")


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    edition: Edition = "ce"

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def minor_key(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        """As GitLab's VERSION file writes it: "17.11.3", "17.11.3-ee"."""
        return f"{self.major}.{self.minor}.{self.patch}" + ("-ee" if self.edition == "ee" else "")


def parse_version(text: str) -> Version:
    """A VERSION file's text ("17.11.3\\n", "17.11.3-ee"); ValueError for anything else."""
    found = _VERSION_RE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"GitLab version {text.strip()!r}: expected MAJOR.MINOR.PATCH or MAJOR.MINOR.PATCH-ee")
    major, minor, patch, edition = found.groups()
    return Version(int(major), int(minor), int(patch), "ee" if edition == "ee" else "ce")


def _image_edition(image: str) -> Edition:
    """ee for GitLab's EE images (gitlab/gitlab-ee, .../gitlab-ee-arm64v8), else ce."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return "ee" if last.split(":", 1)[0].startswith("gitlab-ee") else "ce"


def image_version(image: str) -> Version | None:
    """The version an image's tag says, or None (no tag, a digest only, another tag)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    found = _TAG_RE.fullmatch(last.rsplit(":", 1)[1])
    if found is None:
        return None
    major, minor, patch, edition = found.groups()
    said: Edition = edition if edition in ("ce", "ee") else _image_edition(image)  # type: ignore[assignment]
    return Version(int(major), int(minor), int(patch), said)


def target_version(cfg: StackConfig) -> Version:
    """The GitLab version the config deploys: gitlab.version, else the image tag of the
    GitLab host's arch. ValueError naming the key when neither says, or they disagree."""
    key = f"gitlab.images.{cfg.gitlab_host.arch}"
    image = cfg.gitlab.images[cfg.gitlab_host.arch]
    from_tag = image_version(image)
    if cfg.gitlab.version is None:
        if from_tag is None:
            raise ValueError(
                f"{key}: {image!r} does not say its GitLab version in its tag; "
                "expected gitlab.version set to it (e.g. 17.11.3, or 17.11.3-ee), which the upgrade guard needs"
            )
        return from_tag
    configured = parse_version(cfg.gitlab.version)
    if from_tag is not None and from_tag != configured:
        raise ValueError(
            f"gitlab.version: {cfg.gitlab.version!r} but {key} {image!r} says {from_tag}; "
            "expected the same version (or leave gitlab.version out)"
        )
    return configured


@dataclass(frozen=True)
class Stop:
    major: int
    minor: int
    conditional: bool = False  # GitLab: "not required by all instances"; forgeway lets it be skipped
    comments: str = ""

    @property
    def minor_key(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class UpgradePath:
    stops: tuple[Stop, ...]
    read: str  # when the table was copied from GitLab
    source: str

    @property
    def required(self) -> tuple[Stop, ...]:
        return tuple(s for s in self.stops if not s.conditional)


@cache
def load_path(path: Path = DATA_FILE) -> UpgradePath:
    data = yaml.safe_load(path.read_text())
    stops = tuple(
        Stop(int(e["major"]), int(e["minor"]), bool(e.get("conditional", False)), str(e.get("comments", "")))
        for e in data["stops"]
    )
    if [s.minor_key for s in stops] != sorted({s.minor_key for s in stops}):
        raise ValueError(f"{path}: stops must be in ascending order, each once")
    return UpgradePath(stops, str(data["read"]), str(data["source"]))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    next_stop: Stop | None = None  # a refused skip: the stop to deploy first


def _refused_change(current: Version, target: Version, allow_edition_change: bool) -> Verdict | None:
    """An edition change (unless allowed) or a downgrade: refused whatever the stops."""
    if current.edition != target.edition and not allow_edition_change:
        return Verdict(
            False,
            f"GitLab runs {current} ({current.edition.upper()}) but the config deploys {target} "
            f"({target.edition.upper()}): an edition change is refused unless gitlab.allow_edition_change is true",
        )
    if target.key < current.key:
        return Verdict(
            False,
            f"GitLab runs {current} but the config deploys {target}: a downgrade is refused "
            f"(GitLab cannot run on a newer version's data; restore a backup of {target} instead)",
        )
    return None


def next_step(
    current: Version | None, target: Version, path: UpgradePath, *, allow_edition_change: bool = False
) -> Verdict:
    """Whether ``target`` may be deployed over ``current`` (None: a fresh install).

    Refused: an edition change (unless allowed), a downgrade, a skipped required stop
    (naming the first one: the next to deploy), and a new major past the table's last
    stop (the table must be updated). A patch bump, a stop's own version, a version just
    before a stop, and a conditional stop skipped or deployed are allowed.
    """
    if current is None:
        return Verdict(True, f"fresh install of GitLab {target}")
    refused = _refused_change(current, target, allow_edition_change)
    if refused is not None:
        return refused
    if target.key == current.key:
        return Verdict(True, f"GitLab runs {current}, the configured version")
    skipped = [s for s in path.required if current.minor_key < s.minor_key < target.minor_key]
    if skipped:
        stop = skipped[0]
        return Verdict(
            False,
            f"GitLab runs {current} but the config deploys {target}, which skips the required upgrade stop "
            f"{stop}: deploy the latest {stop}.x patch first, let background migrations finish, then go on",
            stop,
        )
    last = path.stops[-1]
    if target.major > last.major and current.minor_key >= last.minor_key:
        return Verdict(
            False,
            f"GitLab runs {current} but the config deploys {target}, past the upgrade path data (last stop {last}, "
            f"read {path.read}): update components/data/gitlab_upgrade_path.yml from {path.source}",
        )
    return Verdict(True, f"GitLab {current} -> {target}: no required stop between")


def check_arguments(target: Version, path: UpgradePath, *, allow_edition_change: bool) -> list[str]:
    """The arguments of gitlab-upgrade-check.sh for ``target``: the target, whether the
    edition may change, the last stop of the table and its date, then every required stop
    below the target's minor (the script applies :func:`next_step`'s rules to them)."""
    stops = [str(s) for s in path.required if s.minor_key < target.minor_key]
    last = path.stops[-1]
    return [str(target), "yes" if allow_edition_change else "no", str(last), path.read, *stops]


# --- on the hosts ------------------------------------------------------------------


def guard_upgrades(cfg: StackConfig, hosts: Mapping[str, Host], target: Version, *, container: str) -> remote.Command:
    """``<gitlab host>-gitlab-upgrade-check``, added to every host's preflight: a refused
    upgrade changes no host. Its command text holds the target and the stops below it, so
    it runs again (reads the running version again) whenever the target changes."""
    host = hosts[cfg.gitlab_host.name]
    args = check_arguments(target, load_path(), allow_edition_change=cfg.gitlab.allow_edition_change)
    check = host.command(
        f"{cfg.gitlab_host.name}-gitlab-upgrade-check",
        parent=host,
        create=script_command("gitlab-upgrade-check.sh", cfg.gitlab_host.name, container, f"{container}-data", *args),
    )
    add_preflight(hosts, check)
    return check


def pre_upgrade_backup(
    host: Host, target: Version, *, container: str, backups: bool, parent: pulumi.Resource
) -> remote.Command:
    """``<host>-gitlab-pre-upgrade-backup``: before the container is replaced by another
    version, forgeway-backup (``backups``), else a recorded manual backup is required."""
    name = host.settings.name
    return host.command(
        f"{name}-gitlab-pre-upgrade-backup",
        parent=parent,
        create=script_command(
            "gitlab-upgrade-backup.sh",
            name,
            container,
            str(target),
            "backup" if backups else "manual",
            pulumi.get_stack(),
            str(MANUAL_BACKUP_MAX_HOURS),
        ),
    )


def upgrade_wait(
    host: Host, target: Version, *, container: str, replaced: pulumi.Output[str], parent: pulumi.Resource
) -> remote.Command:
    """``<host>-gitlab-upgrade-wait``: after each new container (``replaced``: its id),
    GitLab's readiness and then its background migrations, within UPGRADE_WAIT_SECONDS."""
    name = host.settings.name
    create = replaced.apply(
        lambda container_id: script_command(
            "gitlab-upgrade-wait.sh", name, container, str(target), str(UPGRADE_WAIT_SECONDS), container_id
        )
    )
    return host.command(f"{name}-gitlab-upgrade-wait", parent=parent, create=create)
