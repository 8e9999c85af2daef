"""Move N bytes to or from the lab's GitLab stand-in and print the time (run in a netns).

``python3 tools/lab_fetch.py get|put HOST PORT BYTES`` prints ``<bytes> <seconds>``;
exits 1 if fewer bytes than asked for arrived.
"""

from __future__ import annotations

import socket
import sys
import time

REQUEST_SIZE = 32  # the stand-in reads the request as one 32-byte chunk


def main() -> int:
    mode, host, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with socket.create_connection((host, port), timeout=20) as conn:
        conn.recv(200)  # the stand-in's greeting line
        verb = "bulk" if mode == "get" else "sink"
        conn.sendall(f"{verb} {size}\n".encode().ljust(REQUEST_SIZE))
        started, moved = time.perf_counter(), 0
        if mode == "get":
            while moved < size and (data := conn.recv(1 << 20)):
                moved += len(data)
        else:
            chunk = b"\0" * 65536
            while moved < size:
                moved += conn.send(chunk[: min(size - moved, len(chunk))])
            answer = conn.recv(100).decode().split()
            moved = int(answer[1]) if len(answer) == 2 and answer[0] == "received" else 0
        elapsed = time.perf_counter() - started
    print(moved, f"{elapsed:.6f}")
    return 0 if moved == size else 1


if __name__ == "__main__":
    sys.exit(main())
