"""The runner fleet as the program registers it (mock monitor; nothing runs on a host).

Checked: per runner host, the daemon.json and prune commands, the runner image for the
host's platform through its own provider, the config volume and the container: its
config.toml (parsed back with tomllib) uploaded as a secret with mode 0600, the CA for
own-ca stacks, the docker socket, the labels the policy pack reads. That the container
runs and the daemon restarts is the lab tier's job.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
import tomllib
from typing import Any

from components.config import PROJECT, Runners, parse_stack
from components.render.runner_config import CA_PATH
from components.runners import RUNNER_CONTAINER, delete_timeout
from components.scripts import decode_staged, script_command
from tests.program.conftest import Stack, _synth, as_root
from tests.stacks import prod_stack
from tools.stack.synth import Registration, is_secret_value, unwrap

COMMAND = "command:remote:Command"
CONTAINER = "docker:index/container:Container"


def _runner_hosts(stack: Stack) -> list[dict[str, Any]]:
    hosts: list[dict[str, Any]] = stack.config[f"{PROJECT}:hosts"]
    return [h for h in hosts if "runner" in h["roles"]]


def _named(stack: Stack, type_: str, name: str) -> Registration:
    (reg,) = [r for r in stack.synth.of_type(type_) if r.name == name]
    return reg


def _staged(cmd: Registration) -> dict[str, str]:
    words = shlex.split(as_root(unwrap(cmd.inputs["create"])).split("&&")[1])
    pairs = words[words.index('"$d"') + 1 :] if '"$d"' in words else words[5:]
    return {pairs[i]: decode_staged(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


def test_every_runner_host_gets_daemon_prune_image_volume_and_runner(stack: Stack) -> None:
    for host in _runner_hosts(stack):
        name = host["name"]
        for type_, suffix in [
            (COMMAND, "docker-daemon"),
            (COMMAND, "docker-prune"),
            ("docker:index/remoteImage:RemoteImage", "runner-image"),
            ("docker:index/volume:Volume", "runner-config"),
            (CONTAINER, "runner"),
        ]:
            reg = _named(stack, type_, f"{name}-{suffix}")
            if type_ != COMMAND:
                assert f"{name}-docker" in reg.provider, (name, suffix)
        image = _named(stack, "docker:index/remoteImage:RemoteImage", f"{name}-runner-image")
        assert image.inputs["platform"] == f"linux/{host['arch']}"
        assert image.inputs["name"] == stack.config[f"{PROJECT}:runners"]["images"][host["arch"]]


def test_daemon_json_carries_the_tunnel_mtu_and_the_pools(stack: Stack) -> None:
    config, _ = parse_stack(stack.config, stack.secret_keys)
    for host in _runner_hosts(stack):
        ours = json.loads(_staged(_named(stack, COMMAND, f"{host['name']}-docker-daemon"))["forgeway.json"])
        assert ours["mtu"] == config.tunnel.effective_mtu
        assert ours["default-address-pools"][0] == {"base": "172.28.0.0/14", "size": 24}
        assert ours["log-driver"] == "json-file"


def test_config_toml_is_a_secret_0600_upload_with_the_token_and_the_hosts_settings(stack: Stack) -> None:
    own_ca = stack.config[f"{PROJECT}:gitlab"].get("tls", "own-ca") == "own-ca"
    for host in _runner_hosts(stack):
        container = _named(stack, CONTAINER, f"{host['name']}-runner")
        assert container.inputs["name"] == RUNNER_CONTAINER
        assert "uploads" in container.additional_secret_outputs
        uploads = {u["file"]: u for u in container.inputs["uploads"]}
        config = uploads["/etc/gitlab-runner/config.toml"]
        assert is_secret_value(config["content"]) and config["permissions"] == "0600"
        parsed = tomllib.loads(unwrap(config["content"]))
        (runner,) = parsed["runners"]
        hand = stack.config.get(f"{PROJECT}:runner_tokens", {})
        # A hand token as given; else the UserRunner's (tests/program/test_runner_registration.py).
        assert runner["token"] == hand[host["name"]] if host["name"] in hand else runner["token"].startswith("glrt-")
        assert runner["executor"] == "docker"
        settings = host.get("runner", {})
        assert runner["docker"]["privileged"] is bool(settings.get("privileged"))
        # dind (privileged runners only) is reached over TLS with the certificates it shares here
        assert ("/certs/client" in runner["docker"]["volumes"]) is bool(settings.get("privileged"))
        assert ("tls-ca-file" in runner) is own_ca
        assert (CA_PATH in uploads) is own_ca
        labels = {label["label"]: label["value"] for label in container.inputs["labels"]}
        assert labels["forgeway.role"] == "gitlab-runner"
        protected = any(settings.get(k) for k in ("protected", "privileged", "insecure_docker_socket_in_jobs"))
        assert labels["forgeway.runner.access-level"] == ("ref_protected" if protected else "not_protected")
        assert labels["forgeway.runner.tags"].split(",")[0] == host["arch"]
        socket = next(v for v in container.inputs["volumes"] if v.get("containerPath") == "/var/run/docker.sock")
        assert socket["hostPath"] == host.get("docker_socket", "/var/run/docker.sock")


def test_multiarch_hosts_get_the_binfmt_image_and_command_for_the_other_arch(stack: Stack) -> None:
    """runner.multiarch: the pinned binfmt image pulled for the host's platform through its
    provider, then binfmt-up.sh (the library inlined) with that image's ID and the
    other arch; hosts without it get neither."""
    images = {r.name: r for r in stack.synth.of_type("docker:index/remoteImage:RemoteImage")}
    commands = {r.name: r for r in stack.synth.of_type(COMMAND)}
    multiarch = [h for h in _runner_hosts(stack) if (h.get("runner") or {}).get("multiarch")]
    for host in _runner_hosts(stack):
        name = host["name"]
        if host not in multiarch:
            assert f"{name}-binfmt" not in commands and f"{name}-binfmt-image" not in images
            continue
        image = images[f"{name}-binfmt-image"]
        assert image.inputs["name"] == stack.config[f"{PROJECT}:runners"]["binfmt_image"]
        assert image.inputs["platform"] == f"linux/{host['arch']}" and f"{name}-docker" in image.provider
        command = commands[f"{name}-binfmt"]
        assert image.urn in command.dependencies
        staged = _staged(command)
        assert set(staged) == {"binfmt-up.sh"}
        other = "arm64" if host["arch"] == "amd64" else "amd64"
        words = shlex.split(as_root(unwrap(command.inputs["create"])).split("&&")[-1])
        # the ID the provider reports for the pulled image (the mock's: a digest of its name)
        image_id = "sha256:" + hashlib.sha256(str(image.inputs["name"]).encode()).hexdigest()
        assert words[-2:] == [image_id, other], words
        assert "binfmt-down.sh" in unwrap(command.inputs["delete"])
    if stack.name == "lab":
        assert [h["name"] for h in multiarch] == ["runner-amd"]


def test_runner_container_drains_on_replace_and_delete(stack: Stack) -> None:
    """SIGQUIT (gitlab-runner's graceful stop) and runners.stop_grace_seconds as the delete's
    grace (the provider stops with it before the force remove), with a delete timeout that
    outlasts the grace period."""
    default = Runners.model_fields["stop_grace_seconds"].default
    grace = stack.config[f"{PROJECT}:runners"].get("stop_grace_seconds", default)
    for host in _runner_hosts(stack):
        container = _named(stack, CONTAINER, f"{host['name']}-runner")
        assert container.inputs["stopSignal"] == "SIGQUIT", container.urn
        assert container.inputs["destroyGraceSeconds"] == grace, container.urn
        assert "stopTimeout" not in container.inputs, container.urn
        delete = container.custom_timeouts["delete"]
        assert delete.endswith("s") and int(delete[:-1]) >= max(20 * 60, grace + 60), (container.urn, delete)


def test_runner_delete_timeout_outlasts_the_grace_period() -> None:
    assert delete_timeout(0) == "1200s"  # never below the provider's own 20 minutes
    assert delete_timeout(3600) == "3900s"
    assert delete_timeout(7200) == "7500s"


def test_runner_containers_register_the_swap_limit_dockerd_gives_them(stack: Stack) -> None:
    """Unset, memory_swap is read back as twice the memory (dockerd's default) and is a
    diff after every create and refresh; the program registers that value itself."""
    for host in _runner_hosts(stack):
        inputs = _named(stack, CONTAINER, f"{host['name']}-runner").inputs
        assert inputs["memorySwap"] == 2 * inputs["memory"]


def test_the_runner_and_its_jobs_use_the_hosts_configured_socket() -> None:
    """hosts[].docker_socket off the default path (rootless docker, say): the runner container
    gets that socket at /var/run/docker.sock and names it as its docker host, and a job
    allowed the socket gets the same one, never the host's /var/run/docker.sock."""
    config, secret_keys = prod_stack()
    config = copy.deepcopy(config)
    socket = "/run/user/1000/docker.sock"
    hosts = {h["name"]: h for h in config[f"{PROJECT}:hosts"]}
    for host in ("pi5", "builder"):
        hosts[host]["docker_socket"] = socket
    hosts["builder"]["runner"]["insecure_docker_socket_in_jobs"] = True  # a protected runner
    stack = _synth("prod", (config, secret_keys))
    for name, jobs_get_it in (("pi5", False), ("builder", True)):
        container = _named(stack, CONTAINER, f"{name}-runner")
        binds = [v for v in container.inputs["volumes"] if v.get("hostPath")]
        assert binds == [{"hostPath": socket, "containerPath": "/var/run/docker.sock"}], binds
        content = next(u["content"] for u in container.inputs["uploads"] if u["file"].endswith("/config.toml"))
        docker = tomllib.loads(unwrap(content))["runners"][0]["docker"]
        assert docker["host"] == "unix:///var/run/docker.sock"
        sockets = [v for v in docker["volumes"] if "docker.sock" in v]
        assert sockets == ([f"{socket}:/var/run/docker.sock"] if jobs_get_it else []), sockets


def test_runner_hosts_keep_their_ra_route_where_docker_forwards_ipv6(stack: Stack) -> None:
    """runners.ipv6: each runner host gets ipv6-ra-up.sh (accept_ra=2 on the uplink), and its
    daemon.json waits for it, since docker's enabling forwarding drops the RA routes of every
    interface whose accept_ra is not 2 yet; delete runs it with --restore. Off: no such command."""
    commands = {r.name: r for r in stack.synth.of_type(COMMAND)}
    ipv6 = bool(stack.config[f"{PROJECT}:runners"].get("ipv6"))
    assert ipv6 == (stack.name == "lab"), "the lab stack has runners.ipv6, prod does not: both cases are seen"
    for host in _runner_hosts(stack):
        name = host["name"]
        if not ipv6:
            assert f"{name}-ipv6-ra" not in commands
            continue
        ra = commands[f"{name}-ipv6-ra"]
        assert set(_staged(ra)) == {"ipv6-ra-up.sh"}
        assert shlex.split(as_root(unwrap(ra.inputs["create"])).split("&&")[-1])[-1].endswith("ipv6-ra-up.sh")
        assert script_command("ipv6-ra-up.sh", "--restore") in as_root(unwrap(ra.inputs["delete"])), name
        assert ra.urn in commands[f"{name}-docker-daemon"].dependencies, f"{name}: daemon.json before accept_ra=2"
    for host in stack.config[f"{PROJECT}:hosts"]:
        if "runner" not in host["roles"]:
            assert f"{host['name']}-ipv6-ra" not in commands
