#!/usr/bin/python3
"""``gitlab-ctl`` of the GitLab stand-in (/opt/gitlab/bin/gitlab-ctl), omnibus's service control.

``gitlab-ctl status|stop|start|restart [SERVICE]`` and ``gitlab-ctl reconfigure``, answered by
the container's PID 1 (wrapper.py) over its control socket, root's alone
(/run/gitlab-standin/control.sock): the services are the wrapper's (nginx, sshd, puma,
sidekiq, registry), so ``gitlab-ctl stop puma`` really stops the API while the container
keeps running, and ``start`` starts it again. Output in runit's words, as omnibus prints it::

    run: puma: (pid 312) 85s; run: log: (pid 1) 90s
    down: sidekiq: 4s, normally up; run: log: (pid 1) 90s
    ok: down: puma: 0s, normally up

``gitlab-ctl upgrade-check OLD NEW`` answers alone (no socket), as omnibus's does before a
start: exit 0 when GitLab NEW may start on data of OLD, else 1 and why (a downgrade, an
edition change, a required upgrade stop skipped: :data:`REQUIRED_STOPS`, a copy of
components/data/gitlab_upgrade_path.yml's required stops from 16.0, kept short on purpose:
the stand-in's image has no copy of the repository).

``gitlab-ctl registry-garbage-collect [-m] [CONFIG]`` does what omnibus's does
(files/gitlab-ctl-commands/registry_garbage_collect.rb; docs.gitlab.com, "Container registry
garbage collection"): the registry must be a service here (``registry_external_url``), else
"Container registry is not enabled" and 1; it stops the registry, runs ``docker-registry
garbage-collect CONFIG`` (``-m``: ``--delete-untagged``, untagged manifests too), then starts
the registry again, also when the collection failed (then exit 1). While it runs nginx answers
the registry's clients 502: a push is refused, as with omnibus. CONFIG defaults to the stand-in's
registry config (omnibus: /var/opt/gitlab/registry/config.yml).

Exit status: 0; ``status`` 3 when a service it names is down (the stand-in's choice: LSB's
"not running"); 1 for an unknown service or command. ``reconfigure`` makes
gitlab-secrets.json if it is missing and records the version; it changes no running service
(restart the container, or the service, for a changed secret to take effect).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

CONTROL_SOCKET = "/run/gitlab-standin/control.sock"
# wrapper.py writes it (omnibus's: /var/opt/gitlab/registry/config.yml)
REGISTRY_CONFIG = "/run/gitlab-standin/registry.yml"
COMMANDS = ("status", "stop", "start", "restart", "reconfigure")
REQUIRED_STOPS = ((16, 3), (16, 7), (16, 11), (17, 3), (17, 5), (17, 8), (17, 11), (18, 2), (18, 5), (18, 8), (18, 11))


def _version(text: str) -> tuple[int, int, int, str]:
    numbers, _, edition = text.strip().partition("-")
    major, minor, patch = (int(part) for part in numbers.split("."))
    return major, minor, patch, edition or "ce"


def upgrade_refusal(old: str, new: str) -> str | None:
    """Why GitLab ``new`` may not start on the data of ``old``, or None."""
    before, after = _version(old), _version(new)
    if before[3] != after[3]:
        return f"GitLab {new} ({after[3].upper()}) cannot start on data of {old} ({before[3].upper()}) in the stand-in"
    if after[:3] < before[:3]:
        return f"It seems you are downgrading from {old} to {new}: downgrades are not supported"
    skipped = [s for s in REQUIRED_STOPS if before[:2] < s < after[:2]]
    if skipped:
        major, minor = skipped[0]
        return (
            f"It seems you are upgrading from {old} to {new}. It is required to upgrade to the latest "
            f"{major}.{minor}.x version first before proceeding. Please follow the upgrade documentation at "
            "https://docs.gitlab.com/ee/update/index.html#upgrade-paths"
        )
    return None


def control(command: str, service: str | None) -> tuple[list[str], int]:
    """One request to PID 1 over the control socket: its output lines and exit status."""
    request = {"command": command, "service": service}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(60)
            connection.connect(CONTROL_SOCKET)
            connection.sendall(json.dumps(request).encode() + b"\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    except OSError as err:
        return [f"fail: runsvdir is not running ({CONTROL_SOCKET}: {err})"], 1
    lines = answer.decode().splitlines()
    code = int(lines[-1].removeprefix("exit ")) if lines and lines[-1].startswith("exit ") else 1
    return lines[:-1], code


def registry_garbage_collect(args: list[str]) -> int:
    """omnibus's registry-garbage-collect: stop the registry, collect, start it again."""
    untagged = "-m" in args
    paths = [a for a in args if a != "-m"]
    if len(paths) > 1 or any(a.startswith("-") for a in paths):
        print("usage: gitlab-ctl registry-garbage-collect [-m] [path/to/config.yml]", file=sys.stderr)
        return 1
    lines, code = control("status", "registry")
    if code == 1:
        print(lines[0] if lines and "runsvdir" in lines[0] else "Container registry is not enabled, exiting...")
        return 1
    config = paths[0] if paths else REGISTRY_CONFIG
    if not Path(config).exists():
        print(f"Didn't find {config}, please supply the path to registry config.yml file, eg: "
              "gitlab-ctl registry-garbage-collect /path/to/config.yml")  # fmt: skip
        return 1
    for line in control("stop", "registry")[0]:
        print(line)
    print(f"Running garbage-collect using configuration '{config}', this might take a while...\n", flush=True)
    argv = ["docker-registry", "garbage-collect", *(["--delete-untagged"] if untagged else []), config]
    done = subprocess.run(argv, check=False)  # its output is the command's, as omnibus shows it
    if done.returncode != 0:
        print("\nFailed to run garbage-collect command, starting registry service.")
    for line in control("start", "registry")[0]:
        print(line)
    return 0 if done.returncode == 0 else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["registry-garbage-collect"]:
        return registry_garbage_collect(argv[1:])
    if argv[:1] == ["upgrade-check"]:
        if len(argv) != 3:
            print("usage (stand-in): gitlab-ctl upgrade-check OLD_VERSION NEW_VERSION", file=sys.stderr)
            return 1
        refusal = upgrade_refusal(argv[1], argv[2])
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 1
        print(f"GitLab {argv[2]} may start on data of {argv[1]}")
        return 0
    if not argv or argv[0] not in COMMANDS or len(argv) > 2 or (argv[0] == "reconfigure" and len(argv) > 1):
        print(f"usage (stand-in): gitlab-ctl {'|'.join(COMMANDS[:4])} [SERVICE] | gitlab-ctl reconfigure | "
              "gitlab-ctl registry-garbage-collect [-m] [CONFIG]", file=sys.stderr)  # fmt: skip
        return 1
    lines, code = control(argv[0], argv[1] if len(argv) == 2 else None)
    for line in lines:
        print(line, file=sys.stderr if line.startswith("fail: runsvdir") else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
