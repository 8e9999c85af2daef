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
* ``--storage-driver overlay2`` where the kernel mounts overlayfs on the file system
  of ``work`` (:func:`storage_driver` tries it once), else ``vfs`` (no overlayfs needed,
  but it copies the whole image, twice, for every container it creates: a ``docker
  run`` of the GitLab stand-in took 6 to 16 s with vfs and 0.5 to 1.4 s with overlay2
  here, most of it in the kernel).
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
* ``config_file=True`` (with ``etc_docker``): the daemon's settings may come from
  ``etc_docker/daemon.json`` (forgeway's docker-daemon-up.sh manages it), which dockerd
  reads at its default path /etc/docker/daemon.json through the bind mount. dockerd
  refuses a directive given both as a flag and in the file, so such a daemon is started
  without the flags the file may set: ``--default-address-pool`` (forgeway's
  ``default-address-pools``). No other flag of ours is among forgeway's keys
  (components/render/docker_daemon.py ``OWNED_KEYS``); ``--bip`` stays, so docker0 still
  gets the host's own subnet. Without the file such a daemon takes docker's default
  pools (172.17.0.0/16 and up): fine in an isolated namespace.
* :func:`restart_dockerd` (and ``python -m tools.lab.docker restart WORK``, what a lab
  host's ``FORGEWAY_DOCKER_RESTART`` runs) stops the daemon without killing its
  containers first and starts it again with the same settings, as ``systemctl restart
  docker`` would; the new PID goes to ``work/daemon.json``. A lab host's SSH session
  runs in sshd's own PID namespace (tests/lab/netns.py), which the kernel empties when
  sshd exits, and no process can move into an ancestor PID namespace (setns): a dockerd
  started from a session would die with sshd, and PIDs seen there are not the root
  namespace's. So a ``config_file`` daemon has a supervisor, as a service manager would:
  its wrapper stays (PID ``supervisor_pid``) with dockerd as its child, and a
  ``restart`` line written to the FIFO ``work/control`` makes it stop dockerd (SIGTERM,
  wait) and start it again; it writes the new dockerd's PID to ``work/dockerd.child``.
  Other daemons are restarted by stop and start (from the root PID namespace only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DOCKERD",
    "DaemonInfo",
    "bridge_addresses",
    "docker",
    "docker_env",
    "restart_dockerd",
    "start_dockerd",
    "stop_dockerd",
    "storage_driver",
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


_SUPERVISOR = """\
# Supervise dockerd (a service manager's part): "restart" on the control FIFO stops it and
# starts it again, in this mount and PID namespace; its PID goes to the child file.
"$@" &
child=$!
echo "$child" >{child}.new && mv -f {child}.new {child}
while :; do
  request=
  read -r request <{control} || true
  [ "$request" = restart ] || continue
  kill -TERM "$child" 2>/dev/null || true
  wait "$child" || true
  rm -f {pidfile}
  "$@" &
  child=$!
  echo "$child" >{child}.new && mv -f {child}.new {child}
done
"""


def _wrapper_script(etc_docker: Path | None = None, supervise: Path | None = None) -> str:
    """sh: mount the cgroups again under the fresh /sys of ``ip netns exec``, show dockerd
    ``etc_docker`` as its /etc/docker (certs.d is read from there only), exec dockerd (or,
    with ``supervise``, the daemon's work directory, run it as a restartable child)."""
    lines = ["set -e"]
    for source, target, fstype, options in _cgroup_mounts():
        lines.append(f"mkdir -p {shlex.quote(target)} 2>/dev/null || true")
        lines.append(f"mount -t {fstype} -o {shlex.quote(options)} {shlex.quote(source)} {shlex.quote(target)}")
    if etc_docker is not None:
        lines.append(f"mount --bind {shlex.quote(str(etc_docker))} /etc/docker")
    if supervise is None:
        lines.append('exec "$@"')
        return "\n".join(lines) + "\n"
    paths = {name: shlex.quote(str(supervise / file)) for name, file in _SUPERVISED.items()}
    return "\n".join(lines) + "\n" + _SUPERVISOR.format(**paths)


_SUPERVISED = {"control": "control", "child": "dockerd.child", "pidfile": "dockerd.pid"}


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
    config_file: bool = False,
) -> DaemonInfo:
    """Start dockerd in ``netns`` with all of its state under ``work``; wait until it answers.

    ``index`` (0..15) picks the bridge and address pool subnets (:func:`bridge_addresses`);
    give every docker host of one lab its own. ``etc_docker``: a directory bind-mounted
    over /etc/docker in dockerd's own mount namespace (a lab host's ``$FORGEWAY_ETC/docker``,
    where forgeway's scripts put ``certs.d``). ``config_file`` (needs ``etc_docker``): the
    daemon's settings may come from ``etc_docker/daemon.json``, so the flags that file may
    also set are left out (see the module's docstring). The daemon is detached (a session
    of its own) and outlives the caller; stop it with :func:`stop_dockerd`.
    """
    return _start(
        netns,
        work,
        index=index,
        extra_args=tuple(extra_args),
        etc_docker=etc_docker,
        config_file=config_file,
        remove_on_failure=True,
    )


def restart_dockerd(info: DaemonInfo) -> DaemonInfo:
    """Stop the daemon (its containers stop with it, as on ``systemctl restart docker``;
    ``work`` stays) and start it again with the settings it was started with; the new
    record goes to ``work/daemon.json``. When it does not come back (a daemon.json it
    rejects), the RuntimeError carries its log's tail and ``work`` is kept for the next try.

    A ``config_file`` daemon is restarted by its supervisor (works from any PID
    namespace); any other by stop and start, from the root PID namespace."""
    if info.supervisor_pid:
        return _supervised_restart(info)
    stop_dockerd(info, remove=False, kill_containers=False)
    pidfile = info.work / "dockerd.pid"
    if pidfile.exists():  # a daemon that was SIGKILLed, or never got going, leaves it: it is gone now
        pidfile.unlink()
    return _start(
        info.netns,
        info.work,
        index=info.index,
        extra_args=info.extra_args,
        etc_docker=info.etc_docker,
        config_file=info.config_file,
        remove_on_failure=False,
    )


def _supervised_restart(info: DaemonInfo) -> DaemonInfo:
    control, child = info.work / _SUPERVISED["control"], info.work / _SUPERVISED["child"]
    before = child.read_text() if child.exists() else ""
    log_from = info.log.stat().st_size if info.log.exists() else 0  # errors: this start's lines only
    deadline = time.monotonic() + _STOP_TIMEOUT
    while True:
        try:  # no reader (ENXIO): the supervisor is busy with another restart, or gone
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if time.monotonic() > deadline or not _alive(info.supervisor_pid):
                raise RuntimeError(f"the supervisor of dockerd in {info.netns} does not listen on {control}") from exc
            time.sleep(0.1)
    try:
        os.write(fd, b"restart\n")
    finally:
        os.close(fd)
    deadline = time.monotonic() + _STOP_TIMEOUT + 10
    again = replace(info, pid=_child_pid(info, before, lambda: _supervisor_gone(info), deadline, log_from))
    (info.work / "daemon.json").write_text(json.dumps(again.to_json(), indent=2) + "\n")
    gone = lambda: None if _alive(again.pid) else "exited"  # noqa: E731
    _wait_ready(again, gone, time.monotonic() + _READY_TIMEOUT, log_from)
    return again


def _supervisor_gone(info: DaemonInfo) -> str | None:
    return None if _alive(info.supervisor_pid) else "lost its supervisor"


def _wait_ready(info: DaemonInfo, gone: Callable[[], str | None], deadline: float, log_from: int = 0) -> None:
    """Until the daemon answers on its socket; RuntimeError with the log's tail when
    ``gone()`` says why it never will, or at ``deadline``."""
    while True:
        if (why := gone()) is not None:
            raise RuntimeError(f"dockerd in {info.netns} {why}:\n{_tail(info.log, start=log_from)}")
        if (
            info.socket.exists()
            and docker(info, "info", "--format", "{{.ID}}", timeout=10, check=False).returncode == 0
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"dockerd in {info.netns} did not answer in {_READY_TIMEOUT}s:\n{_tail(info.log, start=log_from)}"
            )
        time.sleep(0.1)


def _start(
    netns: str,
    work: Path,
    *,
    index: int,
    extra_args: tuple[str, ...],
    etc_docker: Path | None,
    config_file: bool,
    remove_on_failure: bool,
) -> DaemonInfo:
    if config_file and etc_docker is None:
        raise ValueError("config_file needs etc_docker: the daemon.json that dockerd reads is etc_docker/daemon.json")
    etc_docker = None if etc_docker is None else etc_docker.resolve()
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
    supervise = work if config_file else None
    wrapper = _write_wrapper(work, etc_docker, supervise)
    (work / "config").mkdir(exist_ok=True)
    cmd = [
        DOCKERD,
        "--data-root", str(work / "data"),
        "--exec-root", str(work / "exec"),
        "--pidfile", str(pidfile),
        "-H", f"unix://{socket}",
        "--storage-driver", storage_driver(work),
        "--iptables=true",
        "--ip-forward=true",
        "--bip", bip,
        # dockerd refuses a directive that is both a flag and in daemon.json
        *(() if config_file else ("--default-address-pool", f"base={pool},size=24")),
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
    info = DaemonInfo(
        netns=netns,
        work=work,
        socket=socket,
        pid=proc.pid,
        bip=bip,
        address_pool=pool,
        log=log,
        index=index,
        extra_args=extra_args,
        etc_docker=etc_docker,
        config_file=config_file,
        supervisor_pid=proc.pid if supervise is not None else 0,
    )
    (work / "daemon.json").write_text(json.dumps(info.to_json(), indent=2) + "\n")
    deadline = started + _READY_TIMEOUT

    def gone() -> str | None:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        if supervise is not None and not _alive(info.pid):
            return "exited"
        return None

    try:
        if supervise is not None:  # dockerd is the supervisor's child: its PID is in the child file
            info = replace(info, pid=_child_pid(info, "", gone, deadline))
            (work / "daemon.json").write_text(json.dumps(info.to_json(), indent=2) + "\n")
        _wait_ready(info, gone, deadline)
    except BaseException:
        stop_dockerd(info, remove=remove_on_failure)
        raise
    return info


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


def _write_wrapper(work: Path, etc_docker: Path | None, supervise: Path | None) -> Path:
    if etc_docker is not None:
        if not Path("/etc/docker").is_dir():
            raise RuntimeError("/etc/docker is missing (docker.io makes it): cannot bind a lab host's over it")
        etc_docker.mkdir(parents=True, exist_ok=True)
    if supervise is not None:
        for name in ("control", "child"):
            (supervise / _SUPERVISED[name]).unlink(missing_ok=True)
        os.mkfifo(supervise / _SUPERVISED["control"], 0o600)
    wrapper = work / "dockerd-wrapper.sh"
    wrapper.write_text(_wrapper_script(etc_docker, supervise))
    return wrapper


def _child_pid(
    info: DaemonInfo, before: str, gone: Callable[[], str | None], deadline: float, log_from: int = 0
) -> int:
    """The PID the supervisor writes to the child file once it has started dockerd (again)."""
    child = info.work / _SUPERVISED["child"]
    while not child.exists() or (text := child.read_text()) == before or not text.endswith("\n"):
        if (why := gone()) is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"dockerd in {info.netns} did not start ({why or 'timeout'}):\n{_tail(info.log, start=log_from)}"
            )
        time.sleep(0.02)
    return int(text)


def _tail(path: Path, lines: int = 30, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` (of what follows byte ``start``)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_dockerd(info: DaemonInfo, *, remove: bool = True, kill_containers: bool = True) -> None:
    """Stop the daemon by PID, then whatever is left in its mount namespace; remove ``work``.

    SIGTERM lets dockerd stop its containers and its containerd (it waits up to their
    stop timeout); what is still alive after that (a shim, a proxy) shares dockerd's
    private mount namespace and is SIGKILLed. May be called twice.
    """
    pids = sorted(set(_mount_namespace_pids(info.pid)) | set(_mount_namespace_pids(info.supervisor_pid)))
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
    """rm -rf, also of files a container made read-only (image layers keep their modes)."""
    if not path.exists():
        return
    leftover = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [m for m in leftover if m == str(path) or m.startswith(f"{path}/")]
    for mount in sorted(inside, reverse=True):  # not expected: dockerd's mounts are its own
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    # chattr +i files do not occur in our images; rmtree suffices as root.
    shutil.rmtree(path)


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
    try:
        restart_dockerd(info)
    except (RuntimeError, OSError) as exc:
        print(f"lab_docker restart: dockerd in {info.netns} ({work}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
