"""Lab hosts that boot: systemd as PID 1 in ``systemd-nspawn``, inside the host's namespace.

A host's root file system (packages, users, sshd, docker.service) is tools/lab/rootfs.py's.

A supervisor per host (``python -m tools.lab.nspawn supervise``, detached, its PID in
topology.json) runs ``systemd-nspawn --boot`` in the host's network namespace. When the
container exits because its systemd rebooted (exit status 133), the supervisor does to
the namespace what a reboot does to a kernel's runtime state (:func:`reset_namespace`:
links but lo and eth0, the nft ruleset, ``ip rule``, routes, sysctls, conntrack; and
:func:`forget_binfmt`: the binfmt_misc handlers the host registered), puts
back the base address and routes (what the host's network configuration does at boot)
and boots the host again. Any other exit ends the supervisor; SIGTERM to the supervisor
powers the host off (nspawn turns SIGTERM into an orderly shutdown) and ends it.

Nothing here is registered with a host systemd (this machine's PID 1 is not systemd:
``--register=no --keep-unit``); ``nsenter -t <container PID 1> -a`` reaches inside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from tools.lab.machine import Machine

# systemd's exit status for "the container rebooted" (systemd-nspawn(1)).
REBOOTED = 133


# --- the supervisor -------------------------------------------------------------------


def net_sysctls(netns: str) -> dict[str, str]:
    """The namespace's own sysctls (net.*: the rest are the machine's, not the namespace's)."""
    found = {}
    for line in Machine(netns, netns).execute(["sysctl", "-a", "--ignore"]).stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("net."):
            found[key] = value
    return found


def reset_namespace(netns: str, base: list[list[str]], sysctls: dict[str, str]) -> None:
    """What a reboot does to a kernel's runtime state, in the host's namespace, then the
    base network (``base``: `ip` argument lists) as the host's network config sets it at boot."""
    host = Machine(netns, netns)
    for line in host.execute(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name not in ("lo", "eth0"):
            host.execute(["ip", "link", "delete", name])
    host.execute(["nft", "flush", "ruleset"])
    for family in ("-4", "-6"):
        host.execute(["ip", family, "rule", "flush"])  # all but the local table's rule
        host.execute(["ip", family, "rule", "add", "pref", "32766", "lookup", "main"])
        if family == "-4":
            host.execute(["ip", family, "rule", "add", "pref", "32767", "lookup", "default"])
        for line in host.execute(["ip", family, "route", "show", "table", "all"]).stdout.splitlines():
            words = line.split()
            table = words[words.index("table") + 1] if "table" in words else "main"
            if table not in ("local", "main"):
                host.execute(["ip", family, "route", "flush", "table", table])
        host.execute(["ip", family, "route", "flush", "table", "main"])
        host.execute(["ip", family, "addr", "flush", "dev", "eth0"])
    host.execute(["ip", "link", "set", "eth0", "down"])
    now = net_sysctls(netns)
    changed = [f"{key}={value}" for key, value in sysctls.items() if key in now and now[key] != value]
    if changed:
        host.execute(["sysctl", "-q", "-w", *changed])
    host.execute(["conntrack", "-F"])
    for argv in base:
        host.succeed(["ip", *argv])


def forget_binfmt(root: Path, log: BinaryIO) -> None:
    """binfmt_misc handlers go with a reboot. The lab's binfmt_misc is the machine's (no user
    namespace): since Linux 6.7 its handlers go by themselves with its last mount (the
    host's, gone with the host), else the handlers the host's forgeway registered (its
    binfmt/ours) are removed here. Either way a line says so, per handler."""
    from tools.lab.binfmt import handlers, unregister

    ours = root / "etc" / "forgeway" / "binfmt" / "ours"
    listed = sorted(set(ours.read_text().split())) if ours.exists() else []
    try:
        present = set(handlers()) if listed else set()
        for name in listed:
            if name in present:
                unregister(name)
            how = "forgotten" if name in present else "gone with the host's binfmt_misc mount"
            log.write(f"[supervisor] binfmt handler {name} {how}\n".encode())
    except (RuntimeError, ValueError) as failed:
        log.write(f"[supervisor] binfmt: {failed}\n".encode())
    log.flush()


def nspawn_command(name: str, netns: str, root: Path) -> list[str]:
    """systemd-nspawn for a lab host (what each extra is for: /work/notes/nspawn-docker.md,
    docs/tunnel.md "Lab hosts that boot"). Run with :data:`NSPAWN_ENV`."""
    return [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
        f"--network-namespace-path=/run/netns/{netns}", f"--machine={name}", "-D", str(root),
        "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
        # With --network-namespace-path it makes no network: it keeps CAP_NET_ADMIN (wireguard-go,
        # nft, ip, dockerd's iptables) and mounts /proc/sys/net writable (sysctls, ip_forward).
        "--private-network",
        # runc: the session keyring (add_key, keyctl) and cgroup2's device filter (bpf).
        "--system-call-filter=add_key keyctl bpf",
    ]  # fmt: skip


# cgroup2 inside: nspawn mounts a hybrid host's v1 hierarchies read-only, where runc cannot
# make a container's cgroup ("mkdir /sys/fs/cgroup/cpuset/docker: read-only file system").
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


CGROUPS = Path("/sys/fs/cgroup")


def _own_cgroups(name: str) -> list[Path]:
    """Move this process into a cgroup of its own in every hierarchy (memory aside: it
    stays in the sandbox's limit). nspawn with --keep-unit makes its ``payload`` and
    ``supervisor`` cgroups under its own: two nspawns sharing one cgroup would collide."""
    made = []
    for hierarchy in sorted(CGROUPS.iterdir()):
        if hierarchy.name == "memory" or not (hierarchy / "cgroup.procs").exists():
            continue
        group = hierarchy / f"fwl-{name}"
        try:
            group.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (group / knob).write_text((hierarchy / knob).read_text())
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as err:
            print(f"[supervisor] cgroup {group}: {err}", file=sys.stderr, flush=True)
            continue
        made.append(group)
    return made


def remove_cgroups(name: str) -> None:
    """The host's cgroups, deepest first, once nothing runs in them (lab-down calls it too)."""
    for hierarchy in CGROUPS.iterdir():
        group = hierarchy / f"fwl-{name}"
        if not group.is_dir():
            continue
        for directory in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


def supervise(name: str, netns: str, root: Path, state: Path, base: list[list[str]]) -> int:
    """Boot the host, and again each time it reboots, until SIGTERM (or another exit)."""
    stopping = False
    current: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if current is not None and current.poll() is None:
            current.terminate()  # nspawn: an orderly poweroff of the container

    signal.signal(signal.SIGTERM, stop)
    groups = _own_cgroups(name)
    sysctls = net_sysctls(netns)  # as the namespace was before the first boot
    env = {**os.environ, **NSPAWN_ENV}
    boots, status = 0, REBOOTED
    with open(state / "console.log", "ab") as console:
        while not stopping and status == REBOOTED:
            boots += 1
            current = subprocess.Popen(
                nspawn_command(name, netns, root), stdin=subprocess.DEVNULL, stdout=console, stderr=console, env=env
            )
            (state / "nspawn.json").write_text(json.dumps({"pid": current.pid, "boot": boots}))
            status = current.wait()
            console.write(f"\n[supervisor] nspawn exited {status} after boot {boots}\n".encode())
            console.flush()
            reset_namespace(netns, base, sysctls)
            forget_binfmt(root, console)
    for group in groups:  # back to the hierarchy's root, so the host's cgroups can go
        with contextlib.suppress(OSError):
            (group.parent / "cgroup.procs").write_text(str(os.getpid()))
    remove_cgroups(name)
    return 0 if stopping or status == REBOOTED else status


# --- what the lab asks of a running host ------------------------------------------------


def _ns_pids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def container_pid1(state: Path, timeout: float = 30) -> int:
    """The PID (here) of the container's init: nspawn's descendant that is PID 1 in its own namespace."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            nspawn = json.loads((state / "nspawn.json").read_text())["pid"]
            todo = _children(nspawn)
            while todo:
                pid = todo.pop()
                pids = _ns_pids(pid)
                if len(pids) > 1 and pids[-1] == "1":
                    return pid
                todo += _children(pid)
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no running container recorded in {state}")
        time.sleep(0.1)


def machine(name: str, netns: str | None, state: Path) -> Machine:
    """The running host as a Machine: its namespace, and (``inside``) every namespace of its init."""
    return Machine(name, netns, leader=lambda: container_pid1(state))


def inside(state: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the host (every namespace of its init: its mounts, PIDs, network)."""
    return machine(state.parent.name, None, state).inside.execute(list(argv), timeout=timeout)


def dockerd_pid(state: Path) -> int:
    """The PID (here) of the host's dockerd: in its init's PID namespace, named dockerd (0: none)."""
    pidns = os.readlink(f"/proc/{container_pid1(state)}/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "dockerd" and os.readlink(entry / "ns" / "pid") == pidns:
                return int(entry.name)
    return 0


def start(name: str, netns: str, root: Path, state: Path, base: list[list[str]]) -> int:
    """The host's supervisor, detached (its own session): its PID."""
    state.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tools.lab.nspawn", "supervise", "--name", name, "--netns", netns,
            "--root", str(root), "--state", str(state), "--base", json.dumps(base)]  # fmt: skip
    with open(state / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent.parent,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)},
        )  # fmt: skip
    return proc.pid


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a dead process its parent has not reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def boot_count(state: Path) -> int:
    """How many times the supervisor has started the host (0: not yet)."""
    try:
        count: int = json.loads((state / "nspawn.json").read_text())["boot"]
    except (OSError, ValueError, KeyError):
        return 0
    return count


def _recorded_nspawn(state: Path, root: Path) -> int | None:
    """The nspawn the supervisor started last, if it still runs (and is that nspawn)."""
    try:
        pid: int = json.loads((state / "nspawn.json").read_text())["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return pid if argv[0].endswith(b"systemd-nspawn") and str(root).encode() in argv else None


def stop(pid: int, state: Path, root: Path, name: str, timeout: float = 20) -> None:
    """Power the host off through its supervisor (through its nspawn should the supervisor be
    gone), kill what is left after ``timeout``, and remove the host's cgroups."""
    stop_all([(pid, state, root, name)], timeout)


def stop_all(hosts: list[tuple[int, Path, Path, str]], timeout: float = 20) -> None:
    """:func:`stop` for several hosts (supervisor PID, state, root, name) at once: every
    host is asked to power off first, then each is waited for (one deadline for all)."""
    asked = []
    for pid, state, root, name in hosts:
        nspawn = _recorded_nspawn(state, root)
        for target in (pid, nspawn):
            if target is not None and running(target):
                os.kill(target, signal.SIGTERM)  # nspawn: an orderly poweroff of the container
                break
        asked.append((pid, nspawn, name))
    deadline = time.monotonic() + timeout
    for pid, nspawn, name in asked:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaped, if it is our own child
            if not running(pid) and (nspawn is None or not running(nspawn)):
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the supervisor's session
            if nspawn is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nspawn, signal.SIGKILL)
        remove_cgroups(name)


def main() -> int:
    parser = argparse.ArgumentParser(description="A lab host's supervisor (tools/lab/topology.py starts it).")
    parser.add_argument("action", choices=["supervise", "rootfs"])
    parser.add_argument("--name")
    parser.add_argument("--netns")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--base", default="[]")
    parser.add_argument("--docker", action="store_true", help="supervise: a docker host; rootfs: with docker.io")
    args = parser.parse_args()
    if args.action == "rootfs":
        from tools.lab.rootfs import rootfs_tarball

        timings: dict[str, float] = {}
        print(rootfs_tarball(timings, docker=args.docker), json.dumps(timings))
        return 0
    base: list[list[str]] = json.loads(args.base)
    return supervise(args.name, args.netns, args.root, args.state, base)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["container_pid1", "inside", "machine", "start", "stop", "stop_all", "supervise"]
