"""The program applied by the lab applier (tools/applier) to namespace hosts over SSH.

What runs for real: the program under the mock monitor, the applier's ssh to each
namespace's own sshd with the connection the program built (pinned host key, the
stack's private key through an agent), each host's arch check, its wg0
(wireguard-go), the VPS's forwarding rules, the docker hosts' trust of the CA, and
GitLab's image, volumes and container on the GitLab host's own dockerd (reached, as the
docker provider does, over ssh with `docker system dial-stdio`). These hosts are not
linked to each other: the end-to-end data path is tested on the `make lab` topology
(tests/lab/test_lab_*.py).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.lab.netns import Lab, LabHost, generate_key
from tests.stacks import ROOT, lab_stack
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import GITLAB_STANDIN, ensure_image
from tools.stack.synth import stack_config_strings

DOCKER_INDEX = 12  # this module's bridge subnets (tools/lab/docker.py), apart from other tests'


def _stack_for(
    lab: Lab, tmp_path: Path, host_key_type: str = "ed25519"
) -> tuple[dict[str, Any], list[str], dict[str, LabHost]]:
    """Pulumi.lab.yaml with its hosts pointed at fresh namespace hosts (each with one host
    key, of ``host_key_type``), reached as root: the non-root users and their sudo are
    `make lab`'s (tests/lab/test_lab_*.py), these hosts authorize root only."""
    config, secret_keys = lab_stack()
    # The VPS and the GitLab host only: runner hosts (their daemon.json, runner container
    # and prune timer) are applied on the `make lab` topology (tests/lab/test_lab_*.py).
    config["forgeway:hosts"] = [h for h in config["forgeway:hosts"] if "runner" not in h["roles"]]
    config.pop("forgeway:runner_tokens", None)
    # Backups off: these namespace hosts share the machine's /etc (users, sshd), and the
    # backup's SFTP user is a real user of the VPS; backups are applied on the booting
    # `make lab` hosts (make lab, the drill) and tested in test_backup_scripts.py.
    config["forgeway:backup"] = {"enabled": False}
    config.pop("forgeway:backup_password", None)
    secret_keys = [k for k in secret_keys if k not in ("forgeway:runner_tokens", "forgeway:backup_password")]
    deployer_key = tmp_path / "deployer"
    deployer_pub = generate_key(deployer_key)
    hosts: dict[str, LabHost] = {}
    for i, host in enumerate(config["forgeway:hosts"]):
        port = host.get("ssh_port", 22)
        # GitLab's host runs a dockerd of its own, found by `docker system dial-stdio` in SSH sessions.
        # (a short path: containerd's sockets under it must fit sun_path's 108 bytes)
        socket = lab.work_dir / "dk" / "docker.sock"
        extra_env = {"DOCKER_HOST": f"unix://{socket}"} if "gitlab" in host["roles"] else None
        lab_host = lab.add_host(
            f"h{i}", f"203.0.113.{160 + i}", port=port, extra_env=extra_env, host_key_types=(host_key_type,)
        )
        if extra_env is not None:
            daemon = start_dockerd(lab_host.netns, socket.parent, index=DOCKER_INDEX)
            lab._push(f"stop dockerd {daemon.pid}", functools.partial(stop_dockerd, daemon))
            ensure_image(daemon, GITLAB_STANDIN)
        # One deployer key for every host, as in production.
        with (lab_host.work_dir / "authorized_keys").open("a") as keys:
            keys.write(deployer_pub + "\n")
        host.update(address=lab_host.address, host_key=lab_host.host_key, arch="amd64")
        host.pop("ssh_user", None)
        hosts[host["name"]] = lab_host
    config["forgeway:ssh_private_key"] = deployer_key.read_text()
    return config, secret_keys, hosts


def _apply(config: dict[str, Any], secret_keys: list[str], state: Path, action: str = "apply") -> tuple[int, str, str]:
    request = {
        "action": action.removesuffix("-excluding-protected"),
        "exclude_protected": action.endswith("-excluding-protected"),
        "stack": "lab",
        "config": stack_config_strings(config),
        "secret_keys": secret_keys,
        "state": str(state),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tools.applier"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def _ops(stdout: str) -> list[tuple[str, str, str]]:
    return [(c["op"], c["type"], c["name"]) for c in map(json.loads, stdout.splitlines())]


def test_apply_checks_every_host_then_reapply_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    config, secret_keys, hosts = _stack_for(lab, tmp_path)
    state = tmp_path / "state.json"
    rc, out, err = _apply(config, secret_keys, state)
    assert rc == 0, err
    creates = {name for op, typ, name in _ops(out) if op == "create" and typ == "command:remote:Command"}
    tunnels = {"tunnel-wg0"} | {f"{name}-tunnel-wg0" for name in hosts if name != "vps"}
    trust = {f"{name}-docker-client" for name in hosts if name != "vps"}  # docker hosts, own CA
    segments = {f"{name}-segment" for name in hosts}  # the tunnel's filter on every host
    # The upgrade guard on the GitLab host: its read-only check, the pre-upgrade backup step
    # (with backups off it checks for a recorded manual backup only on an upgrade) and the wait.
    upgrade = {f"home-gitlab-{step}" for step in ("upgrade-check", "pre-upgrade-backup", "upgrade-wait")}
    registry_gc = {"home-registry-gc"}  # its timer on the GitLab host, on by default
    # The forge-switch check (read-only): Gitea's volumes on the forge host hold no data.
    forge_check = {"home-forge-check"}
    host_steps = tunnels | {"vps-forwarding"} | trust | segments | upgrade | registry_gc | forge_check
    assert creates == {f"{name}-arch" for name in hosts} | host_steps
    docker = {name for op, typ, name in _ops(out) if op == "create" and typ.startswith("docker:index/")}
    assert docker == {f"home-gitlab{part}" for part in ("-image", "-config", "-logs", "-data", "")}
    for name, host in hosts.items():
        assert host.machine.execute(["ip", "link", "show", "wg0"]).returncode == 0, f"no wg0 on {name}"
    assert state.stat().st_mode & 0o077 == 0, "state holds secrets: owner-only"

    rc, out, err = _apply(config, secret_keys, state)
    assert rc == 0, err
    assert {op for op, _, _ in _ops(out)} == {"same"}, out


def test_an_ecdsa_pin_works_for_commands_and_for_docker(lab: Lab, tmp_path: Path) -> None:
    """pulumi-command offers only the pinned key's type as host key algorithm
    (provider/pkg/provider/remote/connection.go); ecdsa-sha2-nistp256 is an algorithm of
    its own (no SHA-1, unlike ssh-rsa, which config refuses), so hosts whose sshd has
    only an ECDSA key are applied: the commands through the applier's ssh, GitLab's image,
    volumes and container through the docker provider's ssh options (render/ssh.py)."""
    config, secret_keys, hosts = _stack_for(lab, tmp_path, host_key_type="ecdsa")
    assert all(h["host_key"].startswith("ecdsa-sha2-nistp256 ") for h in config["forgeway:hosts"])
    rc, out, err = _apply(config, secret_keys, tmp_path / "state.json")
    assert rc == 0, err
    created = {(typ, name) for op, typ, name in _ops(out) if op == "create"}
    assert {("command:remote:Command", f"{name}-arch") for name in hosts} <= created
    assert ("docker:index/container:Container", "home-gitlab") in created


def test_wrong_host_key_stops_with_the_host_and_step_and_next_apply_converges(lab: Lab, tmp_path: Path) -> None:
    config, secret_keys, hosts = _stack_for(lab, tmp_path)
    state = tmp_path / "state.json"
    good_key = config["forgeway:hosts"][1]["host_key"]
    config["forgeway:hosts"][1]["host_key"] = lab.spare_host_key()
    rc, _, err = _apply(config, secret_keys, state)
    assert rc == 1
    name = config["forgeway:hosts"][1]["name"]
    assert f"{name}-arch: `create` failed on host {hosts[name].address}" in err
    assert "Host key verification failed" in err

    config["forgeway:hosts"][1]["host_key"] = good_key
    rc, out, err = _apply(config, secret_keys, state)
    assert rc == 0, err
    assert ("create", "command:remote:Command", f"{name}-arch") in _ops(out)


def test_a_host_whose_cpu_is_not_its_configured_arch_is_refused(lab: Lab, tmp_path: Path) -> None:
    config, secret_keys, _ = _stack_for(lab, tmp_path)
    config["forgeway:hosts"][0]["arch"] = "arm64"
    rc, _, err = _apply(config, secret_keys, tmp_path / "state.json")
    assert rc == 1
    assert "host 'vps' is x86_64 (amd64), but the stack config says arch: arm64" in err


def test_an_unreachable_host_is_named(lab: Lab, tmp_path: Path) -> None:
    config, secret_keys, hosts = _stack_for(lab, tmp_path)
    # A port nothing listens on, in a lab namespace: the only traffic is to the lab.
    config["forgeway:hosts"][1]["ssh_port"] = 2299
    rc, _, err = _apply(config, secret_keys, tmp_path / "state.json")
    assert rc == 1
    name = config["forgeway:hosts"][1]["name"]
    assert f"{name}-arch: `create` failed on host {hosts[name].address}" in err
    assert "Connection refused" in err


def test_destroy_refuses_protected_volumes_unless_excluded_and_then_keeps_them(lab: Lab, tmp_path: Path) -> None:
    config, secret_keys, _ = _stack_for(lab, tmp_path)
    state = tmp_path / "state.json"
    assert _apply(config, secret_keys, state)[0] == 0
    # As `pulumi destroy`: GitLab's volumes are protected, so a plain destroy stops at them.
    rc, _, err = _apply(config, secret_keys, state, action="destroy")
    assert rc == 1
    assert "protect" in err and "home-gitlab-" in err, err
    # As `pulumi destroy --exclude-protected`: everything else goes; the volumes stay, and it says so.
    rc, out, err = _apply(config, secret_keys, state, action="destroy-excluding-protected")
    assert rc == 0, err
    assert {op for op, _, _ in _ops(out)} <= {"delete"}
    left = sorted(json.loads(state.read_text())["entries"])
    assert left == [f"docker:index/volume:Volume::home-gitlab-{role}" for role in ("config", "data", "logs")]
    for role in ("config", "data", "logs"):
        assert f"home-gitlab-{role}" in err and "protected" in err, err
