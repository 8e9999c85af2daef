"""The ``backup`` section: restic backups of GitLab off the device (docs/backup.md).

A repository is a restic repository URL (restic's "Preparing a new repository"): ``sftp:``,
``rest:``, ``s3:``, ``b2:``, ``azure:``, ``gs:``, ``swift:`` or ``rclone:``. None (the
default) is SFTP on the VPS over the tunnel, as user ``forgeway-backup``
(components/backup.py). A local path (or ``local:``) is refused: it keeps the backup on
the device it is meant to survive; so is one with a password in it (the section is not
secret: credentials go in the secret ``backup_environment``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from components.config.types import Int, OnCalendar, Section

__all__ = ["BACKENDS", "Backup", "Retention", "repository_display", "repository_host"]

# restic's backends that keep the data somewhere else (restic docs, "Preparing a new repository").
BACKENDS = ("sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")
# The one restic tells local paths by, and what forgeway refuses.
_LOCAL = "local"


def _backend(url: str) -> str:
    return url.split(":", 1)[0] if ":" in url else ""


def _repository(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value != value.strip() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value) or "'" in value:
        raise ValueError("a restic repository URL without spaces, quotes or control characters")
    backend = _backend(value)
    if value.startswith(("/", ".", "~")) or backend == _LOCAL:
        raise ValueError(
            "a repository off the device: a local path keeps the backup on the disk it must survive; "
            "leave backup.repository unset (SFTP on the VPS) or give a remote one (sftp:, rest:, s3:, b2:, ...)"
        )
    if backend not in BACKENDS:
        raise ValueError(f"a restic repository URL starting with one of {', '.join(b + ':' for b in BACKENDS)}")
    rest = value[len(backend) + 1 :]
    if not rest:
        raise ValueError(f"a restic repository URL with a location after '{backend}:'")
    if _password_in(value):
        raise ValueError(
            "a URL without a password: backup.repository is plain config; put credentials in the secret "
            "backup_environment (e.g. RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD, AWS_SECRET_ACCESS_KEY)"
        )
    return value


def _password_in(url: str) -> bool:
    """A ``user:password@`` in a URL-shaped location (rest:https://u:p@h/, sftp://u:p@h/)."""
    location = url.split(":", 1)[1]
    if location.startswith("http://") or location.startswith("https://") or location.startswith("//"):
        netloc = urlsplit(location if "://" in location else "sftp:" + location).netloc
        return ":" in netloc.rpartition("@")[0]
    return False


def repository_host(url: str) -> str | None:
    """The host name or address a sftp: or rest: repository connects to (None: another backend)."""
    backend = _backend(url)
    location = url.split(":", 1)[1] if ":" in url else ""
    if backend == "rest" or (backend == "sftp" and location.startswith("//")):
        netloc = urlsplit(location if "://" in location else "sftp:" + location).netloc
        return urlsplit(f"//{netloc}").hostname
    if backend == "sftp":  # sftp:user@host:/path
        host = location.rpartition("@")[2].split(":", 1)[0] if "@" in location else location.split(":", 1)[0]
        return host.strip("[]") or None
    return None


def repository_display(url: str) -> str:
    """The URL with any user:password@ cut to user@ (config refuses passwords; belt and braces)."""
    return re.sub(r"//([^/@:]+):[^/@]*@", r"//\1@", url)


Repository = Annotated[str, AfterValidator(_repository)]


class Retention(Section):
    """What `restic forget --prune` keeps after each backup (its --keep-* options)."""

    keep_last: Annotated[Int, Field(ge=0, le=1000)] = Field(3, description="The newest snapshots, whatever their age")
    keep_daily: Annotated[Int, Field(ge=0, le=1000)] = Field(7, description="The last snapshot of each of so many days")
    keep_weekly: Annotated[Int, Field(ge=0, le=1000)] = Field(
        4, description="The last snapshot of each of so many weeks"
    )
    keep_monthly: Annotated[Int, Field(ge=0, le=1000)] = Field(
        6, description="The last snapshot of each of so many months"
    )

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if not any((self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)):
            # restic forget with no policy removes nothing; all zero is a mistake either way.
            raise ValueError("at least one of keep_last, keep_daily, keep_weekly, keep_monthly above 0")
        return self

    def restic_args(self) -> list[str]:
        """The --keep-* options of `restic forget`, for the policies above 0."""
        keeps = (
            ("last", self.keep_last),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
        )
        return [f"--keep-{name}={n}" for name, n in keeps if n > 0]


class Backup(Section):
    """Scheduled, encrypted backups of GitLab off the device, with restic (docs/backup.md)."""

    enabled: bool = Field(True, description="Back GitLab up on a timer on its host (needs the secret backup_password)")
    schedule: OnCalendar = Field(
        "*-*-* 03:15:00", description="systemd OnCalendar of the backup, UTC only (cron fallback where it can)"
    )
    randomized_delay_minutes: Annotated[Int, Field(ge=0, le=720)] = Field(
        30, description="RandomizedDelaySec of the timer, in minutes (spreads the load on a shared repository)"
    )
    timeout_minutes: Annotated[Int, Field(ge=10, le=1440)] = Field(
        360, description="A run taking longer is stopped and reported failed"
    )
    repository: Repository | None = Field(
        None,
        description="restic repository URL (sftp:, rest:, s3:, b2:, ...; credentials in backup_environment); "
        "default: SFTP on the VPS over the tunnel, user forgeway-backup",
    )
    retention: Retention = Field(Retention(), description="restic forget --prune policy after each backup")
