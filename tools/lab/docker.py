"""A real docker daemon on a lab host: ``dockerd`` (Debian's docker.io, 20.10) in a netns.

This module is the daemon as its clients see it: its record (:class:`DaemonInfo`), its
subnets, and the docker client against it. Running it (start, restart, stop) is
tools/lab/dockerd.py; its wrapper and processes are tools/lab/dockerd_processes.py.

Lab hosts are network namespaces sharing this machine's filesystem, so each daemon
keeps everything it has under its own ``work`` directory: ``--data-root``,
``--exec-root`` (its managed containerd's state and socket too), ``--pidfile``, its
API socket ``work/docker.sock`` and its log ``work/dockerd.log``. Clients reach it with
``DOCKER_HOST=unix://work/docker.sock`` (:func:`docker_env`), from any namespace: the
socket is a file. Either client works (Debian's 20.10, or /usr/local/bin/docker 28.x
by API version negotiation).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DOCKERD",
    "DaemonInfo",
    "bridge_addresses",
    "docker",
    "docker_client",
    "docker_env",
    "storage_driver",
]

DOCKERD = "/usr/sbin/dockerd"
# The client: the newer CLI if there is one (it negotiates down to dockerd 20.10's API).
DOCKER_CLIENTS = ("/usr/local/bin/docker", "/usr/bin/docker")
SHUTDOWN_TIMEOUT = 3  # containers get this long to stop when dockerd stops (default 15)
MAX_INDEX = 16  # 172.31.0.0/16 in /20s


@dataclass(frozen=True)
class DaemonInfo:
    netns: str
    work: Path  # everything of this daemon is under here
    socket: Path
    pid: int  # dockerd's PID (the wrapper execs it: also the Popen PID)
    bip: str  # docker0's address, e.g. 172.30.3.1/24
    address_pool: str  # e.g. 172.31.48.0/20 (not given to a config_file daemon)
    log: Path
    # What start_dockerd was given, so restart_dockerd can start it again the same way.
    index: int = 0
    extra_args: tuple[str, ...] = ()
    etc_docker: Path | None = None
    config_file: bool = False
    supervisor_pid: int = 0  # a config_file daemon's wrapper, dockerd's parent (0: none)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def to_json(self) -> dict[str, Any]:
        out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        out["extra_args"] = list(self.extra_args)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DaemonInfo:
        """Also reads records written before index/extra_args/etc_docker/config_file were
        kept: the index comes back from the bridge address, the rest from the defaults."""
        etc_docker = data.get("etc_docker")
        return cls(
            netns=data["netns"],
            work=Path(data["work"]),
            socket=Path(data["socket"]),
            pid=int(data["pid"]),
            bip=data["bip"],
            address_pool=data["address_pool"],
            log=Path(data["log"]),
            index=int(data["index"]) if "index" in data else int(data["bip"].split(".")[2]),
            extra_args=tuple(data.get("extra_args", ())),
            etc_docker=None if etc_docker is None else Path(etc_docker),
            config_file=bool(data.get("config_file", False)),
            supervisor_pid=int(data.get("supervisor_pid", 0)),
        )


def bridge_addresses(index: int) -> tuple[str, str]:
    """(``--bip``, default address pool base) of lab docker host number ``index``."""
    if not 0 <= index < MAX_INDEX:
        raise ValueError(f"docker host index {index} is not in 0..{MAX_INDEX - 1}")
    return f"172.30.{index}.1/24", f"172.31.{16 * index}.0/20"


def docker_client() -> str:
    for client in DOCKER_CLIENTS:
        if Path(client).is_file():
            return client
    raise RuntimeError(f"no docker client ({' or '.join(DOCKER_CLIENTS)}): apt-get install -y docker.io")


def docker_env(info: DaemonInfo) -> dict[str, str]:
    """The environment variables that point a docker client at this daemon."""
    return {"DOCKER_HOST": info.host}


def docker(
    info: DaemonInfo, *args: str, timeout: float = 120.0, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run the docker client against the daemon (from the root namespace: it is a socket)."""
    cmd = [docker_client(), *args]
    done = subprocess.run(
        cmd,
        env={**os.environ, **docker_env(info)},
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"`DOCKER_HOST={info.host} {shlex.join(cmd)}` failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done


def storage_driver(work: Path) -> str:
    """``overlay2`` when an overlay mount works on ``work``'s file system, else ``vfs``.

    Tried as dockerd would use it: an overlay of two directories under ``work``, mounted
    in a throwaway mount namespace (``unshare -m``: nothing shows outside, and nothing
    is left when it exits). Remembered per file system."""
    device = work.stat().st_dev
    if device not in _STORAGE_DRIVERS:
        _STORAGE_DRIVERS[device] = "overlay2" if _overlay_mounts_in(work) else "vfs"
    return _STORAGE_DRIVERS[device]


_STORAGE_DRIVERS: dict[int, str] = {}  # st_dev -> driver


def _overlay_mounts_in(work: Path) -> bool:
    probe = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=work))
    try:
        for part in ("lower", "upper", "work", "merged"):
            (probe / part).mkdir()
        options = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
        done = subprocess.run(
            ["unshare", "-m", "mount", "-t", "overlay", "overlay", "-o", options, str(probe / "merged")],
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return done.returncode == 0


_USAGE = "usage: python -m tools.lab.docker restart WORK_DIR"


def main(argv: list[str]) -> int:
    """``restart WORK_DIR``: :func:`restart_dockerd` of the daemon recorded in
    ``WORK_DIR/daemon.json``; silent on success, the error (with dockerd's log tail) on
    stderr and status 1 otherwise. From a lab host's SSH session (its own PID namespace)
    only a ``config_file`` daemon can be restarted: its supervisor does it."""
    if len(argv) != 2 or argv[0] != "restart":
        print(_USAGE, file=sys.stderr)
        return 2
    work = Path(argv[1])
    record = work / "daemon.json"
    try:
        info = DaemonInfo.from_json(json.loads(record.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"lab_docker restart: no daemon record in {record} ({exc})", file=sys.stderr)
        return 1
    from tools.lab.dockerd import restart_dockerd

    try:
        restart_dockerd(info)
    except (RuntimeError, OSError) as exc:
        print(f"lab_docker restart: dockerd in {info.netns} ({work}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
