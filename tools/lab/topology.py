"""`make lab` / `make lab-down`: the lab topology on this machine, and the lab stack on it.

Topology (network namespaces ``fwl-*``; addresses exist only inside them):

    client 203.0.113.100 ─┐
    vps    203.0.113.10  ─┼─ fwl-inet (a bridge: "the internet", 203.0.113.0/24)
    cgnat  203.0.113.20  ─┤      the deployer (root namespace) is 203.0.113.254 on it
      │ 100.64.0.1        │
      └─ homegw 100.64.0.2 (the home router: NAT to the CGNAT)
           └─ 198.51.100.1 bridge: the home LAN; the deployer is 198.51.100.254 on it
                home 198.51.100.2, runner-arm .3, runner-amd .4

Every host (vps, home and the runners) boots: systemd is its PID 1, in systemd-nspawn
inside its namespace, with its own root file system, sshd, host key and users
(tools/lab/nspawn.py); on home and the runners systemd also starts dockerd.
`python -m tools.lab reboot HOST...|all` reboots hosts for real. The
CGNAT router masquerades the home side with a short UDP timeout, so nothing reaches
home unless home dials out. The lab stack is applied with tools/applier: host arch
checks, the tunnel, the forwarding, the CA, GitLab's container and every docker
daemon's trust. The home device and both runners run Debian's docker.service in
their root; the client gets a dockerd of the lab's (tools/lab/docker.py); GitLab's
image is a stand-in built from Debian (tools/lab/images.py, tools/lab/standin_image/):
nothing can be pulled here. Names: each host's /etc/hosts and ``/etc/netns/fwl-*/hosts``
say that gitlab.forgeway.test is the VPS.

The deployer logs in as non-root users with passwordless sudo, as on real hosts
(Pulumi.prod.yaml): ``fwl-admin`` on the VPS, ``fwl-forgeway`` (in the docker group)
on the others, each in its host's own root with a sudoers drop-in there.

``runner-arm`` is declared arm64: its sshd gives sessions a PATH whose ``uname``
says aarch64, so the arch check passes; nothing arm64 runs (this machine is x86_64).

`make lab` is idempotent (an existing topology is kept; the apply is a no-op when
nothing changed); `make lab-down` destroys the stack's resources, stops every
process it started by PID and deletes the namespaces, veths and the lab directory.
The description of what was built is in ``.lab/topology.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.lab.binfmt import remove_leftovers

ROOT = Path(__file__).resolve().parent.parent.parent
# The lab's files live where the deployer's non-root users can reach them whatever the
# clone's parents allow (a clone under /root is 0700): sshd reads a user's
# authorized_keys as that user, and the users' docker sockets and host directories are
# in here. `.lab` in the clone is a link to it, so `.lab/topology.json` is where tools
# look; one directory per clone, so two clones' labs never share files.
LAB_HOME = Path("/var/lib/forgeway-lab")
LAB_DIR = LAB_HOME / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
LAB_LINK = ROOT / ".lab"
TOPOLOGY = LAB_DIR / "topology.json"
STATE = LAB_DIR / "state.json"
PREFIX = "fwl-"
SSHD = "/usr/sbin/sshd"
INTERNET = "203.0.113"
LAN = "198.51.100"
LAN_V6 = "fd00:198:51:100::"  # the home LAN's IPv6 ULA; host .N is ::N


@dataclass(frozen=True)
class HostSpec:
    name: str  # the stack's host name
    segment: str  # "internet" or "lan"
    address: str
    ssh_port: int
    fake_machine: str | None = None  # what `uname -m` says in SSH sessions
    boots: bool = False  # systemd as PID 1 in systemd-nspawn (tools/lab/nspawn.py): its own /etc and sshd


HOSTS = (
    HostSpec("vps", "internet", f"{INTERNET}.10", 2202, boots=True),
    HostSpec("home", "lan", f"{LAN}.2", 22, boots=True),
    HostSpec("runner-arm", "lan", f"{LAN}.3", 22, fake_machine="aarch64", boots=True),
    HostSpec("runner-amd", "lan", f"{LAN}.4", 22, boots=True),
)
# Hosts with a dockerd of their own (index: their bridge subnets, tools/lab/docker.py);
# the client gets one too, as a laptop would have, to log in to the registry.
DOCKER_HOSTS = {"home": 1, "runner-arm": 2, "runner-amd": 3}
# Runner hosts: forgeway manages their daemon.json, so dockerd reads it (and restarts on change).
RUNNER_HOSTS = {"runner-arm": "arm64", "runner-amd": "amd64"}
SEEDED_DAEMON_JSON = '{\n  "labels": ["lab=seeded-by-the-host"]\n}\n'
CLIENT_DOCKER_INDEX = 4
# What DNS would say: GitLab's and the registry's names are the VPS's public address.
PUBLIC_NAMES = ("gitlab.forgeway.test", "registry.forgeway.test")
CLIENT = f"{INTERNET}.100"
VPS_ADDRESS = f"{INTERNET}.10"
CGNAT_WAN, CGNAT_LAN, HOMEGW_WAN = f"{INTERNET}.20", "100.64.0.1", "100.64.0.2"
DEPLOYER_INTERNET, DEPLOYER_LAN = f"{INTERNET}.254", f"{LAN}.254"
# The deployer's login users (Pulumi.lab.yaml hosts[].ssh_user) and their extra groups, on
# this machine for the hosts that share its user database; a host that boots has its own.
LAB_USERS: dict[str, tuple[str, ...]] = {}  # every lab host boots: its users are in its own root
BOOTING_HOST_USERS = {"vps": "fwl-admin", "home": "fwl-forgeway", "runner-arm": "fwl-forgeway",
                      "runner-amd": "fwl-forgeway"}  # fmt: skip
LAB_USER_COMMENT = "forgeway lab deployer"  # what lab-down looks for before it removes a user
SUDOERS_DIR = Path("/etc/sudoers.d")


def sh(*argv: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done.stdout


def ns(name: str) -> str:
    return f"{PREFIX}{name}"


def _veth(a_ns: str | None, a_if: str, b_ns: str, b_if: str) -> None:
    """A veth pair between two namespaces (None: the root namespace)."""
    tmp_a, tmp_b = f"fwt{os.getpid() % 10000}a", f"fwt{os.getpid() % 10000}b"
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_b, "netns", b_ns)
    sh("ip", "-n", b_ns, "link", "set", tmp_b, "name", b_if)
    if a_ns is not None:
        sh("ip", "link", "set", tmp_a, "netns", a_ns)
        sh("ip", "-n", a_ns, "link", "set", tmp_a, "name", a_if)
    else:
        sh("ip", "link", "set", tmp_a, "name", a_if)


def _up(netns: str | None, ifname: str, cidr: str | None = None, master: str | None = None) -> None:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    if cidr:
        sh(*prefix, "addr", "add", cidr, "dev", ifname)
    if master:
        sh(*prefix, "link", "set", ifname, "master", master)
    sh(*prefix, "link", "set", ifname, "up")


def _bridge(netns: str, name: str) -> None:
    sh("ip", "-n", netns, "link", "add", name, "type", "bridge")
    sh("ip", "-n", netns, "link", "set", name, "up")


def _nat(netns: str, out_if: str, source: str) -> None:
    ruleset = f"""table ip lab-nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {source} oifname "{out_if}" masquerade
  }}
}}
"""
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset, text=True, check=True)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=netns)


def _deployer_link(ifname: str, address: str, peers: list[str]) -> None:
    """The root namespace's end of a segment: a /32 and a /32 route per lab host on it.

    Never the segment's whole /24: this machine may reach real services at addresses in
    the same documentation ranges (its Debian mirror has been at 203.0.113.80), and a
    /24 here would send their traffic into the lab. The hosts still reach the deployer:
    their own /24 is on-link and the root namespace answers ARP for its /32."""
    _up(None, ifname, f"{address}/32")
    for peer in peers:
        sh("ip", "route", "add", f"{peer}/32", "dev", ifname, "src", address)


def base_network(spec: HostSpec) -> list[list[str]]:
    """A lab host's own eth0 as its network configuration sets it at boot (`ip` arguments);
    a booting host's supervisor applies it again after each reboot (tools/lab/nspawn.py)."""
    argv = [["addr", "add", f"{spec.address}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]]
    if spec.segment == "lan":
        argv.append(["route", "add", "default", "via", f"{LAN}.1"])
        # IPv6 on the LAN too (a ULA, no router): jobs' IPv6 reaches the other hosts.
        host = spec.address.rsplit(".", 1)[1]
        argv.append(["-6", "addr", "add", f"{LAN_V6}{host}/64", "dev", "eth0", "nodad"])
    return argv


def _host_link(spec: HostSpec, bridge_ns: str) -> None:
    port = f"p-{spec.name}"[:15]
    _veth(bridge_ns, port, ns(spec.name), "eth0")
    _up(bridge_ns, port, master="br0")
    for argv in base_network(spec):
        sh("ip", "-n", ns(spec.name), *argv)


def build_network() -> None:
    """Create the namespaces and links (fails if any exists: run lab-down first)."""
    names = ["inet", "client", "cgnat", "homegw"] + [h.name for h in HOSTS]
    for name in names:
        sh("ip", "netns", "add", ns(name))
        sh("ip", "-n", ns(name), "link", "set", "lo", "up")
    _bridge(ns("inet"), "br0")
    _bridge(ns("homegw"), "br0")
    # the internet segment
    for name, addr in [("client", CLIENT), ("cgnat", CGNAT_WAN)]:
        port = f"p-{name}"[:15]
        _veth(ns("inet"), port, ns(name), "eth0")
        _up(ns("inet"), port, master="br0")
        _up(ns(name), "eth0", f"{addr}/24")
    for h in HOSTS:
        if h.segment == "internet":
            _host_link(h, ns("inet"))
    _veth(None, "fwl-inet0", ns("inet"), "p-deployer")
    _up(ns("inet"), "p-deployer", master="br0")
    _deployer_link(
        "fwl-inet0", DEPLOYER_INTERNET, [CLIENT, CGNAT_WAN, *(h.address for h in HOSTS if h.segment == "internet")]
    )
    # CGNAT: 100.64.0.0/24 behind one public address, short UDP mappings
    _veth(ns("cgnat"), "eth1", ns("homegw"), "eth0")
    _up(ns("cgnat"), "eth1", f"{CGNAT_LAN}/24")
    _up(ns("homegw"), "eth0", f"{HOMEGW_WAN}/24")
    _nat(ns("cgnat"), "eth0", "100.64.0.0/24")
    sh("sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=10", netns=ns("cgnat"), check=False)
    sh("sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout_stream=20", netns=ns("cgnat"), check=False)
    sh("ip", "-n", ns("homegw"), "route", "add", "default", "via", CGNAT_LAN)
    # the home LAN
    _up(ns("homegw"), "br0", f"{LAN}.1/24")
    _nat(ns("homegw"), "eth0", f"{LAN}.0/24")
    for h in HOSTS:
        if h.segment == "lan":
            _host_link(h, ns("homegw"))
    _veth(None, "fwl-lan0", ns("homegw"), "p-deployer")
    _up(ns("homegw"), "p-deployer", master="br0")
    _deployer_link("fwl-lan0", DEPLOYER_LAN, [h.address for h in HOSTS if h.segment == "lan"])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def sudoers_line(user: str) -> str:
    """What a host needs for hosts[].become sudo (README, "Deploy for real")."""
    return f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def grant_sudo(user: str) -> None:
    """The user's sudoers drop-in (checked by visudo before it is put in place)."""
    target = SUDOERS_DIR / user
    tmp = SUDOERS_DIR / f".{user}.new"  # sudo skips names with a dot
    tmp.write_text(sudoers_line(user))
    tmp.chmod(0o440)
    check = subprocess.run(["visudo", "-cqf", str(tmp)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        tmp.unlink()
        raise RuntimeError(f"visudo refuses the lab's sudoers line for {user}: {check.stdout}{check.stderr}")
    tmp.replace(target)


def revoke_sudo(user: str) -> None:
    (SUDOERS_DIR / user).unlink(missing_ok=True)


def _lab_user_exists(user: str) -> bool:
    found = subprocess.run(["getent", "passwd", user], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return False
    if found.stdout.split(":")[4] != LAB_USER_COMMENT:
        raise RuntimeError(f"user {user} exists on this machine and is not the lab's: remove or rename it first")
    return True


def create_lab_users() -> None:
    """The deployer's non-root users, their sudo right and groups (idempotent)."""
    if not shutil.which("sudo") or not shutil.which("visudo", path="/usr/sbin:/usr/bin"):
        raise RuntimeError("sudo is not installed: apt-get install -y sudo (tools/ci/apt-packages.txt)")
    for ancestor in [*reversed(LAB_DIR.parents)][1:]:
        if ancestor.stat().st_mode & 0o001 == 0:
            raise RuntimeError(
                f"{ancestor} is not searchable by other users (mode {ancestor.stat().st_mode & 0o777:o}): the lab's "
                f"non-root deployer users must reach {LAB_DIR}: make its parents searchable (chmod o+x)"
            )
    for user, groups in LAB_USERS.items():
        if not _lab_user_exists(user):
            extra = ["--groups", ",".join(groups)] if groups else []
            # Password '*': no password login, and not "locked" (sshd without PAM refuses "!").
            sh("useradd", "--create-home", "--shell", "/bin/sh", "--comment", LAB_USER_COMMENT,
               "--password", "*", *extra, user)  # fmt: skip
        grant_sudo(user)


def remove_lab_users(errors: list[str]) -> None:
    for user in LAB_USERS:
        revoke_sudo(user)
        try:
            # The sshds were just sent SIGTERM: their sessions may take a moment to end,
            # and userdel refuses a user that still has processes.
            deadline = time.monotonic() + 10
            while _lab_user_exists(user):
                done = subprocess.run(["userdel", "--remove", user], capture_output=True, text=True, check=False)
                if done.returncode not in (0, 12) and time.monotonic() > deadline:  # 12: no home (gone)
                    errors.append(f"user {user} could not be removed: {done.stderr.strip()}")
                    break
                time.sleep(0.2)
        except RuntimeError as exc:
            errors.append(str(exc))


def start_sshd(spec: HostSpec, work: Path, deployer_pub: str, listen: str | None = None) -> dict[str, Any]:
    """sshd in the host's namespace and its own PID namespace, detached from make."""
    work.mkdir(parents=True)
    host_key = _keygen(work / "ssh_host_ed25519_key")
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
    host_key = _keygen(work / "ssh_host_ed25519_key")
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


def _set(config: dict[str, Any], assignment: str) -> None:
    """``section.key.sub=value`` (as `pulumi config set --path forgeway:section.key.sub value`)."""
    path, sep, value = assignment.partition("=")
    section, *keys = path.split(".")
    if not sep or not keys:
        raise ValueError(f"--set {assignment!r}: expected SECTION.KEY[.SUB...]=VALUE, e.g. gitlab.images.amd64=...")
    target = config.setdefault(f"forgeway:{section}", {})
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def lab_config(
    topology: dict[str, Any], mode: str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Pulumi.lab.yaml with this lab's host keys, deployer key and runner tokens."""
    import secrets as token_source

    from tools.stack.file import load_stack_file

    config, secret_keys = load_stack_file(ROOT / "Pulumi.lab.yaml", None)
    by_name = {h["name"]: h for h in topology["hosts"]}
    for host in config["forgeway:hosts"]:
        host["host_key"] = by_name[host["name"]]["host_key"]
    config["forgeway:ssh_private_key"] = (LAB_DIR / "deployer").read_text()
    tokens = json.loads((LAB_DIR / "runner-tokens.json").read_text())
    if not tokens:
        tokens = {
            h["name"]: "glrt-" + token_source.token_urlsafe(15)
            for h in config["forgeway:hosts"]
            if "runner" in h["roles"]
        }
    config["forgeway:runner_tokens"] = tokens
    booting = {h["name"] for h in topology["hosts"] if h.get("boots")}
    for host in config["forgeway:hosts"]:
        if host["name"] in RUNNER_HOSTS and host["name"] not in booting:
            host["docker_socket"] = str(docker_work(host["name"]) / "docker.sock")  # bound into the runner
    if mode is not None:
        config["forgeway:forwarding"]["mode"] = mode
    for assignment in overrides or []:
        _set(config, assignment)
    return config, [*secret_keys, "forgeway:ssh_private_key", "forgeway:runner_tokens"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _make_lab_dir() -> None:
    """LAB_DIR (mode 0711: the deployer's users traverse it; secrets in it are 0600) and
    the clone's `.lab` link to it."""
    LAB_HOME.mkdir(mode=0o755, exist_ok=True)
    LAB_DIR.mkdir(exist_ok=True)
    LAB_DIR.chmod(0o711)
    if LAB_LINK.is_symlink() and LAB_LINK.resolve() == LAB_DIR:
        return
    if LAB_LINK.exists() or LAB_LINK.is_symlink():
        raise RuntimeError(f"{LAB_LINK} exists and is not the lab's link to {LAB_DIR}: run `make lab-down` first")
    LAB_LINK.symlink_to(LAB_DIR)


def up(mode: str | None = None, overrides: list[str] | None = None, seed: int | None = None) -> int:
    from tools.stack.synth import stack_config_strings

    if not TOPOLOGY.exists():
        if any(line.startswith(PREFIX) for line in sh("ip", "netns", "list").splitlines()):
            print("lab: namespaces fwl-* exist without .lab/topology.json; run `make lab-down` first", file=sys.stderr)
            return 1
        _make_lab_dir()
        record: dict[str, Any] = {"hosts": []}
        try:
            deployer_pub = _keygen(LAB_DIR / "deployer")
            create_lab_users()
            build_network()
            write_name_files()
            # Hosts that boot first, all at once: they boot while the others' sshds start.
            for spec in sorted(HOSTS, key=lambda h: not h.boots):
                work = LAB_DIR / "hosts" / spec.name
                started = start_booting_host(spec, work, deployer_pub) if spec.boots else None
                record["hosts"].append(started or start_sshd(spec, work, deployer_pub))
                # Record each started host at once, so lab-down finds it even if a later step fails.
                TOPOLOGY.with_suffix(".partial").write_text(json.dumps(record))
            for host in record["hosts"]:
                if host.get("boots"):
                    wait_booted(host)
            start_docker_hosts(record)
        except Exception:
            down()
            raise
        _write_private(LAB_DIR / "runner-tokens.json", "{}")
        topology = {
            **record,
            "namespaces": sorted(
                line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.startswith(PREFIX)
            ),
            "client": {"netns": ns("client"), "address": CLIENT},
            "deployer": {"internet": DEPLOYER_INTERNET, "lan": DEPLOYER_LAN},
            "public_ports": [80, 443, 22, 5050],
            "public_names": list(PUBLIC_NAMES),
            "vps_public_address": next(h.address for h in HOSTS if h.name == "vps"),
            "ca_certificate": str(LAB_DIR / "ca.crt"),
        }
        TOPOLOGY.write_text(json.dumps(topology, indent=1) + "\n")
        print(f"lab: built {len(topology['namespaces'])} namespaces; described in .lab/{TOPOLOGY.name}")
    topology = json.loads(TOPOLOGY.read_text())
    config, secret_keys = lab_config(topology, mode, overrides)
    _write_private(LAB_DIR / "runner-tokens.json", json.dumps(config["forgeway:runner_tokens"]))
    # The applier runs independent resources concurrently in an order drawn from the seed
    # (printed; None: FORGEWAY_APPLY_SEED, else a fresh one).
    done = _applier({"action": "apply", "stack": "lab", "config": stack_config_strings(config),
                     "secret_keys": secret_keys, "state": str(STATE), "seed": seed})  # fmt: skip
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    changes = [json.loads(line) for line in done.stdout.splitlines()]
    changed = [c for c in changes if c["op"] != "same"]
    print(f"lab: applied the lab stack: {len(changed)} change(s), {len(changes) - len(changed)} unchanged")
    # The stack's CA (the stack output ca_certificate), for clients to trust.
    state = json.loads(STATE.read_text())["entries"]
    ca = state.get("tls:index/selfSignedCert:SelfSignedCert::ca-cert")
    if ca is not None:
        Path(topology["ca_certificate"]).write_text(ca["outputs"]["certPem"])
    name, vps = PUBLIC_NAMES[0], topology["vps_public_address"]
    print(
        f"lab: GitLab through the VPS: ip netns exec {ns('client')} curl --cacert {topology['ca_certificate']} "
        f"--resolve {name}:443:{vps} https://{name}/"
    )
    return 0


def _applier(request: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """tools.applier in its own process (one program run per process); request on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "tools.applier"],
        input=json.dumps(request),
        text=True,
        capture_output=True,
        cwd=ROOT,
        check=False,
    )


def destroy() -> int:
    """Destroy the stack's resources on the lab hosts, keep the topology (for tests)."""
    # As `pulumi destroy --exclude-protected`: GitLab's volumes stay (and the log says so).
    done = _applier({"action": "destroy", "state": str(STATE), "exclude_protected": True})
    sys.stderr.write(done.stderr)
    return done.returncode


def refresh() -> int:
    """`pulumi refresh` of the lab stack: the state takes what the providers read back."""
    done = _applier({"action": "refresh", "state": str(STATE)})
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    changes = [json.loads(line) for line in done.stdout.splitlines()]
    read = [c for c in changes if c["op"] != "same"]
    print(f"lab: refreshed the lab stack: {len(read)} read back differently, {len(changes) - len(read)} unchanged")
    return 0


def _stop_started(errors: list[str]) -> None:
    """Stop, by PID, every dockerd and sshd that (partial) topology files record."""
    from tools.lab.docker import DaemonInfo, stop_dockerd

    for described in (TOPOLOGY, TOPOLOGY.with_suffix(".partial")):
        if not described.exists():
            continue
        data = json.loads(described.read_text())
        for name, daemon in data.get("docker", {}).items():
            if daemon.get("in_host"):
                continue  # systemd in the host stops it when the host powers off
            # A restarted daemon's current record is in its work directory.
            current = Path(daemon["work"]) / "daemon.json"
            record = json.loads(current.read_text()) if current.exists() else daemon
            try:
                stop_dockerd(DaemonInfo.from_json(record), remove=False)  # .lab/ goes in down()
            except RuntimeError as exc:
                errors.append(f"dockerd of {name}: {exc}")
        for host in data["hosts"]:
            if host.get("boots"):
                from tools.lab.nspawn import stop

                stop(host["pid"], Path(host["state"]), Path(host["root"]), host["name"])  # the host powers off
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host["pid"], signal.SIGTERM)  # unshare and its sshd (their own session)


def _remove_host_cgroups() -> None:
    """The booting hosts' cgroups, once what a killed supervisor left running is gone too."""
    from tools.lab.nspawn import CGROUPS, remove_cgroups

    deadline = time.monotonic() + 10
    for host in (h for h in HOSTS if h.boots):
        remove_cgroups(host.name)
        while any(CGROUPS.glob(f"*/fwl-{host.name}")) and time.monotonic() < deadline:
            time.sleep(0.2)  # its processes, killed just now, may take a moment to go
            remove_cgroups(host.name)


def down() -> int:
    """Destroy the stack's resources, stop our processes by PID, delete the namespaces."""
    errors: list[str] = []
    if STATE.exists() and TOPOLOGY.exists():
        done = _applier({"action": "destroy", "state": str(STATE), "exclude_protected": True})
        if done.returncode != 0:
            errors.append(f"destroy: {done.stderr.strip()}")
    _stop_started(errors)
    remove_lab_users(errors)
    try:  # what a destroy that never ran or failed left in the kernel
        for name in remove_leftovers(LAB_DIR):
            print(f"lab-down: removed binfmt handler {name}, registered by a lab host")
    except RuntimeError as failure:
        errors.append(str(failure))
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            # Whatever still runs in a lab namespace (e.g. a wireguard-go a test started) goes too.
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "delete", name, check=False)
    _remove_host_cgroups()
    for link in ("fwl-inet0", "fwl-lan0"):
        sh("ip", "link", "delete", link, check=False)
    for directory in Path("/etc/netns").glob(f"{PREFIX}*"):
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    if LAB_LINK.is_symlink():
        LAB_LINK.unlink()
    else:  # a lab of a version that kept its files in the clone
        shutil.rmtree(LAB_LINK, ignore_errors=True)
    with contextlib.suppress(OSError):
        LAB_HOME.rmdir()  # only when no other clone's lab is in it
    for err in errors:
        print(f"lab-down: {err}", file=sys.stderr)
    print("lab-down: namespaces, processes and .lab/ removed")
    return 1 if errors else 0


REBOOT_TIMEOUT = 120.0


def reboot(names: list[str]) -> int:
    """Reboot lab hosts for real (`systemctl reboot` in each, all at once); one JSON line
    per host on stdout as soon as its sshd answers again with its own key."""
    import threading

    from tools.lab.nspawn import boot_count, inside, running

    if not TOPOLOGY.exists():
        print("lab: no lab is up (.lab/topology.json): run `make lab` first", file=sys.stderr)
        return 1
    by_name = {h["name"]: h for h in json.loads(TOPOLOGY.read_text())["hosts"]}
    chosen = list(dict.fromkeys(names))
    if names == ["all"]:
        chosen = [name for name, host in by_name.items() if host.get("boots")]
        others = [name for name, host in by_name.items() if not host.get("boots")]
        if others:
            print(f"lab: reboot all: {', '.join(others)} do not boot (no systemd in them): not rebooted",
                  file=sys.stderr)  # fmt: skip
    for name in chosen:
        if name not in by_name:
            print(f"lab: reboot: no lab host {name!r}; hosts: {', '.join(by_name)} or all", file=sys.stderr)
            return 2
        if not by_name[name].get("boots"):
            print(f"lab: reboot: lab host {name!r} does not boot (no systemd in it: README, \"The lab\")",
                  file=sys.stderr)  # fmt: skip
            return 2
    failed: list[str] = []
    printing = threading.Lock()

    def reboot_one(host: dict[str, Any]) -> None:
        state = Path(host["state"])
        before = boot_count(state)
        asked = inside(state, "systemctl", "reboot")  # its init may take the call with it: rc ignored
        deadline = time.monotonic() + REBOOT_TIMEOUT
        while boot_count(state) == before or not sshd_answers(host["address"], host["ssh_port"], host["host_key"]):
            if not running(host["pid"]) or time.monotonic() > deadline:
                why = "its supervisor ended" if not running(host["pid"]) else f"not within {REBOOT_TIMEOUT:.0f} s"
                failed.append(f"lab host {host['name']} did not come back ({why}; `systemctl reboot`: "
                              f"{asked.returncode} {asked.stderr.strip()}); see {state / 'console.log'}")  # fmt: skip
                return
            time.sleep(0.1)
        back = time.time()
        with printing:
            print(json.dumps({"host": host["name"], "sshd_back": back}), flush=True)

    threads = [threading.Thread(target=reboot_one, args=(by_name[name],)) for name in chosen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for failure in failed:
        print(f"lab: reboot: {failure}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="The forgeway lab on this machine.")
    parser.add_argument("action", choices=["up", "refresh", "down", "destroy", "reboot"])
    parser.add_argument("hosts", nargs="*", help="reboot: lab host names, or all")
    parser.add_argument("--mode", choices=["snat", "preserve-source"], help="override forwarding.mode")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a string in the lab stack"
    )
    parser.add_argument(
        "--seed", type=int, help="the apply's order seed (default: FORGEWAY_APPLY_SEED, else a fresh one, printed)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("lab: needs root (network namespaces); run as root", file=sys.stderr)
        return 1
    if args.action != "reboot" and args.hosts:
        parser.error(f"{args.action} takes no host names")
    if args.action == "reboot":
        if not args.hosts:
            parser.error("reboot: name the hosts (vps, home, runner-arm, runner-amd) or all")
        return reboot(args.hosts)
    if args.action == "up":
        return up(args.mode, args.set, args.seed)
    if args.action == "refresh":
        return refresh()
    return destroy() if args.action == "destroy" else down()


if __name__ == "__main__":
    sys.exit(main())
