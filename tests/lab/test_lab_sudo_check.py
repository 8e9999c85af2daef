"""The apply's read-only host checks stop it before any host changes (`make lab`)."""

from __future__ import annotations

import difflib
import time
from pathlib import Path
from typing import Any

from tests.lab.make_lab import MakeLab, seen_address

WRITTEN = (
    "etc/forgeway",
    "etc/sudoers.d",
    "etc/systemd/system",
    "etc/docker",
    "etc/sysctl.d",
    "etc/wireguard",
    "run/forgeway",
)


def _hosts_as_they_are(lab: MakeLab) -> dict[str, Any]:
    """What a change on a host would touch: its files (etc and run), rulesets, policy
    rules, links, and its docker containers and volumes."""
    from tools.lab.layout import DOCKER_HOSTS

    seen: dict[str, Any] = {}
    for host in lab.topology["hosts"]:
        name = host["name"]
        machine = lab.machine(name)
        files: dict[str, object] = {}
        # Every directory forgeway's scripts write to (the rest of a booted host's /run moves with
        # its logins and timers, not with a change).
        for sub in WRITTEN:
            top = machine.path(f"/{sub}")
            for path in sorted(top.rglob("*")):
                key = f"{sub}/{path.relative_to(top)}"
                if path.is_symlink():
                    files[key] = ("link", str(path.readlink()))
                elif path.is_file():
                    files[key] = (path.stat().st_mode, path.read_bytes())
                else:
                    files[key] = path.stat().st_mode
        seen[name] = {
            "files": files,
            "nft": machine.succeed(["nft", "--stateless", "list", "ruleset"]),  # counters move with any packet
            "rules": machine.succeed(["ip", "rule"]),
            "links": machine.succeed(["ip", "-br", "link"]),
        }
        if name in DOCKER_HOSTS:
            seen[name]["containers"] = machine.docker("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}")
            seen[name]["volumes"] = machine.docker("volume", "ls", "-q")
    return seen


def _hosts_settled(lab: MakeLab, timeout: float = 60) -> dict[str, Any]:
    """The hosts once two looks a second apart agree: a destroy restarts the runners'
    dockerds (their daemon.json given back), which settle for a moment after."""
    deadline = time.monotonic() + timeout
    seen = _hosts_as_they_are(lab)
    while True:
        time.sleep(1)
        again = _hosts_as_they_are(lab)
        if again == seen:
            return seen
        assert time.monotonic() < deadline, "hosts never settled:\n" + "\n".join(_differences(seen, again))
        seen = again


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs, host by host: file names, or the lines of a listing."""
    found = []
    for host in sorted(before):
        for part in sorted(set(before[host]) | set(after[host])):
            old, new = before[host].get(part), after[host].get(part)
            if old == new:
                continue
            if isinstance(old, dict) and isinstance(new, dict):
                names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                found.append(f"{host} {part}: {names}")
            else:
                lines = difflib.unified_diff(str(old).splitlines(), str(new).splitlines(), lineterm="", n=0)
                found.append(f"{host} {part}: " + " | ".join(list(lines)[2:]))
    return found


def test_without_its_sudo_right_the_apply_stops_at_the_check_and_no_host_changes(destroyed_lab: MakeLab) -> None:
    """The deployer's VPS user loses its sudoers drop-in; a fresh apply (the stack destroyed:
    every check runs again) stops at the VPS's read-only check, says which host, user and
    sudoers line, and leaves every host as it was; with the right back it applies."""
    from tools.lab.rootfs import grant_sudo, revoke_sudo

    lab = destroyed_lab
    vps_root = Path(lab.host("vps")["root"])
    before = _hosts_settled(lab)
    revoke_sudo(vps_root, "fwl-admin")
    try:
        refused = lab.run("up")
        assert refused.returncode != 0, refused.stdout
        assert "host 'vps': user 'fwl-admin' cannot run commands as root with `sudo -n`" in refused.stderr, (
            refused.stderr[-2000:]
        )
        assert "'fwl-admin ALL=(ALL:ALL) NOPASSWD: ALL' to /etc/sudoers.d/forgeway" in refused.stderr
        after = _hosts_as_they_are(lab)
        # (the VPS boots: its sudoers is its own /etc, where the right was taken away)
        assert before["vps"]["files"].pop("etc/sudoers.d/fwl-admin")
        assert after == before, "hosts changed although a check failed:\n" + "\n".join(_differences(before, after))
    finally:
        grant_sudo(vps_root, "fwl-admin")
    lab.up()  # with the right back, the same fresh apply goes through
    assert seen_address(lab, tries=10) == "10.8.0.1"  # snat: GitLab sees the VPS's tunnel address
