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

Exit status: 0; ``status`` 3 when a service it names is down (the stand-in's choice: LSB's
"not running"); 1 for an unknown service or command. ``reconfigure`` makes
gitlab-secrets.json if it is missing and records the version; it changes no running service
(restart the container, or the service, for a changed secret to take effect).
"""

from __future__ import annotations

import json
import socket
import sys

CONTROL_SOCKET = "/run/gitlab-standin/control.sock"
COMMANDS = ("status", "stop", "start", "restart", "reconfigure")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS or len(argv) > 2 or (argv[0] == "reconfigure" and len(argv) > 1):
        print(f"usage (stand-in): gitlab-ctl {'|'.join(COMMANDS[:4])} [SERVICE] | gitlab-ctl reconfigure",
              file=sys.stderr)  # fmt: skip
        return 1
    request = {"command": argv[0], "service": argv[1] if len(argv) == 2 else None}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(60)
            connection.connect(CONTROL_SOCKET)
            connection.sendall(json.dumps(request).encode() + b"\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
    except OSError as err:
        print(f"fail: runsvdir is not running ({CONTROL_SOCKET}: {err})", file=sys.stderr)
        return 1
    lines = answer.decode().splitlines()
    code = int(lines[-1].removeprefix("exit ")) if lines and lines[-1].startswith("exit ") else 1
    for line in lines[:-1]:
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
