#!/usr/bin/python3
"""``woodpecker-agent`` of the Woodpecker stand-in (forgeway-lab/woodpecker-standin, command ``agent``).

Reads ``WOODPECKER_SERVER`` (host:port of the server's agent port), ``WOODPECKER_AGENT_SECRET``
(or ``_FILE``), ``WOODPECKER_BACKEND`` (docker; ``auto-detect`` finds the docker socket),
``WOODPECKER_HOSTNAME``, ``WOODPECKER_AGENT_LABELS`` (``k=v,...``), ``WOODPECKER_MAX_WORKFLOWS``,
``WOODPECKER_AGENT_CONFIG_FILE`` (default /etc/woodpecker/agent.conf: the id the server gave it,
kept so a restarted agent is the same agent) and ``DOCKER_HOST`` (unix sockets only).

Its platform is ``linux/<arch>`` of the image it runs from, as the real agent's is its binary's
GOARCH: the image's architecture, asked of the docker daemon for this container (the lab's
arm64 images are x86_64 files relabelled), else the machine's. A refused secret ends it with
``could not auth agent: ...`` and status 1 (docker's restart policy brings it back), as the
real agent; a server not (yet) reachable is retried.

A job runs as a container through the host's docker socket, as the docker backend runs a step:
``POST /containers/create`` (the job's image, ``/bin/sh -c <commands joined by newlines>``,
labels ``wp_uuid``/``wp_job``), ``start``, ``wait``, ``logs``, ``DELETE``; its exit code and
log go back to the server.
"""

from __future__ import annotations

import http.client
import json
import platform
import re
import socket
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from tools.lab.standin_image.woodpecker_standin.woodpecker_common import (
        VERSION,
        Fatal,
        Wire,
        env,
        env_value,
        parse_labels,
    )
else:  # beside this file, in the repository and in the image
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from woodpecker_common import VERSION, Fatal, Wire, env, env_value, parse_labels

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
RETRY = 2.0


class Docker:
    """The Docker Engine API over its unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.path = socket_path

    def call(self, method: str, path: str, body: object = None, timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.path)
        conn.sock = sock
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = conn.getresponse()
        out = response.status, response.read()
        conn.close()
        return out

    def json(self, method: str, path: str, body: object = None, timeout: float = 60) -> Any:
        status, data = self.call(method, path, body, timeout)
        if status >= 300:
            raise RuntimeError(f"docker {method} {path}: {status} {data[:300].decode(errors='replace')}")
        return json.loads(data) if data else None


def docker_socket(environ: dict[str, str]) -> str:
    host = environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise Fatal(f"DOCKER_HOST={host!r}: the stand-in talks to a unix socket only")
    path = host[len("unix://") :]
    if not Path(path).is_socket():
        raise Fatal(f"{path} is not a socket: bind-mount the host's docker socket (backend docker)")
    return path


def own_arch(docker: Docker) -> str:
    """The architecture of this container's image (docker), else of the machine."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        mounts = ""
    found = re.search(r"/containers/([0-9a-f]{64})/", mounts)
    if found:
        try:
            image = docker.json("GET", f"/containers/{found[1]}/json")["Image"]
            arch = str(docker.json("GET", f"/images/{image}/json")["Architecture"])
            if arch:
                return arch
        except (OSError, RuntimeError, KeyError, TypeError, ValueError):
            pass
    return _ARCH.get(platform.machine(), platform.machine())


def _demux(stream: bytes) -> str:
    """Docker's multiplexed log stream (8-byte headers) as text; a TTY's raw stream as is."""
    out, i = [], 0
    while i + 8 <= len(stream) and stream[i] in (0, 1, 2) and stream[i + 1 : i + 4] == b"\0\0\0":
        size = struct.unpack(">I", stream[i + 4 : i + 8])[0]
        out.append(stream[i + 8 : i + 8 + size])
        i += 8 + size
    return (b"".join(out) if out else stream).decode(errors="replace")


def run_job(docker: Docker, job: dict[str, Any]) -> tuple[int, str]:
    name = f"wp_{uuid.uuid4().hex[:20]}"
    body = {
        "Image": job["image"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["\n".join(["set -e", *job["commands"]])],
        "Labels": {"wp_uuid": name, "wp_job": str(job["id"])}, "HostConfig": {"AutoRemove": False},
    }  # fmt: skip
    try:
        created = docker.json("POST", f"/containers/create?name={quote(name)}", body)
    except RuntimeError as err:
        return 126, str(err)
    cid = created["Id"]
    try:
        docker.json("POST", f"/containers/{cid}/start")
        code = int(docker.json("POST", f"/containers/{cid}/wait", timeout=3600)["StatusCode"])
        status, logs = docker.call("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
        return code, _demux(logs) if status == 200 else ""
    finally:
        docker.call("DELETE", f"/containers/{cid}?force=1&v=1")


def _config_id(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("agent_id", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def main() -> int:  # noqa: PLR0915 (settings, then the connection loop)
    environ = env()
    try:
        server = env_value(environ, "WOODPECKER_SERVER", required=True)
        host, sep, port = server.rpartition(":")
        if not sep or not port.isdigit():
            raise Fatal(f"WOODPECKER_SERVER={server!r}: expected host:port (the server's agent port, 9000)")
        secret = env_value(environ, "WOODPECKER_AGENT_SECRET", required=True)
        backend = env_value(environ, "WOODPECKER_BACKEND", default="auto-detect")
        if backend not in ("docker", "auto-detect"):
            raise Fatal(f"WOODPECKER_BACKEND={backend!r}: the stand-in has the docker backend only")
        docker = Docker(docker_socket(environ))
        labels = parse_labels(
            env_value(environ, "WOODPECKER_AGENT_LABELS") or env_value(environ, "WOODPECKER_FILTER_LABELS")
        )  # the old name, still read
        capacity = int(env_value(environ, "WOODPECKER_MAX_WORKFLOWS", default="1"))
        hostname = env_value(environ, "WOODPECKER_HOSTNAME") or socket.gethostname()
        conf = Path(env_value(environ, "WOODPECKER_AGENT_CONFIG_FILE", default="/etc/woodpecker/agent.conf"))
    except (Fatal, ValueError) as err:
        print(f"woodpecker-agent: FATAL: {err}", flush=True)
        return 1
    arch = own_arch(docker)
    hello = {"type": "register", "secret": secret, "hostname": hostname, "platform": f"linux/{arch}",
             "backend": "docker", "capacity": capacity, "labels": labels, "version": VERSION}  # fmt: skip
    while True:
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except OSError as err:
            print(f"woodpecker-agent: cannot reach {server}: {err}; retrying", flush=True)
            time.sleep(RETRY)
            continue
        wire = Wire(sock)
        try:
            wire.send({**hello, "id": _config_id(conf)})
            answer = wire.receive()
            if answer is None or "error" in answer:
                reason = "connection closed" if answer is None else answer["error"]
                print(f"woodpecker-agent: could not auth agent: {reason}", flush=True)
                return 1
            agent_id = int(answer["id"])
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(json.dumps({"agent_id": agent_id}) + "\n")
            print(f"woodpecker-agent {VERSION} (stand-in): agent {agent_id} {hostname} linux/{arch} "
                  f"labels {json.dumps(labels, sort_keys=True)} connected to {server}", flush=True)  # fmt: skip
            while True:
                wire.send({"type": "next"})
                message = wire.receive()
                if message is None:
                    raise OSError("server closed the connection")
                if message.get("type") != "job":
                    continue
                print(f"woodpecker-agent: job {message['id']} started ({message['image']})", flush=True)
                code, log = run_job(docker, message)
                print(f"woodpecker-agent: job {message['id']} finished: exit {code}", flush=True)
                wire.send({"type": "done", "id": message["id"], "exit_code": code, "log": log})
                wire.receive()
        except (OSError, ValueError, KeyError) as err:
            print(f"woodpecker-agent: lost the server ({err}); reconnecting", flush=True)
            time.sleep(RETRY)
        finally:
            wire.close()


if __name__ == "__main__":
    sys.exit(main())
