"""A dead device and its replacement, in the lab: ``python -m tools.lab wipe HOST``.

The host powers off and its whole disk goes: its root (and with it its docker's data:
images, containers, volumes, GitLab's among them) and its SSH host key. A new device
takes its place on the same address, as a user's replacement would: a fresh root from
the cached root file system (tools/lab/rootfs.py), a new SSH host key, the deployer's
login user with its key (what a user sets up on a new device before `pulumi up`), its
docker started by its systemd, and the lab's images loaded into it (the lab cannot pull;
a real device pulls them at `up`). topology.json records the new host and its host key,
which tools.lab.config pins in the lab stack's config: the "pin its host key" step.

The stack's state still holds the dead host's resources: forgetting them is the next
step (`pulumi state delete`, emulated by ``python -m tools.applier state-delete``;
docs/operations.md, "When the GitLab device died").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tools.lab.layout import DOCKER_HOSTS, HOSTS, LAB_DIR, RUNNER_HOSTS, TOPOLOGY

__all__ = ["dead_host_resources", "wipe"]


def _unmount_under(path: Path) -> None:
    """Whatever is still mounted under ``path`` (none, after an orderly poweroff), deepest first."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if Path(m).is_relative_to(path)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _load_images(name: str, daemon: dict[str, Any]) -> None:
    """The images `make lab` loads on this host (tools/lab/hosts.py start_docker_hosts)."""
    from tools.lab.docker import DaemonInfo
    from tools.lab.images import GITLAB_STANDIN, RUNNER_STANDIN, ensure_image, ensure_image_as

    info = DaemonInfo.from_json(daemon)
    if name in RUNNER_HOSTS:
        ensure_image_as(info, RUNNER_STANDIN, RUNNER_HOSTS[name])
    else:
        ensure_image(info, GITLAB_STANDIN)


def wipe(name: str) -> dict[str, Any]:
    """Replace lab host ``name`` by a new, empty device; its new topology record."""
    from tools.lab.hosts import booted_dockerd, start_booting_host, wait_booted
    from tools.lab.nspawn import stop

    topology: dict[str, Any] = json.loads(TOPOLOGY.read_text())
    by_name = {h["name"]: h for h in topology["hosts"]}
    if name not in by_name:
        raise ValueError(f"no lab host {name!r}; hosts: {', '.join(by_name)}")
    if name == "runner-amd":
        raise ValueError("runner-amd carries the lab's binfmt and arm64 images: wipe another host")
    old = by_name[name]
    stop(old["pid"], Path(old["state"]), Path(old["root"]), name)
    work = LAB_DIR / "hosts" / name
    _unmount_under(work)
    shutil.rmtree(work)
    spec = next(s for s in HOSTS if s.name == name)
    deployer_pub = " ".join((LAB_DIR / "deployer.pub").read_text().split()[:2])
    new = start_booting_host(spec, work, deployer_pub)
    topology["hosts"] = [new if h["name"] == name else h for h in topology["hosts"]]
    TOPOLOGY.write_text(json.dumps(topology, indent=1) + "\n")  # the new PID at once: lab-down stops it
    wait_booted(new)
    if name in DOCKER_HOSTS:
        topology["docker"][name] = booted_dockerd(new)
        TOPOLOGY.write_text(json.dumps(topology, indent=1) + "\n")
        _load_images(name, topology["docker"][name])
    return new


def dead_host_resources(entries: dict[str, Any], host: str, address: str) -> list[str]:
    """The state keys a user forgets for a dead ``host`` (docs/operations.md): every resource
    made on it (its Commands, and what its docker provider made, with that provider), but
    its read-only check ``<host>-arch``, which every host's change depends on and which `up`
    runs again on the new device (its pinned host key changed)."""
    provider = f"pulumi:providers:docker::{host}-docker"
    provider_id = entries.get(provider, {}).get("id", "")
    found = [provider] if provider in entries else []
    for key, entry in entries.items():
        connection = (entry.get("inputs") or {}).get("connection") or {}
        on_host = entry["type"] == "command:remote:Command" and connection.get("host") == address
        made_there = bool(provider_id) and str(entry.get("provider", "")).endswith(f"::{provider_id}")
        if (on_host and entry["name"] != f"{host}-arch") or made_there:
            found.append(key)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.lab wipe HOST (vps, home, runner-arm)", file=sys.stderr)
        return 2
    if not TOPOLOGY.exists():
        print("lab: no lab is up (.lab/topology.json): run `make lab` first", file=sys.stderr)
        return 1
    try:
        new = wipe(argv[0])
    except (ValueError, RuntimeError) as exc:
        print(f"lab: wipe: {exc}", file=sys.stderr)
        return 1
    print(f"lab: {new['name']} is a new empty device; its SSH host key: {new['host_key']}")
    return 0
