"""What a forgeway backup snapshot holds, read from ``restic snapshots --json`` and ``restic ls --json``.

The snapshot is of the staging directory (/var/lib/forgeway/backup/staging, issue 18's
contract, point 2): ``gitlab/<name>_gitlab_backup.tar``, ``config/gitlab-secrets.json``,
``config/ssh_host_*_key[.pub]``, ``config/gitlab.rb.rendered``, ``manifest.json``. restic
keeps each file under the path it was backed up from; the staging prefix is found from
where ``manifest.json`` is, so neither side depends on how restic spells it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["BackupContents", "Snapshot", "choose_snapshot", "contents", "parse_snapshots", "version_of_backup_file"]

BACKUP_SUFFIX = "_gitlab_backup.tar"
# GitLab's version as its backup names carry it (17.11.3, 17.11.3-ee).
_VERSION = re.compile(r"\d+\.\d+\.\d+(?:-ee)?")
# ssh_host_ed25519_key, ssh_host_rsa_key.pub, ...: what the container keeps in /etc/gitlab.
_HOST_KEY = re.compile(r"ssh_host_[a-z0-9]+_key(?:\.pub)?")


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    hostname: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class BackupContents:
    """Paths (as restic names them inside the snapshot) of what a restore puts back."""

    backup_file: str  # the tar's path
    secrets: str  # gitlab-secrets.json
    host_keys: tuple[str, ...]  # ssh_host_*_key and .pub

    @property
    def backup_name(self) -> str:
        """The tar's file name (forgeway_17.11.3_gitlab_backup.tar)."""
        return self.backup_file.rsplit("/", 1)[-1]

    @property
    def backup_id(self) -> str:
        """What ``gitlab-backup restore BACKUP=`` takes: the name without _gitlab_backup.tar."""
        return self.backup_name.removesuffix(BACKUP_SUFFIX)


def parse_snapshots(text: str) -> list[Snapshot]:
    raw: list[dict[str, Any]] = json.loads(text or "[]") or []
    return [
        Snapshot(
            id=str(s["id"]),
            short_id=str(s.get("short_id") or s["id"][:8]),
            time=str(s.get("time", "")),
            hostname=str(s.get("hostname", "")),
            tags=tuple(s.get("tags") or ()),
        )
        for s in raw
    ]


def choose_snapshot(snapshots: list[Snapshot], wanted: str) -> Snapshot:
    """``latest`` (the newest forgeway snapshot), else the one whose id starts with ``wanted``."""
    ours = [s for s in snapshots if "forgeway" in s.tags] or snapshots
    if not ours:
        raise ValueError("the repository holds no snapshot: there is nothing to restore")
    if wanted == "latest":
        return max(ours, key=lambda s: s.time)
    matches = [s for s in snapshots if s.id.startswith(wanted)]
    if len(matches) != 1:
        listed = ", ".join(f"{s.short_id} ({s.time[:19]})" for s in sorted(ours, key=lambda s: s.time))
        found = "no snapshot" if not matches else f"{len(matches)} snapshots"
        raise ValueError(f"--snapshot {wanted}: {found} with that id; the repository has: {listed}")
    return matches[0]


def contents(ls_json: str) -> BackupContents:
    """The restore's files in a snapshot, from ``restic ls --json <id>`` (one JSON object a line)."""
    paths = []
    for line in ls_json.splitlines():
        if line.strip():
            node = json.loads(line)
            if node.get("struct_type") == "node" or "path" in node:
                paths.append(str(node.get("path", "")))
    manifest = next((p for p in paths if p.endswith("/manifest.json") or p == "manifest.json"), None)
    if manifest is None:
        raise ValueError("the snapshot has no manifest.json: it is not a forgeway backup")
    prefix = manifest.removesuffix("manifest.json")
    tars = [p for p in paths if p.startswith(prefix + "gitlab/") and p.endswith(BACKUP_SUFFIX)]
    if len(tars) != 1:
        raise ValueError(f"the snapshot holds {len(tars)} GitLab backup files under gitlab/, expected exactly one")
    secrets = prefix + "config/gitlab-secrets.json"
    if secrets not in paths:
        raise ValueError("the snapshot has no config/gitlab-secrets.json: a restore without it loses CI variables")
    keys = tuple(p for p in paths if p.startswith(prefix + "config/") and _HOST_KEY.fullmatch(p.rsplit("/", 1)[-1]))
    return BackupContents(backup_file=tars[0], secrets=secrets, host_keys=keys)


def version_of_backup_file(name: str) -> str:
    """GitLab's version from a backup file's name, as gitlab-backup writes it:
    ``<BACKUP>_gitlab_backup.tar`` with BACKUP=forgeway_<VERSION>, or the default
    ``<timestamp>_<YYYY_MM_DD>_<VERSION>_gitlab_backup.tar``: the last part that is a version."""
    stem = name.removesuffix(BACKUP_SUFFIX)
    for part in reversed(stem.split("_")):
        if _VERSION.fullmatch(part):
            return part
    raise ValueError(f"backup file {name!r}: no GitLab version in its name")
