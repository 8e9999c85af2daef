"""A stand-in for GitLab on the lab's home device, until the real container lands.

Listens on the given TCP ports; each connection gets one line back,
``forgeway-standin <port> <client address> mss=<MSS>``, and the same line is appended to the
log, so tests see which address reached the home device. A client that then sends
``bulk N`` gets N bytes; one that sends ``sink N`` and N bytes gets ``received N``. Lab-only: plain TCP,
no TLS (issue 5 brings GitLab and its certificates).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from pathlib import Path


def serve(address: str, port: int, log: Path, lock: threading.Lock) -> None:
    server = socket.create_server((address, port), reuse_port=False)
    while True:
        conn, (peer, _) = server.accept()
        with conn:
            # The MSS this end got: the client's SYN, after any clamping on the way.
            mss = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            line = f"forgeway-standin {port} {peer} mss={mss}\n"
            conn.sendall(line.encode())
            with lock, log.open("a") as out:
                out.write(line)
            _maybe_bulk(conn)


def _maybe_bulk(conn: socket.socket) -> None:
    """``bulk N``: send the client N bytes; ``sink N``: take N bytes from it (throughput, PMTU)."""
    conn.settimeout(0.3)
    try:
        request = conn.recv(32).split(b"\n", 1)[0].decode(errors="replace").split()
    except (TimeoutError, OSError):
        return
    if len(request) >= 2 and request[0] == "sink" and request[1].isdigit():
        # Count what the client uploads (bytes after the request line), then say how much.
        conn.settimeout(30)
        expected, received = int(request[1]), 0
        while received < expected and (data := conn.recv(1 << 20)):
            received += len(data)
        conn.sendall(f"received {received}\n".encode())
        return
    if len(request) == 2 and request[0] == "bulk" and request[1].isdigit():
        remaining = min(int(request[1]), 1 << 30)
        chunk = b"\0" * 65536
        conn.settimeout(30)
        while remaining > 0:
            sent = conn.send(chunk[: min(remaining, len(chunk))])
            remaining -= sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    lock = threading.Lock()
    threads = [threading.Thread(target=serve, args=(args.address, p, args.log, lock), daemon=True) for p in args.ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
