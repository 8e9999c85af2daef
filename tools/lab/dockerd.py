"""Running a lab dockerd (tools/lab/docker.py): start, restart and stop it.

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
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tools.lab.docker import DOCKERD, SHUTDOWN_TIMEOUT, DaemonInfo, bridge_addresses, docker, storage_driver
from tools.lab.dockerd_processes import (
    SUPERVISED,
    alive,
    kill_and_wait,
    mount_namespace_pids,
    remove_tree,
    tail,
    write_wrapper,
)
from tools.lab.machine import Machine

__all__ = ["restart_dockerd", "start_dockerd", "stop_dockerd"]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0


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
    control, child = info.work / SUPERVISED["control"], info.work / SUPERVISED["child"]
    before = child.read_text() if child.exists() else ""
    log_from = info.log.stat().st_size if info.log.exists() else 0  # errors: this start's lines only
    deadline = time.monotonic() + _STOP_TIMEOUT
    while True:
        try:  # no reader (ENXIO): the supervisor is busy with another restart, or gone
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if time.monotonic() > deadline or not alive(info.supervisor_pid):
                raise RuntimeError(f"the supervisor of dockerd in {info.netns} does not listen on {control}") from exc
            time.sleep(0.1)
    try:
        os.write(fd, b"restart\n")
    finally:
        os.close(fd)
    deadline = time.monotonic() + _STOP_TIMEOUT + 10
    again = replace(info, pid=_child_pid(info, before, lambda: _supervisor_gone(info), deadline, log_from))
    (info.work / "daemon.json").write_text(json.dumps(again.to_json(), indent=2) + "\n")
    gone = lambda: None if alive(again.pid) else "exited"  # noqa: E731
    _wait_ready(again, gone, time.monotonic() + _READY_TIMEOUT, log_from)
    return again


def _supervisor_gone(info: DaemonInfo) -> str | None:
    return None if alive(info.supervisor_pid) else "lost its supervisor"


def _wait_ready(info: DaemonInfo, gone: Callable[[], str | None], deadline: float, log_from: int = 0) -> None:
    """Until the daemon answers on its socket; RuntimeError with the log's tail when
    ``gone()`` says why it never will, or at ``deadline``."""
    while True:
        if (why := gone()) is not None:
            raise RuntimeError(f"dockerd in {info.netns} {why}:\n{tail(info.log, start=log_from)}")
        if (
            info.socket.exists()
            and docker(info, "info", "--format", "{{.ID}}", timeout=10, check=False).returncode == 0
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"dockerd in {info.netns} did not answer in {_READY_TIMEOUT}s:\n{tail(info.log, start=log_from)}"
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
    wrapper = write_wrapper(work, etc_docker, supervise)
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
            Machine(netns, netns).argv(["sh", str(wrapper), *cmd]),
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
        if supervise is not None and not alive(info.pid):
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


def _child_pid(
    info: DaemonInfo, before: str, gone: Callable[[], str | None], deadline: float, log_from: int = 0
) -> int:
    """The PID the supervisor writes to the child file once it has started dockerd (again)."""
    child = info.work / SUPERVISED["child"]
    while not child.exists() or (text := child.read_text()) == before or not text.endswith("\n"):
        if (why := gone()) is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"dockerd in {info.netns} did not start ({why or 'timeout'}):\n{tail(info.log, start=log_from)}"
            )
        time.sleep(0.02)
    return int(text)


def stop_dockerd(info: DaemonInfo, *, remove: bool = True, kill_containers: bool = True) -> None:
    """Stop the daemon by PID, then whatever is left in its mount namespace; remove ``work``.

    SIGTERM lets dockerd stop its containers and its containerd (it waits up to their
    stop timeout); what is still alive after that (a shim, a proxy) shares dockerd's
    private mount namespace and is SIGKILLed. May be called twice.
    """
    pids = sorted(set(mount_namespace_pids(info.pid)) | set(mount_namespace_pids(info.supervisor_pid)))
    if alive(info.pid) and kill_containers:
        # dockerd gives each container its stop timeout (10 s by default) to exit on
        # SIGTERM, and a PID 1 without a handler never does: kill them first.
        running = docker(info, "ps", "-q", timeout=15, check=False).stdout.decode().split()
        if running:
            docker(info, "kill", *running, timeout=30, check=False)
    if alive(info.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # dockerd gone (or hung): end the rest of its mount namespace
    left = [p for p in pids if alive(p)]
    left = kill_and_wait(left, signal.SIGTERM, 2.0) if left else []
    left = kill_and_wait(left, signal.SIGKILL, 5.0) if left else []
    if left:
        raise RuntimeError(f"dockerd processes {left} of {info.netns} survived SIGKILL")
    if remove:
        remove_tree(info.work)
