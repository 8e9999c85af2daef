"""The lab's hosts: each one booted (systemd in nspawn) in its namespace, and their dockerds."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tools.lab.layout import (
    BOOTING_HOST_USERS,
    CLIENT_DOCKER_INDEX,
    DOCKER_HOSTS,
    LAB_DIR,
    PUBLIC_NAMES,
    RUNNER_HOSTS,
    SEEDED_DAEMON_JSON,
    TOPOLOGY,
    VPS_ADDRESS,
    VPS_ADDRESS_V6,
    HostSpec,
)
from tools.lab.network import DEPLOYER, base_network, machine, ns


def keygen(path: Path) -> str:
    """A passphrase-less ed25519 key pair at ``path``; its public key, ``"ssh-ed25519 AAAA..."``."""
    DEPLOYER.succeed(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)])
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def sshd_answers(address: str, port: int, host_key: str, via: str | None = None) -> bool:
    """Whether an sshd answers at address:port with this host key (its own, not another's),
    from this machine or from lab host ``via``'s network (a jump host's: no other way there)."""
    scanner = DEPLOYER if via is None else machine(via)
    scan = scanner.execute(["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(port), address])
    return host_key.split()[1] in scan.stdout


def host_sshd_answers(host: dict[str, Any]) -> bool:
    """:func:`sshd_answers` for a topology host record, through its jump host where it has one."""
    return sshd_answers(host["address"], host["ssh_port"], host["host_key"], via=host.get("jump_host"))


def start_booting_host(spec: HostSpec, work: Path, deployer_pub: str) -> dict[str, Any]:
    """A host with systemd as PID 1 (tools/lab/nspawn.py): its root, host key and login
    user (in the docker group on a docker host, whose dockerd systemd starts), and its
    supervisor started; :func:`wait_booted` waits for its sshd."""
    from tools.lab import nspawn as lab_nspawn
    from tools.lab import rootfs as lab_rootfs
    from tools.lab.docker import bridge_addresses, storage_driver

    work.mkdir(parents=True)
    host_key = keygen(work / "ssh_host_ed25519_key")
    root = work / "root"
    users = {BOOTING_HOST_USERS[spec.name]: deployer_pub}
    docker = None
    if spec.name in DOCKER_HOSTS:
        bip, pool = bridge_addresses(DOCKER_HOSTS[spec.name])
        # A runner's daemon.json is forgeway's to manage: dockerd refuses a flag it also sets.
        docker = lab_rootfs.DockerSetup(bip, None if spec.name in RUNNER_HOSTS else pool, storage_driver(work))
    lab_rootfs.make_root(
        root, spec.name, spec.ssh_port, users, work / "ssh_host_ed25519_key",
        hosts=public_name_lines() if docker else "",
        groups=("docker",) if docker else (), docker=docker, fake_machine=spec.fake_machine,
    )  # fmt: skip
    if spec.name in RUNNER_HOSTS:
        # A daemon.json of the host's own that forgeway must keep (and give back on destroy).
        (root / "etc" / "docker" / "daemon.json").write_text(SEEDED_DAEMON_JSON)
    # Where the lab's tools and tests look for a host's files, as for the other hosts.
    (work / "etc").symlink_to("root/etc")
    state = work / "nspawn"
    pid = lab_nspawn.start(spec.name, ns(spec.name), root, state, base_network(spec))
    described: dict[str, Any] = {
        "name": spec.name, "netns": ns(spec.name), "address": spec.address, "ssh_port": spec.ssh_port,
        "host_key": host_key, "pid": pid, "boots": True, "root": str(root), "state": str(state),
    }  # fmt: skip
    if spec.address6:
        described["address6"] = spec.address6
    if spec.jump:  # the deployer reaches it only through this host (hosts[].jump_host)
        described["jump_host"] = spec.jump
    if spec.segment == "v6only":
        described["ipv6_only"] = True  # no IPv4 address on its uplink
    return described


def wait_booted(host: dict[str, Any], timeout: float = 120) -> None:
    """Until the booting host's sshd answers with its own key (its supervisor must keep running)."""
    from tools.lab.nspawn import running

    deadline = time.monotonic() + timeout
    while not host_sshd_answers(host):
        if not running(host["pid"]) or time.monotonic() > deadline:
            console = Path(host["state"]) / "console.log"
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else "(no console log)"
            raise RuntimeError(f"lab host {host['name']} did not boot to its sshd within {timeout:.0f} s:\n{tail}")
        time.sleep(0.2)


def docker_work(name: str) -> Path:
    """Where a lab host's dockerd keeps everything (its socket: ``docker.sock``)."""
    return LAB_DIR / "hosts" / name / "docker"


def public_name_lines() -> str:
    """What DNS says of the public names: A and AAAA, both the VPS (it forwards both families)."""
    names = " ".join(PUBLIC_NAMES)
    return f"{VPS_ADDRESS} {names}\n{VPS_ADDRESS_V6} {names}\n"


def write_name_files() -> None:
    """/etc/netns/<ns>/hosts: `ip netns exec` shows it as /etc/hosts (the lab's DNS)."""
    for name in ["client", *DOCKER_HOSTS]:
        directory = Path("/etc/netns") / ns(name)
        directory.mkdir(parents=True, exist_ok=True)
        # The machine's own name too, as Debian's /etc/hosts has it: sudo resolves it and
        # warns on every call when it cannot.
        (directory / "hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}\n{public_name_lines()}"
        )


def booted_dockerd(host: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """The record (tools.lab.docker.DaemonInfo's) of a booting docker host's dockerd once it
    answers on its second socket, a file in the host's root; ``in_host``: systemd in the
    host runs it (lab-down powers the host off, nothing stops it from here)."""
    from tools.lab.docker import DaemonInfo, bridge_addresses, docker
    from tools.lab.nspawn import dockerd_pid
    from tools.lab.rootfs import DOCKER_SOCKET

    name, root = host["name"], Path(host["root"])
    bip, pool = bridge_addresses(DOCKER_HOSTS[name])
    work = docker_work(name)
    work.mkdir(parents=True, exist_ok=True)
    info = DaemonInfo(netns=host["netns"], work=work, socket=root / DOCKER_SOCKET.lstrip("/"), pid=0, bip=bip,
                      address_pool=pool, log=Path(host["state"]) / "console.log", index=DOCKER_HOSTS[name],
                      etc_docker=root / "etc" / "docker", config_file=name in RUNNER_HOSTS)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not info.socket.exists() or docker(info, "info", "--format", "{{.ID}}", timeout=10, check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd of lab host {name} did not answer in {timeout:.0f} s: see {info.log}")
        time.sleep(0.2)
    record = {**info.to_json(), "pid": dockerd_pid(Path(host["state"])), "in_host": True}
    (work / "daemon.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def start_docker_hosts(record: dict[str, Any]) -> None:
    """The docker hosts' dockerds (started by systemd in each host; a dockerd of the
    lab's for the client); the stand-in images in each host's docker, on its disk, so
    they are there after a reboot too. ``record`` gets each daemon as soon as it runs,
    so lab-down stops it even if a later step fails."""
    from tools.lab.docker import DaemonInfo
    from tools.lab.dockerd import start_dockerd
    from tools.lab.images import (
        BINFMT_STANDIN,
        GITLAB_STANDIN,
        RUNNER_STANDIN,
        ensure_hello_arm64,
        ensure_image,
        ensure_image_as,
    )

    daemons = record.setdefault("docker", {})
    by_name = {h["name"]: h for h in record["hosts"]}
    for name in DOCKER_HOSTS:
        daemons[name] = booted_dockerd(by_name[name])
    info = start_dockerd(ns("client"), LAB_DIR / "client" / "docker", index=CLIENT_DOCKER_INDEX,
                         etc_docker=LAB_DIR / "client" / "etc-docker")  # fmt: skip
    daemons["client"] = info.to_json()
    TOPOLOGY.with_suffix(".partial").write_text(json.dumps(record))

    def images(name: str) -> None:
        daemon = DaemonInfo.from_json(daemons[name])
        if name == "home":
            ensure_image(daemon, GITLAB_STANDIN)
        if name in RUNNER_HOSTS:
            ensure_image_as(daemon, RUNNER_STANDIN, RUNNER_HOSTS[name])
        if name == "runner-amd":  # runner.multiarch (Pulumi.lab.yaml): its binfmt image, an arm64 program to run
            ensure_image(daemon, BINFMT_STANDIN)
            ensure_hello_arm64(daemon)

    # Each host's daemon at once: the imports are mostly waiting on disk (a tarball
    # cache file is built once, under its lock, whichever host asks first).
    with ThreadPoolExecutor(max_workers=len(DOCKER_HOSTS)) as pool:
        for done in [pool.submit(images, name) for name in DOCKER_HOSTS]:
            done.result()
