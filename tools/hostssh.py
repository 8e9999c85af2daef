"""Run a command as root on one of a stack's hosts, over the program's own SSH connection.

What tools.restore and tools.doctor use to reach a host, so that they connect exactly
as `pulumi up` does (components/hosts.py): the host's address, port and login user, its
pinned host key and its jump host's (components/render/ssh.py ssh_options), the stack's
``ssh_private_key`` held by a private ssh-agent (never in a file the command names, never
on a command line; without the key, the caller's own agent), and root through
``hosts[].become`` (components/scripts become_command: ``sudo -n``). ``stdin`` is piped;
a secret goes there, never on the command line.

The stack's config comes from Pulumi.<stack>.yaml (components/config parse_stack), its
secrets decrypted with the passphrase from PULUMI_CONFIG_PASSPHRASE or
PULUMI_CONFIG_PASSPHRASE_FILE, as the CLI reads it (tools/stack/secrets.py).

    python -m tools.hostssh --stack prod [--host NAME | --role gitlab] -- COMMAND...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import ConfigError, Host, StackConfig, parse_stack
from components.hosts import sudo_refused
from components.render.ssh import SshTarget, ssh_destination, ssh_options
from components.scripts import become_command
from tools.stack.file import load_stack_file
from tools.stack.secrets import read_passphrase, secure_values

__all__ = [
    "HostConnection",
    "HostRunner",
    "HostSshError",
    "SshAgent",
    "connection_from_config",
    "open_stack_host",
    "stack_connection",
]

ROOT = Path(__file__).resolve().parent.parent
CONNECT_TIMEOUT_S = 15


class HostSshError(RuntimeError):
    """The host could not be chosen or reached (a config problem, no such host, no answer)."""


class SshAgent:
    """A private ssh-agent, stopped by PID at close (the applier's and these tools')."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="forgeway-agent-")
        self.socket = str(Path(self._dir.name) / "agent.sock")
        out = subprocess.run(["ssh-agent", "-a", self.socket, "-s"], capture_output=True, text=True, check=True)
        pid = next(part for part in out.stdout.split(";") if part.strip().startswith("SSH_AGENT_PID="))
        self.pid = int(pid.split("=")[1])
        self._keys: set[str] = set()
        self._lock = threading.Lock()  # the applier adds keys from the SDK's worker threads

    def add(self, private_key: str) -> None:
        with self._lock:
            if private_key in self._keys:
                return
            key_file = Path(self._dir.name) / f"key{len(self._keys)}"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(private_key if private_key.endswith("\n") else private_key + "\n")
            subprocess.run(["ssh-add", "-q", str(key_file)], env=self.env(), check=True, capture_output=True)
            key_file.unlink()
            self._keys.add(private_key)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSH_AUTH_SOCK": self.socket}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)
        self._dir.cleanup()


@dataclass(frozen=True)
class HostConnection:
    """How to reach one host as the program does; ``private_key`` is secret (not in repr)."""

    name: str
    target: SshTarget
    jump: SshTarget | None
    become: str
    private_key: str | None = None

    def __repr__(self) -> str:
        return f"HostConnection(name={self.name!r}, target={self.target!r}, jump={self.jump!r}, become={self.become!r})"

    def ssh_argv(self, command: str) -> list[str]:
        """The ssh command line for ``command`` (already wrapped for root); no secret in it."""
        return [
            "ssh",
            *ssh_options(self.target, self.jump),
            "-o",
            f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            ssh_destination(self.target),
            command,
        ]

    def as_root(self, command: str) -> str:
        """``command`` (a shell command line) run as root the way the program's scripts are."""
        refused = sudo_refused(self.name, self.target.user)
        return become_command(command, self.become, refused)


def _target(host: Host) -> SshTarget:
    return SshTarget(address=host.address, port=host.ssh_port, user=host.ssh_user, host_key=host.host_key)


def _choose(config: StackConfig, host: str | None, role: str | None) -> Host:
    if host is not None:
        for entry in config.hosts:
            if entry.name == host:
                return entry
        names = ", ".join(h.name for h in config.hosts)
        raise HostSshError(f"no host named {host!r} in the stack (hosts: {names})")
    wanted = role or "gitlab"
    matches = [h for h in config.hosts if wanted in h.roles]
    if len(matches) != 1:
        found = ", ".join(h.name for h in matches) or "none"
        raise HostSshError(f"expected exactly one host with role {wanted!r}, found {found}: name one with --host")
    return matches[0]


def connection_from_config(
    config: Mapping[str, Any], secret_keys: Sequence[str], *, host: str | None = None, role: str | None = None
) -> HostConnection:
    """The connection to ``host`` (by name), else to the one host with ``role`` (default
    gitlab), from a stack's config as the CLI hands it to the program (full keys)."""
    try:
        stack, secrets = parse_stack(config, secret_keys)
    except ConfigError as exc:
        raise HostSshError(f"the stack's config is not valid:\n{exc}") from None
    chosen = _choose(stack, host, role)
    by_name = {h.name: h for h in stack.hosts}
    jump = _target(by_name[chosen.jump_host]) if chosen.jump_host else None
    key = secrets.get("ssh_private_key")
    return HostConnection(
        name=chosen.name,
        target=_target(chosen),
        jump=jump,
        become=chosen.escalation,
        private_key=str(key) if key else None,
    )


def stack_connection(
    stack: str,
    *,
    host: str | None = None,
    role: str | None = None,
    project_dir: Path = ROOT,
    environ: Mapping[str, str] | None = None,
) -> HostConnection:
    """The connection to a host of Pulumi.<stack>.yaml (see connection_from_config)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise HostSshError(f"no stack file {path} (--stack {stack!r})")
    environ = os.environ if environ is None else environ
    try:
        needs_passphrase = bool(secure_values(yaml.safe_load(path.read_text()) or {}))
        passphrase = read_passphrase(environ) if needs_passphrase else None
        config, secret_keys = load_stack_file(path, passphrase)
    except ValueError as exc:
        raise HostSshError(f"{path.name}: {exc}") from None
    return connection_from_config(config, secret_keys, host=host, role=role)


class HostRunner:
    """Runs commands as root on one host; holds the private ssh-agent until ``close``."""

    def __init__(self, connection: HostConnection) -> None:
        self.connection = connection
        self._agent: SshAgent | None = None

    @property
    def name(self) -> str:
        return self.connection.name

    def _env(self) -> dict[str, str]:
        if self.connection.private_key is None:
            return dict(os.environ)  # the caller's own agent, as the program without ssh_private_key
        if self._agent is None:
            self._agent = SshAgent()
            self._agent.add(self.connection.private_key)
        return self._agent.env()

    def run(
        self, command: str, *, stdin: str | bytes | None = None, timeout: float = 600, root: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``command`` (a shell command line) on the host, as root unless ``root`` is false;
        exit status 255 is ssh's own (no connection). Raises HostSshError on a timeout."""
        wrapped = self.connection.as_root(command) if root else command
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        try:
            done = subprocess.run(
                self.connection.ssh_argv(wrapped),
                input=data,
                capture_output=True,
                env=self._env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HostSshError(f"host {self.name}: no answer within {timeout:g} s") from exc
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def __enter__(self) -> HostRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_stack_host(stack: str, *, host: str | None = None, role: str | None = None) -> HostRunner:
    """A runner for a host of Pulumi.<stack>.yaml; use it as a context manager."""
    return HostRunner(stack_connection(stack, host=host, role=role))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.hostssh", description="Run a command as root on a stack's host (stdin piped)."
    )
    parser.add_argument("--stack", required=True)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--host", help="the host's name in the stack's hosts section")
    which.add_argument("--role", help="the one host with this role (default: gitlab)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments (after --)")
    args = parser.parse_args(argv)
    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not words:
        parser.error("no command given (python -m tools.hostssh --stack NAME -- COMMAND...)")
    try:
        with open_stack_host(args.stack, host=args.host, role=args.role) as runner:
            done = runner.run(shlex.join(words), stdin=sys.stdin.buffer.read() if not sys.stdin.isatty() else None)
    except HostSshError as exc:
        print(f"hostssh: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
