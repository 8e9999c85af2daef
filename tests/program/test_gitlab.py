"""The GitLab server as the program registers it (mock monitor; nothing is created).

What is checked here is the registration: types, options, wire-format inputs and
secret markers. That the container really serves through the VPS is the lab tier's job
(tests/lab/test_lab_gitlab.py).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from components.config import PROJECT, parse_stack
from components.gitlab import CONTAINER_NAME, HEALTHCHECK, MOUNTS, SECRETS_FILE, SHM_SIZE_MB, secrets_rb
from components.render.gitlab import CONTAINER_PORTS, ruby_str
from components.tunnel import tunnel_addresses
from tests.program.conftest import Stack
from tools.stack.synth import Registration, is_secret_value, unwrap

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"


def _gitlab_host(stack: Stack) -> dict[str, Any]:
    hosts: list[dict[str, Any]] = stack.config[f"{PROJECT}:hosts"]
    return next(h for h in hosts if "gitlab" in h["roles"])


def _one(stack: Stack, type_: str) -> Registration:
    """The GitLab component's one resource of this type (runners have images and containers too)."""
    (reg,) = [r for r in stack.synth.of_type(type_) if "forgeway:gitlab:GitLabServer" in r.parent]
    return reg


def _tunnel_address(stack: Stack) -> str:
    config, _ = parse_stack(stack.config, stack.secret_keys)
    return str(tunnel_addresses(config)[_gitlab_host(stack)["name"]])


def test_image_is_the_hosts_arch_pulled_for_its_platform_through_its_provider(stack: Stack) -> None:
    host = _gitlab_host(stack)
    image = _one(stack, REMOTE_IMAGE)
    assert image.inputs["name"] == stack.config[f"{PROJECT}:gitlab"]["images"][host["arch"]]
    assert image.inputs["platform"] == f"linux/{host['arch']}"
    assert f"{host['name']}-docker" in image.provider
    assert image.inputs["keepLocally"] is True


def test_volumes_are_protected_retained_and_labelled(stack: Stack) -> None:
    volumes = {v.inputs["name"]: v for v in stack.synth.of_type(VOLUME) if "GitLabServer" in v.parent}
    assert sorted(volumes) == sorted(f"{CONTAINER_NAME}-{role}" for role in MOUNTS)
    for name, volume in volumes.items():
        assert volume.protect and volume.retain_on_delete, name
        role = name.removeprefix(f"{CONTAINER_NAME}-")
        assert volume.inputs["labels"] == [{"label": "forgeway.role", "value": f"gitlab-{role}"}]
        assert f"{_gitlab_host(stack)['name']}-docker" in volume.provider


def test_container_options_for_a_small_device(stack: Stack) -> None:
    container = _one(stack, CONTAINER)
    inputs = container.inputs
    assert inputs["name"] == CONTAINER_NAME
    assert inputs["shmSize"] >= 256 == SHM_SIZE_MB
    assert inputs["memory"] >= 2048
    assert inputs["restart"] == "unless-stopped"
    assert inputs["healthcheck"]["tests"] == list(HEALTHCHECK)
    assert {m["containerPath"] for m in inputs["volumes"]} == set(MOUNTS.values())
    assert {"label": "forgeway.role", "value": "gitlab"} in inputs["labels"]
    # The container uses the pulled image by id: what was pulled for the host's platform.
    image = _one(stack, REMOTE_IMAGE)
    assert image.urn in container.dependencies


def test_ports_bind_the_tunnel_address_only_and_land_on_the_home_ports(stack: Stack) -> None:
    container = _one(stack, CONTAINER)
    config, _ = parse_stack(stack.config, stack.secret_keys)
    expected = sorted(
        (_tunnel_address(stack), fp.home_port, CONTAINER_PORTS[fp.service]) for fp in config.forwarding.ports
    )
    got = sorted((p["ip"], int(p["external"]), int(p["internal"])) for p in container.inputs["ports"])
    assert got == expected
    assert all(p["ip"] not in ("0.0.0.0", "::", "") for p in container.inputs["ports"])  # noqa: S104
    # ports bind wg0's address: the tunnel is up first
    tunnel = next(r for r in stack.synth.resources if r.name == f"{_gitlab_host(stack)['name']}-tunnel-wg0")
    assert tunnel.urn in container.dependencies


def test_env_is_one_secret_with_the_rendered_gitlab_rb_that_ruby_parses(stack: Stack) -> None:
    container = _one(stack, CONTAINER)
    envs = container.inputs["envs"]
    assert is_secret_value(envs)
    assert {"envs", "uploads"} <= set(container.additional_secret_outputs)  # outputs echo inputs
    values = dict(e.split("=", 1) for e in unwrap(envs))
    assert set(values) == {"GITLAB_OMNIBUS_CONFIG"}  # no GITLAB_ROOT_PASSWORD: `docker inspect` shows env
    rb = values["GITLAB_OMNIBUS_CONFIG"]
    assert f"external_url 'https://{stack.config[f'{PROJECT}:gitlab']['domain']}" in rb
    assert rb.endswith(f"from_file('{SECRETS_FILE}')\n")
    done = subprocess.run(["ruby", "-c"], input=rb, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr


def _uploads(container: Registration) -> dict[str, dict[str, Any]]:
    return {u["file"]: u for u in container.inputs["uploads"]}


def test_no_secret_in_the_env_the_root_password_in_a_private_file(stack: Stack) -> None:
    container = _one(stack, CONTAINER)
    env_text = "\n".join(unwrap(container.inputs["envs"]))
    password = unwrap(stack.synth.outputs["gitlab_root_password"])
    assert password and password not in env_text
    assert "PRIVATE KEY" not in env_text and "initial_root_password" not in env_text
    upload = _uploads(container)[SECRETS_FILE]
    assert upload["permissions"] == "0600"  # the provider's default is 0644
    assert is_secret_value(upload["content"])
    assert unwrap(upload["content"]) == f"gitlab_rails['initial_root_password'] = {ruby_str(password)}\n"
    done = subprocess.run(["ruby", "-c"], input=unwrap(upload["content"]), capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr


def test_secrets_file_refuses_a_control_character_without_showing_the_password() -> None:
    with pytest.raises(ValueError, match="gitlab_root_password contains a control character") as err:
        secrets_rb("hunter2-\x04-tail")
    assert "hunter2" not in str(err.value)


def test_root_password_is_config_when_given_else_random_and_only_a_secret_output(stack: Stack) -> None:
    given = f"{PROJECT}:gitlab_root_password" in stack.config
    passwords = stack.synth.of_type("random:index/randomPassword:RandomPassword")
    randoms = [r for r in passwords if "root-password" in r.name]
    assert len(randoms) == (0 if given else 1)
    assert is_secret_value(stack.synth.outputs["gitlab_root_password"])


def test_own_ca_certificate_and_key_are_uploaded_the_key_as_a_private_secret(stack: Stack) -> None:
    container = _one(stack, CONTAINER)
    tls = stack.config[f"{PROJECT}:gitlab"].get("tls", "own-ca")
    uploads = _uploads(container)
    if tls != "own-ca":
        assert set(uploads) == {SECRETS_FILE}
        return
    domain = stack.config[f"{PROJECT}:gitlab"]["domain"]
    crt = uploads[f"/etc/gitlab/ssl/{domain}.crt"]
    assert unwrap(crt["content"]).startswith("-----BEGIN CERTIFICATE-----")
    assert crt["permissions"] == "0644"
    for name, upload in uploads.items():
        if name.endswith(".key"):  # root-owned (the provider's tar has no owner), readable by root only
            assert upload["permissions"] == "0600", name
            assert is_secret_value(upload["content"]) and "PRIVATE KEY" in unwrap(upload["content"])
    assert f"/etc/gitlab/ssl/{domain}.key" in uploads


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ({"images": {"amd64": "yrzr/gitlab-ce-arm64v8:18.5.1-ce.0"}}, "gitlab.images.amd64", "names arm64"),
        ({"external_url": "https://gitlab.forgeway.test:8443"}, "gitlab.external_url", "public https port"),
    ],
)
def test_bad_gitlab_inputs_are_config_errors_naming_the_key(change: dict[str, Any], key: str, expected: str) -> None:
    from tests.stacks import lab_stack
    from tools.stack.synth import synthesize_in_subprocess

    config, secret_keys = lab_stack()
    gitlab = dict(config[f"{PROJECT}:gitlab"])
    for k, v in change.items():
        gitlab[k] = {**gitlab[k], **v} if isinstance(v, dict) else v
    config[f"{PROJECT}:gitlab"] = gitlab
    with pytest.raises(RuntimeError) as failed:
        synthesize_in_subprocess("lab", config, secret_keys)
    message = str(failed.value)
    assert f"{PROJECT}:{key}" in message and expected in message


def test_container_registers_ports_and_healthcheck_as_the_provider_reads_them_back(stack: Stack) -> None:
    """What the provider's Read writes into the state (tools/applier/refresh.py, from
    resource_docker_container_funcs.go and flattenContainerPorts) is what the program
    registers: a create or refresh then leaves nothing for the next up to change."""
    from tools.applier.docker import go_duration_ns
    from tools.applier.refresh import go_duration, normal_ports

    inputs = _one(stack, CONTAINER).inputs
    ports = inputs["ports"]
    assert ports == normal_ports(ports)
    assert [p["internal"] for p in ports] == sorted(p["internal"] for p in ports)
    check = inputs["healthcheck"]
    durations = {k: check[k] for k in ("interval", "timeout", "startPeriod")}
    assert durations == {k: go_duration(go_duration_ns(v)) for k, v in durations.items()}
    assert durations == {"interval": "1m0s", "timeout": "30s", "startPeriod": "10m0s"}
    assert inputs["memorySwap"] == 2 * inputs["memory"]  # dockerd's default, which the read records


def test_publish_on_lan_binds_each_port_once_and_dnats_the_lan_address_to_gitlab() -> None:
    """publish_on_lan used to bind every port twice, which dockerd reads back reversed and the
    provider then replaces (issue 20). Now each internal port has one binding, as the provider
    reads it back, and the LAN address reaches GitLab's fixed IPv4 address by the forge
    host's table ip forgeway_forge; no IPv6 table without tunnel.ipv6."""
    import copy

    from tests.program.test_forge import _named
    from tests.program.test_program import _staged_files
    from tests.stacks import prod_stack
    from tools.applier.refresh import normal_ports
    from tools.stack.synth import synthesize_in_subprocess

    config, secret_keys = prod_stack()
    config = copy.deepcopy(config)
    config[f"{PROJECT}:gitlab"] = {**config[f"{PROJECT}:gitlab"], "publish_on_lan": True}
    result = synthesize_in_subprocess("prod-publish-on-lan", config, secret_keys)
    (container,) = [r for r in result.of_type(CONTAINER) if "forgeway:gitlab:GitLabServer" in r.parent]
    ports = container.inputs["ports"]
    assert ports == normal_ports(ports)
    assert len({p["internal"] for p in ports}) == len(ports)
    host = next(h for h in config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"])
    parsed, _ = parse_stack(config, secret_keys)
    assert {p["ip"] for p in ports} == {str(tunnel_addresses(parsed)[host["name"]])}
    (attached,) = container.inputs["networksAdvanced"]
    assert attached["ipv4Address"] == "172.31.254.2" and attached.get("ipv6Address") is None
    files = _staged_files(_named(result, f"{host['name']}-gitlab-nat-tables"))
    assert set(files) == {"forge-nat-up.sh", "forge4.nft"}
    for fp in parsed.forwarding.ports:
        rule = f"ip daddr {host['address']} tcp dport {fp.home_port} dnat to 172.31.254.2:{CONTAINER_PORTS[fp.service]}"
        assert rule in files["forge4.nft"], rule


def test_without_ipv6_or_lan_gitlab_stays_on_dockers_bridge_with_no_forge_nat(stack: Stack) -> None:
    """Nothing to DNAT: no network, no table, the container as before (no replace on upgrade)."""
    assert not stack.config[f"{PROJECT}:gitlab"].get("publish_on_lan")
    assert not stack.config.get(f"{PROJECT}:tunnel", {}).get("ipv6")
    assert "networksAdvanced" not in _one(stack, CONTAINER).inputs
    assert stack.synth.of_type("docker:index/network:Network") == []
    assert not [r for r in stack.synth.resources if r.name.endswith("-gitlab-nat-tables")]
