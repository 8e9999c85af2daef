#!/usr/bin/python3
"""``/opt/gitlab/bin/gitlab-healthcheck`` of the lab image forgeway-lab/gitlab-standin.

Omnibus's is a curl wrapper (the program calls it with ``--fail --max-time 10``). This
one ignores its arguments and exits 0 only if GET https://127.0.0.1/-/health (the port
nginx listens on, from the wrapper's /run/gitlab-standin/health-url) answers 200 within
10 seconds; else it says why on stderr and exits 1. The certificate is not checked, as
``curl -k`` would not. Only modules of python3-minimal are used.
"""

from __future__ import annotations

import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

HEALTH_URL_FILE = Path("/run/gitlab-standin/health-url")
DEFAULT_URL = "https://127.0.0.1:443/-/health"
TIMEOUT = 10.0


def check(url: str) -> str | None:
    """None if ``url`` answers 200, else what went wrong."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: gitlab-healthcheck\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with (
            socket.create_connection((host, port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=host) as conn,
        ):
            conn.sendall(request)
            answer = b""
            while b"\r\n" not in answer and len(answer) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except (OSError, ssl.SSLError) as err:
        return f"{url}: {err}"
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    fields = status.split()
    if len(fields) < 2 or fields[1] != "200":
        return f"{url}: {status or 'no answer'}"
    return None


def main() -> int:
    try:
        url = HEALTH_URL_FILE.read_text().strip() or DEFAULT_URL
    except OSError:
        url = DEFAULT_URL
    problem = check(url)
    if problem is not None:
        print(f"gitlab-healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
