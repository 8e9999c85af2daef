"""How the program acts on hosts: every Command through Host.command (components/hosts.py).

- scripts run as root through ``hosts[].become`` (sudo for a non-root ``ssh_user``), the
  read-only check as the login user;
- no Command sends its previous output by SSH setenv (``addPreviousOutputInEnv`` false);
- every change on any host waits for every host's check, so one failing check leaves
  every host unchanged.
"""

from __future__ import annotations

import shlex
from typing import Any

from components.config import PROJECT
from tests.program.conftest import Stack, as_root
from tools.stack.synth import Registration, unwrap

COMMAND = "command:remote:Command"
DOCKER_ON_HOST = (
    "docker:index/remoteImage:RemoteImage",
    "docker:index/volume:Volume",
    "docker:index/container:Container",
)


def _host_of(stack: Stack, cmd: Registration) -> dict[str, Any]:
    address = unwrap(cmd.inputs["connection"])["host"]
    (host,) = [h for h in stack.config[f"{PROJECT}:hosts"] if h["address"] == address]
    found: dict[str, Any] = host
    return found


def _become(host: dict[str, Any]) -> str:
    return str(host.get("become") or ("none" if host.get("ssh_user", "root") == "root" else "sudo"))


def test_no_command_sends_its_previous_output_by_ssh_setenv(stack: Stack) -> None:
    commands = stack.synth.of_type(COMMAND)
    assert commands
    for cmd in commands:
        assert cmd.inputs.get("addPreviousOutputInEnv") is False, cmd.urn


def test_every_change_runs_through_become_and_the_check_as_the_login_user(stack: Stack) -> None:
    seen = set()
    for cmd in stack.synth.of_type(COMMAND):
        host = _host_of(stack, cmd)
        become = _become(host)
        seen.add(become)
        scripts = [unwrap(cmd.inputs["create"]), unwrap(cmd.inputs.get("delete") or "")]
        if cmd.name.endswith("-arch"):
            assert not scripts[0].startswith("sudo"), cmd.urn
            docker = "docker" if {"gitlab", "runner"} & set(host["roles"]) else "no-docker"
            assert scripts[0].endswith(f" {become} {docker}"), cmd.urn
            continue
        for script in filter(None, scripts):
            wrapped = script.startswith("{ sudo -n true 2>/dev/null || ")
            assert wrapped == (become == "sudo"), f"{cmd.urn}: become {become}, script {script[:60]}..."
            if wrapped:
                # A refused sudo names the host, the user and the sudoers line.
                user = host.get("ssh_user", "root")
                words = shlex.split(script.split(" && sudo -n -- env ")[0])
                said = words[words.index("echo") + 1]
                assert f"host '{host['name']}': user '{user}' cannot run commands as root" in said, cmd.urn
                assert f"'{user} ALL=(ALL:ALL) NOPASSWD: ALL'" in said, cmd.urn
                # FORGEWAY_* and DOCKER_HOST are handed through sudo's env_reset, only if set.
                assert '${FORGEWAY_ETC+"FORGEWAY_ETC=$FORGEWAY_ETC"}' in script, cmd.urn
                assert '${DOCKER_HOST+"DOCKER_HOST=$DOCKER_HOST"}' in script, cmd.urn
                assert as_root(script) != script, cmd.urn
    if stack.name in ("prod", "lab"):
        # Both example stacks connect as non-root users with sudo, as real hosts have them.
        assert seen == {"sudo"}, seen


def test_every_host_change_waits_for_every_hosts_read_only_check(stack: Stack) -> None:
    checks = {c.urn for c in stack.synth.of_type(COMMAND) if c.name.endswith("-arch")}
    assert len(checks) == len(stack.config[f"{PROJECT}:hosts"])
    changes = [c for c in stack.synth.of_type(COMMAND) if c.urn not in checks]
    changes += [r for t in DOCKER_ON_HOST for r in stack.synth.of_type(t)]
    assert changes
    for change in changes:
        missing = checks - set(change.dependencies)
        assert not missing, f"{change.urn} does not wait for {sorted(missing)}"
