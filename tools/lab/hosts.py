"""The lab's hosts: each one booted (systemd in nspawn) or an sshd in its namespace, and their dockerds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.lab.layout import (
    BOOTING_HOST_USERS,
    CLIENT_DOCKER_INDEX,
    DOCKER_HOSTS,
    HOSTS,
    LAB_DIR,
    PUBLIC_NAMES,
    ROOT,
    RUNNER_HOSTS,
    SEEDED_DAEMON_JSON,
    SSHD,
    TOPOLOGY,
    HostSpec,
)
from tools.lab.network import base_network, ns
from tools.lab.users import keygen


def start_sshd(spec: HostSpec, work: Path, deployer_pub: str, listen: str | None = None) -> dict[str, Any]:
    """sshd in the host's namespace and its own PID namespace, detached from make."""
    work.mkdir(parents=True)
    host_key = keygen(work / "ssh_host_ed25519_key")
    (work / "authorized_keys").write_text(deployer_pub + "\n")
    lines = [
        # No ListenAddress unless asked: all addresses of the namespace, wg0's included, as
        # a real host's sshd listens (what the tunnel's segmentation must hold off).
        *([f"ListenAddress {listen}"] if listen else []),
        f"Port {spec.ssh_port}",
        f"HostKey {work / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {work / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        f"PidFile {work / 'sshd.pid'}",
    ]
    # Namespaces share one filesystem: each host gets its own /etc, /run and WireGuard
    # socket directory for forgeway's scripts (FORGEWAY_*, see the scripts' headers).
    # Units are written (under FORGEWAY_ETC) though nothing runs systemd here: a
    # simulated reboot runs exactly what they would (tests/lab/test_make_lab.py).
    env = {"FORGEWAY_SYSTEMD": "yes"}
    for var, sub in (("FORGEWAY_ETC", "etc"), ("FORGEWAY_RUN", "run"), ("FORGEWAY_WG_SOCKET_DIR", "wg")):
        (work / sub).mkdir()
        env[var] = str(work / sub)
    if spec.name in DOCKER_HOSTS:
        # `docker system dial-stdio` (what the docker provider runs over SSH) finds this host's daemon.
        env["DOCKER_HOST"] = f"unix://{docker_work(spec.name) / 'docker.sock'}"
    if spec.name in RUNNER_HOSTS:
        # forgeway's daemon.json script restarts docker with this (no systemd runs dockerd here).
        restart = work / "restart-docker"
        restart.write_text(
            f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m tools.lab.docker restart {docker_work(spec.name)}\n"
        )
        restart.chmod(0o755)
        env["FORGEWAY_DOCKER_RESTART"] = str(restart)
    if spec.fake_machine:
        shim = work / "bin"
        shim.mkdir()
        (shim / "uname").write_text(
            f'#!/bin/sh\n[ "$1" = "-m" ] && {{ echo {spec.fake_machine}; exit 0; }}\nexec /bin/uname "$@"\n'
        )
        (shim / "uname").chmod(0o755)
        env["PATH"] = f"{shim}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()))
    (work / "sshd_config").write_text("\n".join(lines) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns(spec.name), "unshare", "--pid", "--kill-child", "--fork", SSHD, "-D",
         "-f", str(work / "sshd_config"), "-E", str(work / "sshd.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not sshd_answers(spec.address, spec.ssh_port, host_key):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd of lab host {spec.name} did not come up: {(work / 'sshd.log').read_text()}")
        time.sleep(0.1)
    return {"name": spec.name, "netns": ns(spec.name), "address": spec.address, "ssh_port": spec.ssh_port,
            "host_key": host_key, "pid": proc.pid}  # fmt: skip


def sshd_answers(address: str, port: int, host_key: str) -> bool:
    """Whether an sshd answers at address:port with this host key (its own, not another's)."""
    scan = subprocess.run(
        ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(port), address],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return host_key.split()[1] in scan.stdout


def start_booting_host(spec: HostSpec, work: Path, deployer_pub: str) -> dict[str, Any]:
    """A host with systemd as PID 1 (tools/lab/nspawn.py): its root, host key and login
    user (in the docker group on a docker host, whose dockerd systemd starts), and its
    supervisor started; :func:`wait_booted` waits for its sshd."""
    from tools.lab import nspawn as lab_nspawn
    from tools.lab.docker import bridge_addresses, storage_driver

    work.mkdir(parents=True)
    host_key = keygen(work / "ssh_host_ed25519_key")
    root = work / "root"
    users = {BOOTING_HOST_USERS[spec.name]: deployer_pub}
    docker = None
    if spec.name in DOCKER_HOSTS:
        bip, pool = bridge_addresses(DOCKER_HOSTS[spec.name])
        # A runner's daemon.json is forgeway's to manage: dockerd refuses a flag it also sets.
        docker = lab_nspawn.DockerSetup(bip, None if spec.name in RUNNER_HOSTS else pool, storage_driver(work))
    vps = next(h.address for h in HOSTS if h.name == "vps")
    lab_nspawn.make_root(
        root, spec.name, spec.ssh_port, users, work / "ssh_host_ed25519_key",
        hosts=f"{vps} {' '.join(PUBLIC_NAMES)}\n" if docker else "",
        groups=("docker",) if docker else (), docker=docker, fake_machine=spec.fake_machine,
    )  # fmt: skip
    if spec.name in RUNNER_HOSTS:
        # A daemon.json of the host's own that forgeway must keep (and give back on destroy).
        (root / "etc" / "docker" / "daemon.json").write_text(SEEDED_DAEMON_JSON)
    # Where the lab's tools and tests look for a host's files, as for the other hosts.
    (work / "etc").symlink_to("root/etc")
    state = work / "nspawn"
    pid = lab_nspawn.start(spec.name, ns(spec.name), root, state, base_network(spec))
    return {"name": spec.name, "netns": ns(spec.name), "address": spec.address, "ssh_port": spec.ssh_port,
            "host_key": host_key, "pid": pid, "boots": True, "root": str(root), "state": str(state)}  # fmt: skip


def wait_booted(host: dict[str, Any], timeout: float = 120) -> None:
    """Until the booting host's sshd answers with its own key (its supervisor must keep running)."""
    from tools.lab.nspawn import running

    deadline = time.monotonic() + timeout
    while not sshd_answers(host["address"], host["ssh_port"], host["host_key"]):
        if not running(host["pid"]) or time.monotonic() > deadline:
            console = Path(host["state"]) / "console.log"
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else "(no console log)"
            raise RuntimeError(f"lab host {host['name']} did not boot to its sshd within {timeout:.0f} s:\n{tail}")
        time.sleep(0.2)


def docker_work(name: str) -> Path:
    """Where a lab host's dockerd keeps everything (its socket: ``docker.sock``)."""
    return LAB_DIR / "hosts" / name / "docker"


def write_name_files() -> None:
    """/etc/netns/<ns>/hosts: `ip netns exec` shows it as /etc/hosts (the lab's DNS)."""
    vps = next(h.address for h in HOSTS if h.name == "vps")
    for name in ["client", *DOCKER_HOSTS]:
        directory = Path("/etc/netns") / ns(name)
        directory.mkdir(parents=True, exist_ok=True)
        # The machine's own name too, as Debian's /etc/hosts has it: sudo resolves it and
        # warns on every call when it cannot.
        (directory / "hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}\n{vps} {' '.join(PUBLIC_NAMES)}\n"
        )


def booted_dockerd(host: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """The record (tools.lab.docker.DaemonInfo's) of a booting docker host's dockerd once it
    answers on its second socket, a file in the host's root; ``in_host``: systemd in the
    host runs it (lab-down powers the host off, nothing stops it from here)."""
    from tools.lab.docker import DaemonInfo, bridge_addresses, docker
    from tools.lab.nspawn import DOCKER_SOCKET, dockerd_pid

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
    from tools.lab.docker import DaemonInfo, start_dockerd
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
    ensure_image(DaemonInfo.from_json(daemons["home"]), GITLAB_STANDIN)
    for name, arch in RUNNER_HOSTS.items():
        ensure_image_as(DaemonInfo.from_json(daemons[name]), RUNNER_STANDIN, arch)
    # runner-amd has runner.multiarch (Pulumi.lab.yaml): its binfmt image, and an arm64 program to run
    ensure_image(DaemonInfo.from_json(daemons["runner-amd"]), BINFMT_STANDIN)
    ensure_hello_arm64(DaemonInfo.from_json(daemons["runner-amd"]))
