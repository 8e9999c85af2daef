"""Network namespace topologies of the lab: :class:`Namespaces`, each namespace a :class:`Machine`.

The one builder of namespace topologies for lab tests (tests/lab/netns.py's hosts, the
scripts' own topologies): ``add`` a namespace, ``link`` two of them, ``address`` an
interface, and close them by PID. `make lab`'s fixed topology is tools/lab/network.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

from tools.lab.machine import ROOT_NAMESPACE as _DEPLOYER
from tools.lab.machine import Machine

__all__ = ["Namespaces", "delete_netns", "netns_pids", "terminate_pids"]

_STOP_TIMEOUT = 5.0


class Namespaces:
    """Network namespaces of one test and the veths between them, each a :class:`Machine`.

    ``add`` a namespace, ``link`` two of them, ``address`` an interface. :meth:`close`
    stops, by PID, whatever still runs in them (SIGTERM, then SIGKILL) and deletes them,
    and with them their veths; it goes on past errors and reports them all.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.token = secrets.token_hex(3)
        self.machines: list[Machine] = []

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, role: str, name: str | None = None) -> Machine:
        """Namespace ``<prefix>-<role>-<random>`` (or ``name``), its loopback up."""
        netns = name or f"{self.prefix}-{role}-{self.token}"
        _DEPLOYER.succeed(["ip", "netns", "add", netns])
        machine = Machine(role, netns)
        self.machines.append(machine)
        _DEPLOYER.succeed(["ip", "-n", netns, "link", "set", "lo", "up"])
        return machine

    @staticmethod
    def link(a: Machine, a_if: str, b: Machine | None, b_if: str) -> None:
        """A veth: ``a_if`` in ``a``, its peer ``b_if`` in ``b`` (None: also in ``a``, down, its far end nowhere)."""
        peer = ["netns", b.netns] if b is not None and b.netns is not None else []
        _DEPLOYER.succeed(["ip", *_in_netns(a), "link", "add", a_if, "type", "veth", "peer", "name", b_if, *peer])

    @staticmethod
    def address(machine: Machine, interface: str, cidr: str | None = None) -> None:
        """Give ``interface`` of ``machine`` the address ``cidr`` (if any) and bring it up."""
        if cidr is not None:
            _DEPLOYER.succeed(["ip", *_in_netns(machine), "addr", "add", cidr, "dev", interface])
        _DEPLOYER.succeed(["ip", *_in_netns(machine), "link", "set", interface, "up"])

    def close(self) -> None:
        errors = []
        while self.machines:
            netns = self.machines.pop().netns
            assert netns is not None
            try:
                delete_netns(netns)
            except Exception as exc:  # every namespace gets its chance
                errors.append(f"delete {netns}: {exc}")
        if errors:
            raise RuntimeError("namespace cleanup failed: " + "; ".join(errors))


def _in_netns(machine: Machine) -> list[str]:
    return [] if machine.netns is None else ["-n", machine.netns]


def terminate_pids(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL, processes by PID; wait until they are gone from /proc (reaped)."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, _STOP_TIMEOUT)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while (pids := [pid for pid in pids if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pids:
            return
    raise RuntimeError(f"processes {pids} survived SIGKILL")


def netns_pids(netns: str) -> list[int]:
    """The PIDs of the processes in namespace ``netns`` (none if it is gone)."""
    if not Path("/run/netns", netns).exists():
        return []
    return [int(pid) for pid in _DEPLOYER.succeed(["ip", "netns", "pids", netns]).split()]


def delete_netns(netns: str) -> None:
    """Stop, by PID, whatever still runs in a namespace of ours, then delete it.

    Stopping its processes' owners has normally ended everything in it already: this is the backstop.
    """
    terminate_pids(netns_pids(netns))
    if Path("/run/netns", netns).exists():
        _DEPLOYER.succeed(["ip", "netns", "delete", netns])
