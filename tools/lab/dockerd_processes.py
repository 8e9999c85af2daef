"""A lab dockerd's wrapper and processes (tools/lab/dockerd.py runs it): the shell wrapper
that mounts the cgroups again and may supervise dockerd, and what finds, signals and
waits for the processes of its mount namespace."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["SUPERVISED", "alive", "kill_and_wait", "mount_namespace_pids", "remove_tree", "tail", "write_wrapper"]


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
    paths = {name: shlex.quote(str(supervise / file)) for name, file in SUPERVISED.items()}
    return "\n".join(lines) + "\n" + _SUPERVISOR.format(**paths)


SUPERVISED = {"control": "control", "child": "dockerd.child", "pidfile": "dockerd.pid"}


def write_wrapper(work: Path, etc_docker: Path | None, supervise: Path | None) -> Path:
    if etc_docker is not None:
        if not Path("/etc/docker").is_dir():
            raise RuntimeError("/etc/docker is missing (docker.io makes it): cannot bind a lab host's over it")
        etc_docker.mkdir(parents=True, exist_ok=True)
    if supervise is not None:
        for name in ("control", "child"):
            (supervise / SUPERVISED[name]).unlink(missing_ok=True)
        os.mkfifo(supervise / SUPERVISED["control"], 0o600)
    wrapper = work / "dockerd-wrapper.sh"
    wrapper.write_text(_wrapper_script(etc_docker, supervise))
    return wrapper


def mount_namespace_pids(pid: int) -> list[int]:
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


def kill_and_wait(pids: list[int], sig: int, wait: float) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def alive(pid: int) -> bool:
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


def tail(path: Path, lines: int = 30, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` (of what follows byte ``start``)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_tree(path: Path) -> None:
    """rm -rf, also of files a container made read-only (image layers keep their modes)."""
    if not path.exists():
        return
    leftover = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [m for m in leftover if m == str(path) or m.startswith(f"{path}/")]
    for mount in sorted(inside, reverse=True):  # not expected: dockerd's mounts are its own
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    # chattr +i files do not occur in our images; rmtree suffices as root.
    shutil.rmtree(path)
