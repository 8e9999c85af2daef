"""A booting lab host's root file system (tools/lab/nspawn.py boots it).

A host's root file system is Debian 12 (minbase plus :data:`PACKAGES`), built once and
cached as a tarball under ``$FORGEWAY_ROOTFS_CACHE``, else ``~/.cache/forgeway/rootfs``,
named by a hash of its package list (a lock per file, renamed into place: two runs at
once never build it twice nor read half of it). Each host gets its own copy under the
lab directory, with its own host name, machine id, SSH host key, sshd port and users.

:func:`make_root` makes a host's copy; on a docker host docker.service is Debian's,
with the lab's flags in a drop-in (:class:`DockerSetup`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tools.lab.images import SUITE, _build_dir, _install, _locked, _minbase, _run, _tar

__all__ = [
    "BINFMT_DETACHED",
    "BINFMT_MOUNT",
    "DOCKER_SOCKET",
    "PACKAGES",
    "DockerSetup",
    "grant_sudo",
    "keep_binfmt_at_shutdown",
    "make_root",
    "revoke_sudo",
    "rootfs_tarball",
]

ROOTFS_VERSION = 1  # bump when the way roots are made changes: every hash changes
# What forgeway's host scripts (components/scripts) run on a host, and what a host boots with.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "nftables", "iproute2", "iptables",
    "conntrack", "wireguard-tools", "wireguard-go", "procps", "kmod", "python3-minimal", "iputils-ping",
    "ca-certificates",
)  # fmt: skip
# A docker host's root has these too (systemd starts docker.service, as Debian enables it).
# python3: forgeway's daemon.json merge (json); restic: the GitLab host's forgeway-backup (issue 18;
# its SFTP backend runs ssh from openssh-client, which openssh-server depends on, as does
# openssh-sftp-server, the VPS's end; flock and tar are in minbase).
DOCKER_PACKAGES = ("docker.io", "python3", "restic")
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
    keep_binfmt_at_shutdown(root)
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
    # shared: no user namespace), so the mount is pulled in at boot (keep_binfmt_at_shutdown).
    wants = units / "sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / BINFMT_MOUNT).unlink(missing_ok=True)
    (wants / BINFMT_MOUNT).symlink_to(f"/lib/systemd/system/{BINFMT_MOUNT}")


BINFMT_MOUNT = "proc-sys-fs-binfmt_misc.mount"


BINFMT_GUARD = "lab-binfmt-guard.service"  # not forgeway-*: the lab's, no file of the program
BINFMT_DETACHED = "lab: binfmt_misc detached before systemd-shutdown"  # the guard's console line


def keep_binfmt_at_shutdown(root: Path) -> None:
    """A lab host's shutdown leaves the machine's binfmt_misc alone.

    binfmt_misc outside a user namespace is the kernel's one, shared by this machine and
    every lab host. Two things in a guest's systemd would empty it: systemd-binfmt.service
    unregisters every handler when stopped (masked), and systemd-shutdown, the last step of
    every poweroff and reboot, writes -1 to binfmt_misc/status whenever binfmt_misc is
    mounted at /proc/sys/fs/binfmt_misc (systemd src/shutdown/shutdown.c, disable_binfmt();
    an API file system, so systemd never unmounts it itself). So a guard unit, stopped with
    the other units at shutdown, detaches that mount (however it was made: at boot, or by
    binfmt-up.sh) and says so on the console. The handlers a host registered go with its
    reboot all the same: the supervisor removes them (tools/lab/nspawn.py, forget_binfmt).
    """
    units = root / "etc" / "systemd" / "system"
    (units / "systemd-binfmt.service").unlink(missing_ok=True)
    (units / "systemd-binfmt.service").symlink_to("/dev/null")
    where = "/proc/sys/fs/binfmt_misc"
    detach = (
        f'while [ "$$(stat -f -c %%T {where})" = binfmt_misc ]; do umount -l {where} || exit 1; done; '
        f'echo "{BINFMT_DETACHED}"'
    )
    (units / BINFMT_GUARD).write_text(
        "[Unit]\nDescription=Keep the machine's binfmt_misc at shutdown (the lab, tools/lab/rootfs.py)\n"
        f"DefaultDependencies=no\nAfter={BINFMT_MOUNT}\nConflicts=shutdown.target\nBefore=shutdown.target\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
        f"ExecStop=/bin/sh -c '{detach}'\nStandardOutput=journal+console\n"
    )
    wants = units / "sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / BINFMT_GUARD).unlink(missing_ok=True)
    (wants / BINFMT_GUARD).symlink_to(f"../{BINFMT_GUARD}")


def sudoers_path(root: Path, user: str) -> Path:
    return root / "etc" / "sudoers.d" / user


def grant_sudo(root: Path, user: str) -> None:
    path = sudoers_path(root, user)
    path.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    path.chmod(0o440)


def revoke_sudo(root: Path, user: str) -> None:
    sudoers_path(root, user).unlink(missing_ok=True)
