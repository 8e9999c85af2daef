"""The runner stand-in's start checks (runner_standin.py): config.toml as gitlab-runner would
read it, the stack CA file, and the host's docker socket. Each failure is :class:`Fatal`,
one line that never holds the token. Only modules of python3-minimal and libpython3-stdlib
(tomllib) are used; installed beside runner-standin in the image (tools/lab/images.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import stat
import tomllib
from pathlib import Path
from typing import NamedTuple

CONFIG = Path("/etc/gitlab-runner/config.toml")
# gitlab-runner's Linux volume parser: absolute paths without ':' (it splits on them).
_VOLUME = re.compile(r"^(?:(?P<source>/[^:]*):)?(?P<destination>/[^:]*)(?::(?P<mode>ro|rw))?$")
DOCKER_SOCKET = Path("/var/run/docker.sock")
PING_TIMEOUT = 10.0  # seconds
REGISTRATION_PREFIX = "GR1348941"  # legacy registration tokens; gone in GitLab 17/18
TOKEN_PREFIX = "glrt-"  # noqa: S105 (the prefix of runner authentication tokens)
_TAGS_COMMENT = re.compile(r"^#.*\btags (?P<tags>[^;]*);", re.MULTILINE)
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n(?P<body>[A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----")


class Fatal(Exception):
    """What keeps the runner from starting; one line, never the token."""


class Ready(NamedTuple):
    name: str
    url: str
    tags: tuple[str, ...]

    def line(self) -> str:
        return f"runner-standin ready: {self.name} {self.url} tags-from-comment={','.join(self.tags) or '-'}"


# --------------------------------------------------------------------------- config.toml


def read_config(path: Path) -> tuple[str, dict[str, object]]:
    """config.toml's text and table, after the file checks (exists, regular, 0600, root)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise Fatal(f"{path} does not exist: the program uploads it into the config volume") from None
    except OSError as err:
        raise Fatal(f"{path} cannot be read: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Fatal(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        raise Fatal(f"{path} has mode {mode:04o}, not 0600: it holds the runner token")
    if st.st_uid != 0:
        raise Fatal(f"{path} is owned by uid {st.st_uid}, not root")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise Fatal(f"{path} cannot be read as UTF-8: {type(err).__name__}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message has a position, never the text
        raise Fatal(f"{path} is not valid TOML: {str(err).splitlines()[0]}") from None
    return text, data


def check_config(path: Path, text: str, data: dict[str, object]) -> Ready:
    """The runner settings the stand-in needs, checked as gitlab-runner would use them."""
    concurrent = data.get("concurrent")
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
        raise Fatal(f"{path}: concurrent must be an integer >= 1, not {concurrent!r}")
    runners = data.get("runners")
    if not isinstance(runners, list) or len(runners) != 1 or not isinstance(runners[0], dict):
        count = len(runners) if isinstance(runners, list) else 0
        raise Fatal(f"{path}: expected exactly one [[runners]] table, found {count}")
    runner: dict[str, object] = runners[0]
    executor = runner.get("executor")
    if executor != "docker":
        raise Fatal(f'{path}: runners[0].executor must be "docker", not {executor!r}')
    url = runner.get("url")
    if not isinstance(url, str) or not url.startswith("https://") or len(url) <= len("https://"):
        raise Fatal(f"{path}: runners[0].url must start with https://, not {url!r}")
    token = runner.get("token")
    if not isinstance(token, str) or not token:
        raise Fatal(f"{path}: runners[0].token is missing")
    if token.startswith(REGISTRATION_PREFIX):
        raise Fatal(
            f"{path}: runners[0].token is a registration token ({REGISTRATION_PREFIX}...), which GitLab no "
            f"longer accepts: create the runner in GitLab and use its runner authentication token ({TOKEN_PREFIX}...)"
        )
    if not token.startswith(TOKEN_PREFIX) or len(token) <= len(TOKEN_PREFIX):
        raise Fatal(f"{path}: runners[0].token is not a runner authentication token ({TOKEN_PREFIX}...)")
    check_docker(path, runner.get("docker"))
    ca_file = runner.get("tls-ca-file")
    if ca_file is not None:
        if not isinstance(ca_file, str) or not ca_file.startswith("/"):
            raise Fatal(f"{path}: runners[0].tls-ca-file must be an absolute path, not {ca_file!r}")
        check_ca(Path(ca_file))
    name = runner.get("name")
    match = _TAGS_COMMENT.search(text)
    tags = tuple(t.strip() for t in match.group("tags").split(",") if t.strip()) if match else ()
    return Ready(name=name if isinstance(name, str) and name else "-", url=url, tags=tags)


def check_docker(path: Path, docker: object) -> None:
    """``[runners.docker]``: a default image, and volumes the runner's parser takes."""
    if not isinstance(docker, dict):
        raise Fatal(f"{path}: runners[0] has no [runners.docker] table")
    image = docker.get("image")
    if not isinstance(image, str) or not image.strip():
        raise Fatal(f"{path}: runners.docker.image must name the default job image, not {image!r}")
    volumes = docker.get("volumes", [])
    if not isinstance(volumes, list):
        raise Fatal(f"{path}: runners.docker.volumes must be a list, not {volumes!r}")
    for volume in volumes:
        if not isinstance(volume, str) or not _VOLUME.fullmatch(volume):
            raise Fatal(f"{path}: runners.docker.volumes: {volume!r} is not [SOURCE:]DESTINATION[:ro|rw]")


def check_ca(path: Path) -> None:
    """``path`` holds at least one PEM certificate (base64 of a DER SEQUENCE)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise Fatal(f"tls-ca-file {path} does not exist: the program uploads the stack CA there") from None
    except OSError as err:
        raise Fatal(f"tls-ca-file {path} cannot be read: {err.strerror}") from None
    match = _PEM.search(raw)
    if match is None:
        raise Fatal(f"tls-ca-file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        der = base64.b64decode(re.sub(rb"\s", b"", match.group("body")), validate=True)
    except binascii.Error:
        raise Fatal(f"tls-ca-file {path}: the PEM certificate is not valid base64") from None
    if len(der) < 64 or der[0] != 0x30:
        raise Fatal(f"tls-ca-file {path}: the PEM block is not a DER certificate")


# --------------------------------------------------------------------------- docker socket


def ping_docker(path: Path, timeout: float = PING_TIMEOUT) -> None:
    """``GET /_ping`` over the unix socket must answer 200 with the body ``OK``."""
    if not path.exists():
        raise Fatal(f"{path} is missing: bind-mount the host's docker socket there")
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise Fatal(f"{path} is not a socket: bind-mount the host's docker socket there")
    request = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: runner-standin\r\nConnection: close\r\n\r\n"
    answer = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(request)
            while len(answer) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as err:
        raise Fatal(f"{path}: GET /_ping failed: {err.strerror or err}") from None
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(None, 2)
    if len(fields) < 2 or fields[1] != "200":
        raise Fatal(f"{path}: GET /_ping answered {lines[0]!r}, not 200")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    if body.strip() != b"OK":
        raise Fatal(f"{path}: GET /_ping answered {body[:40]!r}, not OK")


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
