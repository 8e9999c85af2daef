"""The Docker Engine HTTP API over ``ssh … docker system dial-stdio``, as pulumi-docker
reaches an ``ssh://`` host.

The docker provider (like the docker CLI, through its connection helper) runs::

    ssh <sshOpts> -o ConnectTimeout=30 -T -l <user> [-p <port>] -- <address> docker system dial-stdio

and speaks HTTP over that process's stdin/stdout; the remote ``docker`` CLI connects the
pipe to ``$DOCKER_HOST`` (the remote's default socket when unset). :class:`DockerClient`
does exactly that, with one ssh process per API call (``Connection: close``): the
provider's own ``sshOpts`` (so its host-key pinning is what is exercised) and the
caller's environment (``SSH_AUTH_SOCK`` of the applier's private agent).

The request (whose body may hold secrets: container env values, uploaded files) goes
only to ssh's stdin; the argv never holds anything but the provider's options and the
destination. ssh's stdin stays open until the response is read: ``dial-stdio``
half-closes the socket on stdin EOF, and dockerd (Go's net/http) cancels a request whose
client has hung up, which would abort a slow call such as a container stop.

Pure parsing (:func:`build_request`, :func:`read_response`) is separate from the
transport so tests can feed it fake pipes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = [
    "API_VERSION",
    "DockerApiError",
    "DockerClient",
    "DockerHost",
    "Response",
    "build_request",
    "read_response",
    "redact",
]

# Debian's dockerd 20.10 speaks API v1.41; pinning it (as the provider negotiates down
# to it) keeps request and response shapes those of that version.
API_VERSION = "v1.41"
CALL_TIMEOUT_S = 120.0
_MAX_HEADER_LINES = 200


class DockerApiError(RuntimeError):
    """An API call failed: no answer (ssh, transport) or an HTTP error from the daemon."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None

    def message(self) -> str:
        """The daemon's error message ({"message": ...}), else the body as text."""
        try:
            data = self.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
        return self.body.decode(errors="replace").strip() or self.reason


def build_request(
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> bytes:
    """One HTTP/1.1 request for the versioned API path, closing the connection after it."""
    target = f"/{API_VERSION}{path}"
    if query:
        pairs = {k: (("1" if v else "0") if isinstance(v, bool) else str(v)) for k, v in query.items()}
        target += "?" + urllib.parse.urlencode(pairs)
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: forgeway-lab-applier", "Connection: close"]
    if body is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def _line(stream: IO[bytes]) -> bytes:
    line = stream.readline(65536)
    if not line:
        raise DockerApiError("the connection closed before the response was complete")
    return line.rstrip(b"\r\n")


def _exactly(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise DockerApiError(f"the connection closed {left} bytes short of the response body")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _chunked(stream: IO[bytes]) -> bytes:
    """A chunked body (RFC 9112 §7.1): size lines (extensions ignored), then trailers."""
    parts: list[bytes] = []
    while True:
        size_line = _line(stream).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise DockerApiError(f"bad chunk size {size_line!r}") from exc
        if size == 0:
            while _line(stream):  # trailers, up to the empty line
                pass
            return b"".join(parts)
        parts.append(_exactly(stream, size))
        if _line(stream) != b"":
            raise DockerApiError("a chunk is not followed by CRLF")


def read_response(stream: IO[bytes], *, method: str = "GET") -> Response:
    """Parse one HTTP/1.x response: status line, headers, then a body framed by
    ``Transfer-Encoding: chunked``, ``Content-Length``, or the end of the stream.
    Interim 1xx responses are skipped; 204, 304 and HEAD responses have no body."""
    while True:
        status_line = _line(stream).decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise DockerApiError(f"not an HTTP response: {status_line[:200]!r}")
        status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = _line(stream).decode("latin-1")
            if not line:
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise DockerApiError(f"bad header line {line[:200]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise DockerApiError("too many header lines")
        if 100 <= status < 200:
            continue
        break
    if method == "HEAD" or status in (204, 304):
        return Response(status, reason, headers)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _chunked(stream)
    elif "content-length" in headers:
        body = _exactly(stream, int(headers["content-length"]))
    else:
        body = stream.read()
    return Response(status, reason, headers, body)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret value (longest first) replaced by ``[secret]``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    return text


@dataclass(frozen=True)
class DockerHost:
    """Where a ``pulumi:providers:docker`` points: its ``host`` URL and ``sshOpts``."""

    user: str | None
    address: str
    port: int | None
    ssh_opts: tuple[str, ...]

    @classmethod
    def from_provider(cls, inputs: Mapping[str, Any]) -> DockerHost:
        host = inputs.get("host")
        if not isinstance(host, str) or not host.startswith("ssh://"):
            raise ValueError(f"the lab reaches docker over ssh:// only, not host={host!r}")
        url = urllib.parse.urlsplit(host)
        if url.path not in ("", "/") or not url.hostname:
            raise ValueError(f"unsupported docker host URL {host!r}")
        opts = inputs.get("sshOpts") or []
        if isinstance(opts, str):  # provider config travels JSON-encoded
            opts = json.loads(opts)
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise ValueError("sshOpts must be a list of strings")
        return cls(url.username, url.hostname, url.port, tuple(opts))

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.address}"

    def argv(self) -> list[str]:
        """The docker connection helper's ssh command line (docker/cli connhelper)."""
        flags = list(self.ssh_opts)
        if not any(o.startswith("ConnectTimeout=") for o in flags):
            flags += ["-o", "ConnectTimeout=30"]
        flags.append("-T")  # no pseudo-terminal: a binary pipe
        dest = [*(["-l", self.user] if self.user else []), *(["-p", str(self.port)] if self.port else [])]
        return ["ssh", *flags, *dest, "--", self.address, "docker", "system", "dial-stdio"]


class DockerClient:
    """Docker Engine API calls to one host, each over its own ssh process."""

    def __init__(self, host: DockerHost, env: Mapping[str, str], timeout: float = CALL_TIMEOUT_S) -> None:
        self.host = host
        self.env = dict(env)
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        json_body: Any = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Response:
        body = raw_body if raw_body is not None else (None if json_body is None else json.dumps(json_body).encode())
        request = build_request(method, path, query=query, body=body, content_type=content_type)
        limit = timeout or self.timeout
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                self.host.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=self.env
            )
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                proc.kill()

            timer = threading.Timer(limit, expire)
            timer.start()
            try:
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    proc.stdin.write(request)
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass  # ssh ended early: its stderr says why
                try:
                    response: Response | None = read_response(proc.stdout, method=method)
                    problem = ""
                except DockerApiError as exc:
                    response, problem = None, str(exc)
            finally:
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.stdin.close()  # type: ignore[union-attr]
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                timer.cancel()
                proc.stdout.close()  # type: ignore[union-attr]
            if response is None:
                err.seek(0)
                stderr = err.read().decode(errors="replace").strip()[-2000:]
                why = f"no answer within {limit:.0f} s" if expired.is_set() else problem
                if "raw stream connection" in stderr:  # dial-stdio on the host found no daemon
                    why += " (is dockerd running there, and DOCKER_HOST right for the ssh session?)"
                raise DockerApiError(f"{why} (ssh exit {proc.returncode}): {stderr or 'no ssh output'}")
        return response
