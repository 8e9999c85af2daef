"""What doctor reports: one :class:`Finding` per host and item, each problem with its :class:`Repair`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "EXIT",
    "Finding",
    "Repair",
    "Status",
    "overall",
    "replace",
    "restart",
    "run",
    "staged_up",
    "start",
    "target",
]

Status = Literal["ok", "info", "warn", "fail"]
# Monitoring plugins' convention (Nagios, Icinga): 0 ok, 1 warning, 2 critical; 3: doctor could not run.
EXIT: dict[Status, int] = {"ok": 0, "info": 0, "warn": 1, "fail": 2}
_RANK: dict[Status, int] = {"ok": 0, "info": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Repair:
    """How to fix a problem: ``pulumi up --replace|--target URN``, a systemd unit on a host,
    or (``run``) a command to run there as root where neither reaches (see registry.py)."""

    kind: Literal["replace", "target", "restart", "start", "run"]
    subject: str  # a URN for replace/target, a unit for restart/start, a command line for run
    host: str = ""  # the host a unit runs on
    note: str = ""  # what else to know (one sentence)

    @property
    def text(self) -> str:
        if self.kind in ("replace", "target"):
            command = f"pulumi up --{self.kind} {shlex.quote(self.subject)}"
        elif self.kind == "run":
            command = f"on {self.host}: sudo {self.subject}"
        else:
            command = f"on {self.host}: sudo systemctl {self.kind} {shlex.quote(self.subject)}"
        return f"{command}  ({self.note})" if self.note else command

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "host": self.host, "text": self.text}


def replace(urn: str, note: str = "") -> Repair:
    return Repair("replace", urn, note=note)


def target(urn: str, note: str = "") -> Repair:
    return Repair("target", urn, note=note)


def restart(host: str, unit: str, note: str = "") -> Repair:
    return Repair("restart", unit, host, note)


def start(host: str, unit: str, note: str = "") -> Repair:
    return Repair("start", unit, host, note)


def run(host: str, command: str, note: str = "") -> Repair:
    return Repair("run", command, host, note)


def staged_up(host: str, stage: str, up: str, args: tuple[str, ...] = (), note: str = "") -> Repair:
    """Run again the up script a host service's last `pulumi up` staged on ``host``
    (components/host_service.py: ``/etc/forgeway/stage/<stage>``, the stage as its last
    argument). Why not ``pulumi up``: ``--target`` of the unchanged command changes nothing,
    and ``--replace`` runs the new create, then the old delete, whose down script removes
    what the create just installed. The up converges."""
    where = f"/etc/forgeway/stage/{stage}"
    return run(host, shlex.join(["sh", f"{where}/{up}", *args, where]), note)


@dataclass(frozen=True)
class Finding:
    host: str
    item: str  # tunnel, forwarding, ip_forward, admin-ssh, gitlab, registry-tls, runner, disk, backup, api-token
    status: Status
    detail: str
    repair: Repair | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "item": self.item,
            "status": self.status,
            "detail": self.detail,
            "repair": self.repair.as_json() if self.repair else None,
        }


def overall(findings: list[Finding]) -> Status:
    """The worst status (info counts as ok)."""
    worst: Status = "ok"
    for finding in findings:
        if _RANK[finding.status] > _RANK[worst]:
            worst = finding.status
    return worst
