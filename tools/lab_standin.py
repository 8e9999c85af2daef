"""A stand-in for GitLab on the lab's home device, until the real container lands.

Serves, each on its home port: ``http`` (a one-page HTTP server), ``https`` (the same
behind TLS with a certificate the lab made) and ``raw`` (one line, then optional bulk
data). Every answer, and a line in the log, is ``forgeway-standin <port> <client
address> mss=<MSS>``: tests see which address reached the home device and the MSS its
SYN arrived with. On a ``raw`` port a client may then send ``bulk N`` (it gets N bytes)
or ``sink N`` and N bytes (it gets ``received N``). GitLab's SSH port is a second sshd
that tools/lab.py starts. Lab-only.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import threading
from pathlib import Path


def _greeting(conn: socket.socket, port: int, peer: str, log: Path, lock: threading.Lock) -> str:
    # The MSS this end got: the client's SYN, after any clamping on the way.
    mss = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    line = f"forgeway-standin {port} {peer} mss={mss}"
    with lock, log.open("a") as out:
        out.write(line + "\n")
    return line


def _http(conn: socket.socket | ssl.SSLSocket, line: str) -> None:
    conn.settimeout(5)
    request = b""
    while b"\r\n\r\n" not in request and len(request) < 8192:
        data = conn.recv(1024)
        if not data:
            return
        request += data
    body = (line + "\n").encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    conn.sendall(head.encode() + body)


def _raw(conn: socket.socket, line: str) -> None:
    conn.sendall((line + "\n").encode())
    conn.settimeout(0.3)
    try:
        request = conn.recv(32).split(b"\n", 1)[0].decode(errors="replace").split()
    except (TimeoutError, OSError):
        return
    conn.settimeout(30)
    if len(request) >= 2 and request[0] == "sink" and request[1].isdigit():
        expected, received = int(request[1]), 0
        while received < expected and (data := conn.recv(1 << 20)):
            received += len(data)
        conn.sendall(f"received {received}\n".encode())
    elif len(request) == 2 and request[0] == "bulk" and request[1].isdigit():
        remaining = min(int(request[1]), 1 << 30)
        chunk = b"\0" * 65536
        while remaining > 0:
            remaining -= conn.send(chunk[: min(remaining, len(chunk))])


def serve(kind: str, port: int, log: Path, tls: ssl.SSLContext | None, lock: threading.Lock) -> None:
    server = socket.create_server(("0.0.0.0", port))  # noqa: S104 (inside the home netns; wg0 comes later)
    while True:
        conn, (peer, _) = server.accept()
        try:
            line = _greeting(conn, port, peer, log, lock)
            if kind == "raw":
                _raw(conn, line)
            elif kind == "https" and tls is not None:
                with tls.wrap_socket(conn, server_side=True) as wrapped:
                    _http(wrapped, line)
            else:
                _http(conn, line)
        except (OSError, ssl.SSLError):
            pass  # one client's broken connection is not the server's problem
        finally:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--cert", type=Path, help="PEM certificate chain for https ports")
    parser.add_argument("--key", type=Path, help="PEM private key for https ports")
    parser.add_argument("listen", nargs="+", help="KIND:PORT, KIND one of http, https, raw")
    args = parser.parse_args()
    tls = None
    if args.cert and args.key:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
    lock = threading.Lock()
    threads = []
    for spec in args.listen:
        kind, port = spec.split(":")
        threads.append(threading.Thread(target=serve, args=(kind, int(port), args.log, tls, lock), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
