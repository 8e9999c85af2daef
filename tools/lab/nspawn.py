"""Lab hosts that boot: systemd as PID 1 in ``systemd-nspawn``, inside the host's namespace.

A host's root file system is Debian 12 (minbase plus :data:`PACKAGES`), built once and
cached as a tarball under ``$FORGEWAY_ROOTFS_CACHE``, else ``~/.cache/forgeway/rootfs``,
named by a hash of its package list (a lock per file, renamed into place: two runs at
once never build it twice nor read half of it). Each host gets its own copy under the
lab directory, with its own host name, machine id, SSH host key, sshd port and users.

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
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tools.lab.images import SUITE, _build_dir, _install, _locked, _minbase, _run, _tar

ROOTFS_VERSION = 1  # bump when the way roots are made changes: every hash changes
# What forgeway's host scripts (components/scripts) run on a host, and what a host boots with.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "nftables", "iproute2", "iptables",
    "conntrack", "wireguard-tools", "wireguard-go", "procps", "kmod", "python3-minimal", "iputils-ping",
    "ca-certificates",
)  # fmt: skip
# A docker host's root has these too (systemd starts docker.service, as Debian enables it).
DOCKER_PACKAGES = ("docker.io", "python3")  # python3: forgeway's daemon.json merge (json)
# systemd's exit status for "the container rebooted" (systemd-nspawn(1)).
REBOOTED = 133
# Units a container has no use for, or that wait for what nspawn does not give it.
MASKED = ("console-getty.service", "getty@.service", "systemd-networkd-wait-online.service",
          "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")  # fmt: skip


def cache_dir() -> Path:
    if env := os.environ.get("FORGEWAY_ROOTFS_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "forgeway" / "rootfs"


def rootfs_key(docker: bool = False) -> str:
    packages = sorted(PACKAGES + (DOCKER_PACKAGES if docker else ()))
    text = json.dumps({"v": ROOTFS_VERSION, "suite": SUITE, "packages": packages, "masked": sorted(MASKED)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs_tarball(timings: dict[str, float] | None = None, *, docker: bool = False) -> Path:
    """The cached host root file system, built if missing (minbase from tools/lab/images'
    cache); ``docker``: with docker.io too, built on top of the plain one."""
    timings = {} if timings is None else timings
    target = cache_dir() / f"host-{SUITE}-{rootfs_key(docker)}.tar"
    with _locked(target):
        if target.exists():
            return target
        base = rootfs_tarball(timings) if docker else _minbase(SUITE, timings)
        started = time.monotonic()
        with _build_dir(target.parent) as rootfs:
            rootfs.mkdir()
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-xf", str(base)])
            _install(rootfs, DOCKER_PACKAGES if docker else PACKAGES)
            for key in rootfs.glob("etc/ssh/ssh_host_*"):  # every host makes its own
                key.unlink()
            (rootfs / "etc" / "machine-id").write_text("")
            for unit in MASKED:
                mask = rootfs / "etc" / "systemd" / "system" / unit
                mask.unlink(missing_ok=True)
                mask.symlink_to("/dev/null")
            _tar(rootfs, target)
        timings["host-rootfs-docker" if docker else "host-rootfs"] = time.monotonic() - started
    return target


@dataclass(frozen=True)
class DockerSetup:
    """How a docker host's dockerd runs: docker.service as Debian ships it, with the lab's
    flags in a drop-in (its own bridge subnets, so no two hosts route the same container
    subnet; the storage driver that works on the lab's file system; a short shutdown
    timeout) and a second API socket on the host's disk, which this machine reaches as a
    file under the host's root."""

    bip: str
    address_pool: str | None  # None: a daemon.json forgeway manages may set the pools
    storage_driver: str
    shutdown_timeout: int = 3


DOCKER_SOCKET = "/var/lib/forgeway-lab/docker.sock"  # inside the host; the root's copy is its file here
PATH_SHIM = "/usr/local/lib/forgeway-lab/bin"  # runner-arm's `uname` says aarch64 in SSH sessions


def make_root(
    root: Path,
    hostname: str,
    ssh_port: int,
    users: dict[str, str],
    host_key: Path,
    *,
    hosts: str = "",
    groups: tuple[str, ...] = (),
    docker: DockerSetup | None = None,
    fake_machine: str | None = None,
) -> None:
    """The host's own copy of the root: its name, machine id, sshd port and host key, and
    ``users`` (name: authorized public key, in ``groups`` too) with passwordless sudo in
    its own sudoers; with ``docker``, the docker.io root and its dockerd's lab settings."""
    root.mkdir(parents=True)
    tarball = rootfs_tarball(docker=docker is not None)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(tarball)], check=True)
    etc = root / "etc"
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n{hosts}")
    # Debian's sshd as it comes (every address), on the lab's port, with the lab's key only.
    sshd = f"Port {ssh_port}\nHostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
    if fake_machine is not None:
        shim = root / PATH_SHIM.lstrip("/")
        shim.mkdir(parents=True)
        (shim / "uname").write_text(
            f'#!/bin/sh\n[ "$1" = "-m" ] && {{ echo {fake_machine}; exit 0; }}\nexec /bin/uname "$@"\n'
        )
        (shim / "uname").chmod(0o755)
        sshd += f"SetEnv PATH={PATH_SHIM}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    (etc / "ssh" / "sshd_config.d" / "lab.conf").write_text(sshd)
    for suffix in ("", ".pub"):
        target = etc / "ssh" / f"ssh_host_ed25519_key{suffix}"
        target.write_bytes(Path(f"{host_key}{suffix}").read_bytes())
        target.chmod(0o600 if not suffix else 0o644)
    for user, public_key in users.items():
        # Password '*': no password login, and not "locked" (sshd refuses a locked account).
        extra = ["--groups", ",".join(groups)] if groups else []
        _run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", *extra, user])
        ssh_dir = root / "home" / user / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(public_key + "\n")
        _run(["chroot", str(root), "chown", "-R", f"{user}:{user}", f"/home/{user}/.ssh"])
        grant_sudo(root, user)
    if docker is not None:
        _docker_host(root, docker)


def _docker_host(root: Path, docker: DockerSetup) -> None:
    units = root / "etc" / "systemd" / "system"
    flags = [
        "-H", "fd://", "-H", f"unix://{DOCKER_SOCKET}", "--containerd=/run/containerd/containerd.sock",
        "--storage-driver", docker.storage_driver, "--bip", docker.bip,
        *(("--default-address-pool", f"base={docker.address_pool},size=24") if docker.address_pool else ()),
        "--shutdown-timeout", str(docker.shutdown_timeout),
    ]  # fmt: skip
    (root / DOCKER_SOCKET.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    dropin = units / "docker.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "lab.conf").write_text(
        "# the lab's dockerd settings (tools/lab/nspawn.py)\n[Service]\nExecStart=\n"
        f"ExecStart=/usr/sbin/dockerd {' '.join(flags)}\n"
    )
    # binfmt_misc: systemd's automount of it is skipped where /proc/sys is read-only, as
    # nspawn's is; root in the host can mount it there all the same (the kernel's one,
    # shared: no user namespace), so the mount is pulled in at boot.
    mount = "proc-sys-fs-binfmt_misc.mount"
    # systemd-binfmt.service would then run too: it registers the root's binfmt.d entries
    # (python3's) and, when stopped at shutdown, unregisters every handler: the machine's
    # and the other lab hosts' too, binfmt_misc being the kernel's one. Masked.
    (units / "systemd-binfmt.service").unlink(missing_ok=True)
    (units / "systemd-binfmt.service").symlink_to("/dev/null")
    wants = units / "sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / mount).unlink(missing_ok=True)
    (wants / mount).symlink_to(f"/lib/systemd/system/{mount}")


def sudoers_path(root: Path, user: str) -> Path:
    return root / "etc" / "sudoers.d" / user


def grant_sudo(root: Path, user: str) -> None:
    path = sudoers_path(root, user)
    path.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    path.chmod(0o440)


def revoke_sudo(root: Path, user: str) -> None:
    sudoers_path(root, user).unlink(missing_ok=True)


# --- the supervisor -------------------------------------------------------------------


def _netns(netns: str, *argv: str, check: bool = False, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` in {netns}: {done.stderr.strip()}")
    return done.stdout


def net_sysctls(netns: str) -> dict[str, str]:
    """The namespace's own sysctls (net.*: the rest are the machine's, not the namespace's)."""
    found = {}
    for line in _netns(netns, "sysctl", "-a", "--ignore").splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("net."):
            found[key] = value
    return found


def reset_namespace(netns: str, base: list[list[str]], sysctls: dict[str, str]) -> None:
    """What a reboot does to a kernel's runtime state, in the host's namespace, then the
    base network (``base``: `ip` argument lists) as the host's network config sets it at boot."""
    for line in _netns(netns, "ip", "-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name not in ("lo", "eth0"):
            _netns(netns, "ip", "link", "delete", name)
    _netns(netns, "nft", "flush", "ruleset")
    for family in ("-4", "-6"):
        _netns(netns, "ip", family, "rule", "flush")  # all but the local table's rule
        _netns(netns, "ip", family, "rule", "add", "pref", "32766", "lookup", "main")
        if family == "-4":
            _netns(netns, "ip", family, "rule", "add", "pref", "32767", "lookup", "default")
        for line in _netns(netns, "ip", family, "route", "show", "table", "all").splitlines():
            words = line.split()
            table = words[words.index("table") + 1] if "table" in words else "main"
            if table not in ("local", "main"):
                _netns(netns, "ip", family, "route", "flush", "table", table)
        _netns(netns, "ip", family, "route", "flush", "table", "main")
        _netns(netns, "ip", family, "addr", "flush", "dev", "eth0")
    _netns(netns, "ip", "link", "set", "eth0", "down")
    now = net_sysctls(netns)
    changed = [f"{key}={value}" for key, value in sysctls.items() if key in now and now[key] != value]
    if changed:
        _netns(netns, "sysctl", "-q", "-w", *changed)
    _netns(netns, "conntrack", "-F")
    for argv in base:
        _netns(netns, "ip", *argv, check=True)


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


def inside(state: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the host (every namespace of its init: its mounts, PIDs, network)."""
    return subprocess.run(
        ["nsenter", "-t", str(container_pid1(state)), "-a", *argv],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


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
    nspawn = _recorded_nspawn(state, root)
    for target in (pid, nspawn):
        if target is not None and running(target):
            os.kill(target, signal.SIGTERM)  # nspawn: an orderly poweroff of the container
            break
    deadline = time.monotonic() + timeout
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
        timings: dict[str, float] = {}
        print(rootfs_tarball(timings, docker=args.docker), json.dumps(timings))
        return 0
    base: list[list[str]] = json.loads(args.base)
    return supervise(args.name, args.netns, args.root, args.state, base)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PACKAGES", "container_pid1", "inside", "make_root", "rootfs_tarball", "start", "stop", "supervise"]
