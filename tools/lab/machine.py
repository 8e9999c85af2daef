"""One way for the lab (tools/lab and its tests) to act on a lab host: a :class:`Machine`.

Shaped after the NixOS test driver's machine object (nixpkgs
``nixos/lib/test-driver/src/test_driver/machine.py``: ``execute``, ``succeed``, ``fail``,
``wait_until_succeeds``, ``wait_for_open_port``), for hosts that are network namespaces
on this machine instead of VMs:

* ``execute`` runs a command in the host and returns what happened; ``succeed`` returns
  its stdout and raises :class:`CommandFailed` (command, exit status and output) unless
  it exited 0; ``fail`` is the reverse. A command is an argv list, or a string run by
  ``sh -c``.
* A host is a network namespace (``netns``; None is this machine's own) plus, for a
  host with processes of its own, a *leader*: the PID whose namespaces the command
  enters (``nsenter -t PID``): a booting host's systemd, or the sshd a host's
  sessions run under. :meth:`Machine.inside` is that view; a plain Machine runs this
  machine's tools in the host's network namespace only (``ip netns exec``), which is
  how a namespace host without a root of its own is reached.
* ``docker`` / ``docker_execute`` run the docker client against the host's own dockerd.

Every Lab of tests/lab/netns.py and every host ``tools.lab`` builds is wrapped by the
same class (``Lab`` hosts' ``.machine``, ``MakeLab.machine(name)``), so a test reads the
same whatever made the host; ``tools.lab`` itself runs its commands in a namespace or on
this machine through it too.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.lab.docker import DaemonInfo

__all__ = ["ROOT_NAMESPACE", "CommandFailed", "Machine"]

Command = str | Sequence[str]
Done = subprocess.CompletedProcess[str]
Env = Mapping[str, str] | None  # variables added to the host's own for one command
_TIMEOUT = 60.0
_DOCKER_TIMEOUT = 300.0
_POLL = 0.5


class CommandFailed(RuntimeError):
    """A command's exit status was not what the test needed; the message has all of it."""

    def __init__(self, machine: str, command: Command, done: subprocess.CompletedProcess[str], wanted: str) -> None:
        self.done = done
        shown = command if isinstance(command, str) else shlex.join(command)
        output = (done.stdout + done.stderr).strip()
        super().__init__(f"{machine}: `{shown[:300]}` exited {done.returncode}, {wanted}:\n{output[-3000:]}")


def _decoded(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


@dataclass(frozen=True)
class Machine:
    """A lab host as the lab acts on it; see the module docstring."""

    name: str
    netns: str | None = None  # network namespace; None: this machine's own
    # The PID whose namespaces ``inside`` enters, asked at each call (a reboot changes it).
    leader: Callable[[], int] | None = None
    nsenter_flags: tuple[str, ...] = ("-a",)  # which of the leader's namespaces to enter
    entered: bool = False  # run through the leader (``inside``), not ``ip netns exec``
    env: Mapping[str, str] = field(default_factory=dict)  # the host's own variables (FORGEWAY_*)
    # The host's dockerd as it is now (a restarted daemon records itself anew), if it has one.
    daemon: Callable[[], DaemonInfo] | None = None

    # ----------------------------------------------------------------------- running commands

    @property
    def inside(self) -> Machine:
        """The same host, commands entering its leader's namespaces (its own root, PIDs, mounts)."""
        if self.leader is None:
            raise ValueError(f"{self.name} has no leader process to enter")
        return replace(self, entered=True)

    def argv(self, command: Command) -> list[str]:
        """What runs for ``command`` on this host, from this machine."""
        inner = ["sh", "-c", command] if isinstance(command, str) else list(command)
        if self.entered:
            assert self.leader is not None
            return ["nsenter", "-t", str(self.leader()), *self.nsenter_flags, *inner]
        if self.netns is not None:
            return ["ip", "netns", "exec", self.netns, *inner]
        return inner

    def execute(
        self, command: Command, *, stdin: str | None = None, timeout: float = _TIMEOUT, env: Env = None
    ) -> Done:
        """Run ``command``; whatever its exit status, return it with its stdout and stderr."""
        return subprocess.run(
            self.argv(command),
            input=stdin,
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def succeed(self, command: Command, *, stdin: str | None = None, timeout: float = _TIMEOUT, env: Env = None) -> str:
        """Run ``command``; its stdout, or CommandFailed unless it exited 0."""
        return self._expect(True, command, stdin, timeout, env).stdout

    def fail(self, command: Command, *, stdin: str | None = None, timeout: float = _TIMEOUT, env: Env = None) -> str:
        """Run ``command``; its stdout and stderr, or CommandFailed if it exited 0."""
        done = self._expect(False, command, stdin, timeout, env)
        return done.stdout + done.stderr

    def _expect(self, succeeded: bool, command: Command, stdin: str | None, timeout: float, env: Env) -> Done:
        done = self.execute(command, stdin=stdin, timeout=timeout, env=env)
        if (done.returncode == 0) != succeeded:
            raise CommandFailed(self.name, command, done, "expected 0" if succeeded else "expected a failure")
        return done

    def wait_until_succeeds(self, command: Command, timeout: float = _TIMEOUT) -> str:
        """Run ``command`` every half second until it exits 0 (its stdout), or CommandFailed after ``timeout``."""
        return self._wait(command, timeout, succeeded=True).stdout

    def wait_until_fails(self, command: Command, timeout: float = _TIMEOUT) -> str:
        """Run ``command`` every half second until it fails (its output), or CommandFailed after ``timeout``."""
        done = self._wait(command, timeout, succeeded=False)
        return done.stdout + done.stderr

    def _wait(self, command: Command, timeout: float, *, succeeded: bool) -> Done:
        deadline = time.monotonic() + timeout
        while True:
            done = self.execute(command, timeout=max(1.0, min(_TIMEOUT, deadline - time.monotonic())))
            if (done.returncode == 0) == succeeded:
                return done
            if time.monotonic() > deadline:
                state = "failing" if succeeded else "passing"
                raise CommandFailed(self.name, command, done, f"still {state} after {timeout:g} s")
            time.sleep(_POLL)

    def port_open(self, port: int, address: str = "127.0.0.1", timeout: float = 3) -> bool:
        """Does something on this host's network accept a TCP connection on ``address:port``?"""
        probe = f"import socket; socket.create_connection(({address!r}, {port}), {timeout}).close()"
        return self.execute(["python3", "-c", probe], timeout=timeout + 5).returncode == 0

    def wait_for_open_port(self, port: int, address: str = "127.0.0.1", timeout: float = _TIMEOUT) -> None:
        """Wait until ``address:port`` accepts a connection from this host, or CommandFailed after ``timeout``."""
        probe = f"import socket; socket.create_connection(({address!r}, {port}), 2).close()"
        self.wait_until_succeeds(["python3", "-c", probe], timeout)

    @contextlib.contextmanager
    def background(self, command: Command) -> Iterator[subprocess.Popen[bytes]]:
        """``command`` running on this host for the ``with`` block; killed by PID and reaped after."""
        proc = subprocess.Popen(
            self.argv(command),
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait()

    # ----------------------------------------------------------------------- files

    def path(self, path: str | Path) -> Path:
        """Where this machine sees the host's ``path``: in the leader's root if it has its own."""
        if self.leader is None:
            return Path(path)
        return Path(f"/proc/{self.leader()}/root") / Path(path).relative_to("/")

    def copy_from(self, path: str | Path) -> bytes:
        return self.path(path).read_bytes()

    def copy_to(self, path: str | Path, data: bytes) -> None:
        self.path(path).write_bytes(data)

    # ----------------------------------------------------------------------- docker

    def dockerd(self) -> DaemonInfo:
        """This host's dockerd as it is now."""
        if self.daemon is None:
            raise ValueError(f"{self.name} runs no dockerd of the lab")
        return self.daemon()

    def docker_execute(
        self, *args: str, stdin: bytes | None = None, config: Path | None = None, timeout: float = _DOCKER_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """The docker client against this host's dockerd (``--config`` if given); never raises on its status."""
        from tools.lab.docker import docker

        options = ["--config", str(config)] if config is not None else []
        return _decoded(docker(self.dockerd(), *options, *args, input=stdin, check=False, timeout=timeout))

    def docker(
        self, *args: str, stdin: bytes | None = None, config: Path | None = None, timeout: float = _DOCKER_TIMEOUT
    ) -> str:
        """``docker ARGS`` against this host's dockerd: its stdout, or CommandFailed unless it exited 0."""
        done = self.docker_execute(*args, stdin=stdin, config=config, timeout=timeout)
        if done.returncode != 0:
            raise CommandFailed(self.name, ["docker", *args], done, "expected 0")
        return done.stdout


ROOT_NAMESPACE = Machine("deployer")  # this machine: where ssh, docker and the applier run
