"""A real docker daemon on a lab host: ``dockerd`` (Debian's docker.io, 20.10) in a netns.

Lab hosts are network namespaces sharing this machine's filesystem, so each daemon
keeps everything it has under its own ``work`` directory: ``--data-root``,
``--exec-root`` (its managed containerd's state and socket too), ``--pidfile``, its
API socket ``work/docker.sock`` and its log ``work/dockerd.log``. Clients reach it with
``DOCKER_HOST=unix://work/docker.sock`` (:func:`docker_env`), from any namespace: the
socket is a file. Either client works (Debian's 20.10, or /usr/local/bin/docker 28.x
by API version negotiation).

How it runs:

* ``ip netns exec <netns>``, which gives dockerd a mount namespace of its own (a slave
  of the root one) with a fresh ``/sys`` of the network namespace. That fresh ``/sys``
  hides the cgroup hierarchies (dockerd: "Devices cgroup isn't mounted"), so a small
  wrapper mounts the machine's cgroup hierarchies again, as the root namespace has them
  (v1, hybrid or v2), before it execs dockerd. Everything dockerd and its containers
  mount (container netns bind mounts, rootfs mounts of runc) stays in that mount
  namespace, which the kernel drops with its last process: nothing shows in the root
  namespace's /proc/mounts, and nothing outlives the daemon even if it is SIGKILLed.
* ``--storage-driver vfs``: no overlayfs needed (plain copies: slow-ish and
  disk-hungry, fine for the lab's few small images).
* ``--iptables`` stays on: docker's NAT/filter rules (DOCKER, DOCKER-USER chains, the
  masquerade of the bridge subnet, DNAT of published ports) go into the namespace's own
  netfilter, as on a real host, and leave with the namespace. The host's forwarding
  sysctl is set by dockerd inside the namespace only.
* The default bridge ``docker0`` (per namespace, so the name does not collide) gets
  ``--bip 172.30.<index>.1/24``, and user-defined networks (compose) come from
  ``--default-address-pool base=172.31.<16*index>.0/20,size=24``: nothing overlaps
  the lab's 10.8.0.0/24, 198.51.100.0/24, 203.0.113.0/24 or 100.64.0.0/24, and no two
  hosts (of different index) route the same container subnet.
* ``start_new_session``: the daemon outlives the caller (``make lab``);
  :func:`stop_dockerd` stops it by PID (SIGTERM: it stops its containers and its
  containerd; then SIGKILL of whatever is left of the namespace's mount namespace)
  and removes ``work``'s daemon state.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DOCKERD",
    "DaemonInfo",
    "bridge_addresses",
    "docker",
    "docker_env",
    "start_dockerd",
    "stop_dockerd",
]

DOCKERD = "/usr/sbin/dockerd"
# The client: the newer CLI if there is one (it negotiates down to dockerd 20.10's API).
DOCKER_CLIENTS = ("/usr/local/bin/docker", "/usr/bin/docker")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 3  # containers get this long to stop when dockerd stops (default 15)
MAX_INDEX = 16  # 172.31.0.0/16 in /20s


@dataclass(frozen=True)
class DaemonInfo:
    netns: str
    work: Path  # everything of this daemon is under here
    socket: Path
    pid: int  # dockerd's PID (the wrapper execs it: also the Popen PID)
    bip: str  # docker0's address, e.g. 172.30.3.1/24
    address_pool: str  # e.g. 172.31.48.0/20
    log: Path

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DaemonInfo:
        return cls(
            netns=data["netns"],
            work=Path(data["work"]),
            socket=Path(data["socket"]),
            pid=int(data["pid"]),
            bip=data["bip"],
            address_pool=data["address_pool"],
            log=Path(data["log"]),
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


def _cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """(source, mountpoint, fstype, options) of the cgroup file systems here, in order."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, fstype, options = line.split()[:4]
        under = target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/")
        if under and fstype in ("cgroup", "cgroup2", "tmpfs"):
            mounts.append((source, target.replace("\\040", " "), fstype, options))
    if not any(fstype.startswith("cgroup") for _, _, fstype, _ in mounts):
        raise RuntimeError("no cgroup file system is mounted under /sys/fs/cgroup: dockerd cannot run")
    return mounts


def _wrapper_script(etc_docker: Path | None = None) -> str:
    """sh: mount the cgroups again under the fresh /sys of ``ip netns exec``, show dockerd
    ``etc_docker`` as its /etc/docker (certs.d is read from there only), exec dockerd."""
    lines = ["set -e"]
    for source, target, fstype, options in _cgroup_mounts():
        lines.append(f"mkdir -p {shlex.quote(target)} 2>/dev/null || true")
        lines.append(f"mount -t {fstype} -o {shlex.quote(options)} {shlex.quote(source)} {shlex.quote(target)}")
    if etc_docker is not None:
        lines.append(f"mount --bind {shlex.quote(str(etc_docker))} /etc/docker")
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def _mount_namespace_pids(pid: int) -> list[int]:
    """PIDs sharing the mount namespace of ``pid`` (dockerd's: containerd, shims, proxies)."""
    try:
        mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return []
    if mnt == os.readlink("/proc/self/ns/mnt"):
        return []  # never the root namespace's processes
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == mnt:
                    pids.append(int(entry.name))
    return pids


def _kill_and_wait(pids: list[int], sig: int, wait: float) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while (pids := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if state[state.rindex(")") + 2] != "Z":
        return True
    # A zombie leader may still have threads running (dockerd is multi-threaded): it is
    # gone when waitpid reaps it (our child) or, someone else's, when no thread is left.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        try:
            return len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
        except OSError:
            return False


def start_dockerd(
    netns: str,
    work: Path,
    *,
    index: int = 0,
    extra_args: tuple[str, ...] = (),
    etc_docker: Path | None = None,
) -> DaemonInfo:
    """Start dockerd in ``netns`` with all of its state under ``work``; wait until it answers.

    ``index`` (0..15) picks the bridge and address pool subnets (:func:`bridge_addresses`);
    give every docker host of one lab its own. ``etc_docker``: a directory bind-mounted
    over /etc/docker in dockerd's own mount namespace (a lab host's ``$FORGEWAY_ETC/docker``,
    where forgeway's scripts put ``certs.d``). The daemon is detached (a session of its
    own) and outlives the caller; stop it with :func:`stop_dockerd`.
    """
    if not Path(DOCKERD).is_file():
        raise RuntimeError(f"{DOCKERD} is missing: apt-get install -y docker.io")
    if not Path("/run/netns", netns).exists():
        raise RuntimeError(f"no network namespace {netns}")
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    socket = work / "docker.sock"
    if len(str(socket)) > 100:  # sun_path is 108 bytes
        raise RuntimeError(f"{socket} is too long for a unix socket path: use a shorter work directory")
    pidfile, log = work / "dockerd.pid", work / "dockerd.log"
    if pidfile.exists():
        raise RuntimeError(f"{pidfile} exists: a dockerd runs (or ran) in {work}; stop it first")
    bip, pool = bridge_addresses(index)
    wrapper = work / "dockerd-wrapper.sh"
    if etc_docker is not None:
        if not Path("/etc/docker").is_dir():
            raise RuntimeError("/etc/docker is missing (docker.io makes it): cannot bind a lab host's over it")
        etc_docker.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(_wrapper_script(etc_docker))
    (work / "config").mkdir(exist_ok=True)
    cmd = [
        DOCKERD,
        "--data-root", str(work / "data"),
        "--exec-root", str(work / "exec"),
        "--pidfile", str(pidfile),
        "-H", f"unix://{socket}",
        "--storage-driver", "vfs",
        "--iptables=true",
        "--ip-forward=true",
        "--bip", bip,
        "--default-address-pool", f"base={pool},size=24",
        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
        "--log-level", "warn",
        *extra_args,
    ]  # fmt: skip
    env = {
        "PATH": _PATH,  # docker-proxy, docker-init, containerd, runc, iptables
        "HOME": str(work),
        "DOCKER_CONFIG": str(work / "config"),
        "XDG_RUNTIME_DIR": str(work / "exec"),
        "TMPDIR": str(work / "tmp"),
    }
    (work / "tmp").mkdir(exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "sh", str(wrapper), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,
        )
    info = DaemonInfo(netns=netns, work=work, socket=socket, pid=proc.pid, bip=bip, address_pool=pool, log=log)
    (work / "daemon.json").write_text(json.dumps(info.to_json(), indent=2) + "\n")
    deadline = started + _READY_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd in {netns} exited with status {proc.returncode}:\n{_tail(log)}")
            if socket.exists() and docker(info, "info", "--format", "{{.ID}}", timeout=10, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd in {netns} did not answer in {_READY_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.1)
    except BaseException:
        stop_dockerd(info)
        raise
    return info


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_dockerd(info: DaemonInfo, *, remove: bool = True, kill_containers: bool = True) -> None:
    """Stop the daemon by PID, then whatever is left in its mount namespace; remove ``work``.

    SIGTERM lets dockerd stop its containers and its containerd (it waits up to their
    stop timeout); what is still alive after that (a shim, a proxy) shares dockerd's
    private mount namespace and is SIGKILLed. May be called twice.
    """
    pids = _mount_namespace_pids(info.pid)
    if _alive(info.pid) and kill_containers:
        # dockerd gives each container its stop timeout (10 s by default) to exit on
        # SIGTERM, and a PID 1 without a handler never does: kill them first.
        running = docker(info, "ps", "-q", timeout=15, check=False).stdout.decode().split()
        if running:
            docker(info, "kill", *running, timeout=30, check=False)
    if _alive(info.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # dockerd gone (or hung): end the rest of its mount namespace
    left = [p for p in pids if _alive(p)]
    left = _kill_and_wait(left, signal.SIGTERM, 2.0) if left else []
    left = _kill_and_wait(left, signal.SIGKILL, 5.0) if left else []
    if left:
        raise RuntimeError(f"dockerd processes {left} of {info.netns} survived SIGKILL")
    if remove:
        _remove_tree(info.work)


def _remove_tree(path: Path) -> None:
    """rm -rf, also of files a container made read-only (vfs layers keep their modes)."""
    if not path.exists():
        return
    leftover = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [m for m in leftover if m == str(path) or m.startswith(f"{path}/")]
    for mount in sorted(inside, reverse=True):  # not expected: dockerd's mounts are its own
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    # chattr +i files do not occur in our images; rmtree suffices as root.
    shutil.rmtree(path)
