"""The `make lab` topology's fixed facts: where the lab lives, its addresses, hosts and users."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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
# The internet segment's IPv6 (documentation prefix 2001:db8::/32; /64, beside INTERNET's /24).
INTERNET_V6 = "2001:db8::"
# The IPv6-only runner's network behind the ISP's router (the CGNAT, ::1 on it): no IPv4 at all.
V6ONLY_LAN = "2001:db8:6::"


@dataclass(frozen=True)
class HostSpec:
    name: str  # the stack's host name
    segment: str  # "internet", "lan" or "v6only" (IPv6 only, behind the CGNAT's router)
    address: str  # what the deployer's SSH dials (through ``jump`` where set)
    ssh_port: int
    fake_machine: str | None = None  # what `uname -m` says in SSH sessions
    address6: str | None = None  # its IPv6 address on its segment, where it has one
    jump: str | None = None  # the host the deployer reaches it through (hosts[].jump_host)


HOSTS = (
    HostSpec("vps", "internet", f"{INTERNET}.10", 2202, address6=f"{INTERNET_V6}10"),
    HostSpec("home", "lan", f"{LAN}.2", 22),
    # IPv6-only on its uplink (issue 20): reached through the VPS, it dials the tunnel over IPv6.
    HostSpec(
        "runner-arm", "v6only", f"{V6ONLY_LAN}2", 22, fake_machine="aarch64", address6=f"{V6ONLY_LAN}2", jump="vps"
    ),
    HostSpec("runner-amd", "lan", f"{LAN}.4", 22),
)
# Hosts with a dockerd of their own (index: their bridge subnets, tools/lab/docker.py);
# the client gets one too, as a laptop would have, to log in to the registry.
DOCKER_HOSTS = {"home": 1, "runner-arm": 2, "runner-amd": 3}
# Runner hosts: forgeway manages their daemon.json, so dockerd reads it (and restarts on change).
RUNNER_HOSTS = {"runner-arm": "arm64", "runner-amd": "amd64"}
SEEDED_DAEMON_JSON = '{\n  "labels": ["lab=seeded-by-the-host"]\n}\n'
CLIENT_DOCKER_INDEX = 4
# What DNS would say: GitLab's and the registry's names are the VPS's public address.
PUBLIC_NAMES = ("gitlab.forgeway.test", "registry.forgeway.test", "gitea.forgeway.test")  # the last: forge gitea
CLIENT, CLIENT_V6 = f"{INTERNET}.100", f"{INTERNET_V6}100"
VPS_ADDRESS, VPS_ADDRESS_V6 = f"{INTERNET}.10", f"{INTERNET_V6}10"
CGNAT_WAN, CGNAT_LAN, HOMEGW_WAN = f"{INTERNET}.20", "100.64.0.1", "100.64.0.2"
CGNAT_WAN_V6 = f"{INTERNET_V6}20"  # the ISP's router on the internet side
DEPLOYER_INTERNET, DEPLOYER_LAN = f"{INTERNET}.254", f"{LAN}.254"
DEPLOYER_INTERNET_V6 = f"{INTERNET_V6}254"
# The deployer's login user on each host (Pulumi.lab.yaml hosts[].ssh_user), in the host's own root.
BOOTING_HOST_USERS = {"vps": "fwl-admin", "home": "fwl-forgeway", "runner-arm": "fwl-forgeway",
                      "runner-amd": "fwl-forgeway"}  # fmt: skip
