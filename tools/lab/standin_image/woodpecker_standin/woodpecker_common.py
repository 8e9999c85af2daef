"""What the Woodpecker stand-in's server and agent share: settings from env (``*_FILE`` too) and the agent wire.

The real server and agent talk gRPC on the server's port 9000. The stand-in speaks a simpler
protocol on the same port, with what matters kept: the agent's first message carries the
shared secret (``WOODPECKER_AGENT_SECRET``), its platform ``linux/<arch>``, backend, capacity
and labels; a wrong secret is refused and the connection closed. Then JSON lines: the agent
asks ``{"type": "next"}``, the server answers a job for it or ``{"type": "none"}`` after a
while; the agent reports ``{"type": "done", ...}``. Every message counts as the agent's contact.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

VERSION = "2.8.3"  # the Woodpecker the stand-in says it is
NEXT_WAIT = 5.0  # seconds the server holds a "next" before answering "none"


class Fatal(Exception):
    """A setting the process cannot start with; the message names it."""


def env_value(environ: dict[str, str], name: str, *, required: bool = False, default: str = "") -> str:
    """``NAME``, or the content of the file ``NAME_FILE`` names (trailing newline dropped), as Woodpecker reads them."""
    direct, path = environ.get(name, ""), environ.get(f"{name}_FILE", "")
    if direct and path:
        raise Fatal(f"{name} and {name}_FILE are both set: set one")
    if path:
        try:
            return Path(path).read_text().rstrip("\n")
        except OSError as err:
            raise Fatal(f"{name}_FILE={path}: cannot read it: {err.strerror}") from None
    if not direct and required:
        raise Fatal(f"{name} (or {name}_FILE) is required")
    return direct or default


def listen_address(value: str, name: str) -> tuple[str, int]:
    """Go's ``[host]:port`` (``:8000`` is every address)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Fatal(f"{name}={value!r}: expected [host]:port, e.g. :8000")
    return host.strip("[]"), int(port)


def parse_labels(text: str, name: str = "WOODPECKER_AGENT_LABELS") -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise Fatal(f"{name}: {item!r} is not key=value")
        labels[key] = value
    return labels


class Wire:
    """One JSON object per line over a TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict[str, Any] | None:
        line = self.reader.readline(1 << 24)
        if not line:
            return None
        loaded = json.loads(line)
        if not isinstance(loaded, dict):
            raise ValueError("expected a JSON object")
        return loaded

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def server_socket(host: str, port: int) -> socket.socket:
    """Listening on ``host`` (empty: every IPv4 and IPv6 address)."""
    family = socket.AF_INET6 if not host or ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host or "::", port))
    sock.listen(16)
    return sock


def env() -> dict[str, str]:
    return dict(os.environ)
