"""GitLab is backed up, and off the device (18).

* ``gitlab-backed-up`` (advisory, stack): a stack with GitLab's container but no
  forgeway backup on a host (a remote command installing ``forgeway-backup``,
  components/backup.py): backups are off, and one dead disk loses everything.
* ``backup-repository-off-device`` (mandatory, resource): a restic repository that would
  keep the backup on the device itself: a local path (or ``local:``), a loopback address,
  or sftp/rest to the very host the command runs on. Found by content in every text a
  remote command ships, decoded (forgeway's staged ``settings``: ``REPOSITORY=``; or a
  ``RESTIC_REPOSITORY=`` anywhere).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from ._props import CONTAINER, GITLAB_ROLE, REMOTE_TYPES, ROLE_LABEL, _is_map, _kind, _labels, _texts
from .decoding import _with_decoded

_REPOSITORY = re.compile(r"^\s*(?:export\s+)?(?:RESTIC_)?REPOSITORY=['\"]?([^'\"\s]+)", re.MULTILINE)
_BACKUP_INSTALLED = re.compile(r"\bforgeway-backup\b")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _host_of(repository: str) -> str | None:
    """The host a sftp: or rest: repository connects to (None: none, or another backend)."""
    backend, _, location = repository.partition(":")
    if backend == "rest" or (backend == "sftp" and location.startswith("//")):
        netloc = urlsplit(location if "://" in location else f"sftp:{location}").netloc
        return urlsplit(f"//{netloc}").hostname
    if backend == "sftp":
        return location.rpartition("@")[2].split(":", 1)[0].strip("[]") or None
    return None


def _on_device(repository: str, command_host: str | None) -> str | None:
    """Why ``repository`` is on the device the command runs on, or None."""
    if repository.startswith(("/", "./", "~")) or repository.startswith("local:"):
        return "a local path: the backup stays on the disk it must survive"
    host = _host_of(repository)
    if host is None:
        return None
    host = host.lower().rstrip(".")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in _LOOPBACK_NAMES
    if loopback:
        return f"{host} is the host itself (loopback)"
    if command_host is not None and host == command_host.lower().strip("[]"):
        return f"{host} is the very host this command runs on"
    return None


def backup_repository_off_device(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in REMOTE_TYPES:
        return
    connection = args.props.get("connection")
    command_host = connection.get("host") if _is_map(connection) else None
    where = _kind(args.resource_type)
    for path, text in _with_decoded(_texts(args.resource_type, args.props)):
        if path.startswith("delete"):
            continue
        for found in _REPOSITORY.finditer(text):
            why = _on_device(found.group(1), command_host if isinstance(command_host, str) else None)
            if why:
                report_violation(
                    f"{where} '{args.name}' ({path}) keeps GitLab's backups in repository {found.group(1)}: {why}, "
                    "so they die with the device; leave backup.repository unset (SFTP on the VPS) or give a "
                    "repository on another machine (docs/backup.md)",
                    None,
                )


def gitlab_backed_up(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    gitlab = []
    installed = False
    for r in args.resources:
        try:
            if r.resource_type == CONTAINER and _labels(r.props).get(ROLE_LABEL) == GITLAB_ROLE:
                gitlab.append(r)
            elif r.resource_type in REMOTE_TYPES and any(
                _BACKUP_INSTALLED.search(text) for path, text in _texts(r.resource_type, r.props) if path == "create"
            ):
                installed = True
        except UnknownValueError:
            continue  # unknown during preview
    if installed:
        return
    for r in gitlab:
        report_violation(
            f"container '{r.name}' runs GitLab, but nothing backs it up off the device (backup.enabled is false): "
            "one dead disk loses every repository, issue and image; turn backups on (backup.enabled: true and "
            "the secret backup_password, docs/backup.md) or back GitLab up another way",
            r.urn,
        )
