"""components.config: valid variants of prod, the values derived from them, the message format.

The bad-config corpus is in test_config_corpus.py; patches over prod in config_patches.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from components.config import ConfigError, RunnerSettings, StackConfig, parse_stack
from tests.stacks import ROOT
from tests.unit.config_patches import Config, apply_patch

pytestmark = pytest.mark.unit


# --- valid configs -------------------------------------------------------------------------


def test_prod_parses_with_its_key_facts(prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, {})
    stack, secrets = parse_stack(patched.config, patched.secret_keys)
    assert [h.name for h in stack.hosts] == ["vps", "jetson", "pi5", "builder"]
    assert stack.vps.name == "vps" and stack.vps.ssh_port == 2202
    assert (stack.gitlab_host.name, stack.gitlab_host.arch) == ("jetson", "arm64")
    assert stack.tunnel.mtu is None and stack.tunnel.uplink_mtu == 1500
    assert stack.tunnel.effective_mtu == 1420
    ports = {p.service: (p.public, p.home_port) for p in stack.forwarding.ports}
    assert ports == {"http": (80, 80), "https": (443, 443), "ssh": (22, 2222), "registry": (5050, 5050)}
    assert set(secrets) == {"ssh_private_key", "gitlab_root_password", "backup_password", "runner_tokens"}
    assert set(secrets["runner_tokens"]) == {h.name for h in stack.hosts_with("runner")} == {"pi5", "builder"}
    assert patched.config == prod[0], "parse_stack changed its input"


# --- derived values: each defined once, on the model --------------------------------------

DERIVED: list[Any] = [
    pytest.param(
        {},
        {
            "gitlab_url": "https://gitlab.example.org",
            "served_domains": ["gitlab.example.org", "registry.example.org"],
            "registry_domain": "registry.example.org",
            "admin_ssh_port": 2202,
            "tunnel_endpoint_host": "vps.example.org",
        },
        id="prod",
    ),
    pytest.param(
        {"set": {"forgeway:forwarding.ports[1].public": 8443}},
        {"gitlab_url": "https://gitlab.example.org:8443", "default_gitlab_url": "https://gitlab.example.org:8443"},
        id="https-off-443-in-the-url",
    ),
    pytest.param(
        {"set": {"forgeway:gitlab.external_url": "https://gitlab.example.org/git"}},
        {"gitlab_url": "https://gitlab.example.org/git", "default_gitlab_url": "https://gitlab.example.org"},
        id="external-url-wins",
    ),
    pytest.param(
        {"set": {"forgeway:registry": {"enabled": False}}, "delete": ["forgeway:forwarding.ports[3]"]},
        {"served_domains": ["gitlab.example.org"], "registry_domain": "gitlab.example.org"},
        id="no-registry-no-registry-name",
    ),
    pytest.param(
        {"set": {"forgeway:registry.domain": "gitlab.example.org"}},
        {"served_domains": ["gitlab.example.org"]},
        id="registry-on-gitlab-domain-named-once",
    ),
    pytest.param(
        {"set": {"forgeway:tunnel.endpoint": "wg.example.org"}},
        {"tunnel_endpoint_host": "wg.example.org"},
        id="tunnel-endpoint-wins",
    ),
    pytest.param(
        {"delete": ["forgeway:hosts[0].public_address"]},
        {"tunnel_endpoint_host": "203.0.113.10"},
        id="endpoint-falls-back-to-the-vps-address",
    ),
]


@pytest.mark.parametrize(("patch", "want"), DERIVED)
def test_derived_values(patch: dict[str, Any], want: dict[str, Any], prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, patch)
    stack, _ = parse_stack(patched.config, patched.secret_keys)
    assert {name: getattr(stack, name) for name in want} == want


def test_derived_port_and_runner_defaults(prod: tuple[Config, list[str]]) -> None:
    no_registry = {"set": {"forgeway:registry.enabled": False}, "delete": ["forgeway:forwarding.ports[3]"]}
    patched = apply_patch(prod, no_registry)
    stack, _ = parse_stack(patched.config, patched.secret_keys)
    assert (stack.forwarding.public_port("registry"), stack.forwarding.public_port("ssh")) == (None, 22)
    assert stack.host("vps").effective_runner == RunnerSettings(), "a host without runner options has the defaults"
    assert stack.host("builder").effective_runner.privileged, "set runner options are the ones in force"


DIGEST = "sha256:" + "0123456789abcdef" * 4
WG_KEY = "YE4pDF6Y7WcEfVq3J1yH6rn4mhU/PKKfk0Wv8cTqG1E="  # 32 bytes, base64
CA_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
HOST_KEYS = [f"forgeway:hosts[{i}].host_key" for i in range(4)]
DEFAULT_PORTS = {"http": (80, 80), "https": (443, 443), "ssh": (22, 2222), "registry": (5050, 5050)}

Check = Callable[[StackConfig, dict[str, Any]], bool]
VALID: list[Any] = [
    pytest.param(
        {"set": {"forgeway:gitlab.images.arm64": f"yrzr/gitlab-ce-arm64v8@{DIGEST}"}},
        lambda s, _: s.gitlab.images["arm64"].endswith(DIGEST),
        id="digest-pinned-image",
    ),
    pytest.param(
        {"set": {"forgeway:runners.images.amd64": f"gitlab/gitlab-runner:v18.5.0@{DIGEST}"}},
        lambda s, _: s.runners.images["amd64"].endswith(DIGEST),
        id="tag-and-digest-pinned-image",
    ),
    pytest.param(
        {"set": {"forgeway:gitlab.images.amd64": "registry.example.org:5000/mirror/gitlab-ce:18.5.1-ce.0"}},
        lambda s, _: s.gitlab.images["amd64"].startswith("registry.example.org:5000/"),
        id="versioned-image-from-a-registry-with-a-port",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[1].arch": "aarch64"}},
        lambda s, _: s.host("jetson").arch == "arm64",
        id="arch-alias-aarch64-is-arm64",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[3].arch": "x86_64"}},
        lambda s, _: s.host("builder").arch == "amd64",
        id="arch-alias-x86_64-is-amd64",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[2].jump_host": "jetson"}},
        lambda s, _: s.host("pi5").jump_host == "jetson",
        id="jump-host",
    ),
    pytest.param(
        {"set": {"forgeway:insecure_unpinned_host_keys": True}, "delete": HOST_KEYS},
        lambda s, _: s.insecure_unpinned_host_keys and all(h.host_key is None for h in s.hosts),
        id="opt-out-insecure-unpinned-host-keys-without-host-keys",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[0].ssh_port": 22, "forgeway:forwarding.ports[2].public": 2222}},
        lambda s, _: s.forwarding.port("ssh").public == 2222 and s.vps.ssh_port == 22,
        id="git-ssh-on-2222-with-vps-sshd-on-22",
    ),
    pytest.param(
        {"set": {"forgeway:tunnel.mtu": 1440}},
        lambda s, _: s.tunnel.effective_mtu == 1440,
        id="explicit-mtu-at-uplink-minus-60",
    ),
    pytest.param(
        {"set": {"forgeway:tunnel.uplink_mtu": 1492}},
        lambda s, _: s.tunnel.effective_mtu == 1412,
        id="pppoe-uplink-derives-mtu",
    ),
    pytest.param(
        {"set": {"forgeway:tunnel.subnet": "10.8.0.0/29"}},
        lambda s, _: str(s.tunnel.subnet) == "10.8.0.0/29",
        id="smallest-tunnel-subnet-for-four-hosts",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[1].tunnel_address": "10.8.0.10", "forgeway:hosts[2].tunnel_address": "10.8.0.11"}},
        lambda s, _: str(s.host("jetson").tunnel_address) == "10.8.0.10",
        id="pinned-tunnel-addresses",
    ),
    pytest.param(
        {"set": {"forgeway:hosts[0].address": "2001:db8::10"}},
        lambda s, _: s.vps.address == "2001:db8::10",
        id="ipv6-vps-address",
    ),
    pytest.param(
        {
            "set": {"forgeway:registry": {"enabled": False}},
            "delete": ["forgeway:forwarding.ports[3]"],
        },
        lambda s, _: not s.registry.enabled and s.forwarding.port("registry") is None,
        id="registry-disabled-without-its-port",
    ),
    pytest.param(
        {
            "set": {"forgeway:gitlab.tls": "own-ca", "forgeway:ca_private_key": CA_KEY},
            "secret": ["forgeway:ca_private_key"],
        },
        lambda s, sec: s.gitlab.tls == "own-ca" and sec["ca_private_key"] == CA_KEY,
        id="own-ca-with-its-key",
    ),
    pytest.param(
        {"set": {"forgeway:wireguard_private_keys": {"vps": WG_KEY}}, "secret": ["forgeway:wireguard_private_keys"]},
        lambda _, sec: sec["wireguard_private_keys"] == {"vps": WG_KEY},
        id="wireguard-key-for-a-host",
    ),
    pytest.param(
        {"delete": ["forgeway:tunnel", "forgeway:forwarding"]},
        lambda s, _: (
            s.tunnel.effective_mtu == 1420
            and s.forwarding.mode == "preserve-source"
            and {p.service: (p.public, p.home_port) for p in s.forwarding.ports} == DEFAULT_PORTS
        ),
        id="defaults-for-tunnel-and-forwarding",
    ),
    pytest.param(
        {"delete": ["forgeway:ssh_private_key", "forgeway:gitlab_root_password"]},
        lambda _, sec: set(sec) == {"runner_tokens", "backup_password"},
        id="optional-secrets-left-out",
    ),
    pytest.param(
        {"set": {"docker:host": "unix:///var/run/docker.sock"}},
        lambda _s, _sec: True,
        id="provider-config-is-not-checked",
    ),
    pytest.param(
        {"set": {"forgeway:gitlab.domain": "GitLab.Example.ORG"}},
        lambda s, _: s.gitlab.domain == "gitlab.example.org",
        id="domain-is-lowercased",
    ),
]


@pytest.mark.parametrize(("patch", "check"), VALID)
def test_valid_variant_parses(patch: dict[str, Any], check: Check, prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, patch)
    assert patched.config != prod[0] or patched.secret_keys != prod[1], "the variant changes nothing"
    try:
        stack, secrets = parse_stack(patched.config, patched.secret_keys)
    except ConfigError as exc:
        pytest.fail(f"a valid variant is refused:\n{exc}")
    assert check(stack, secrets)


# --- the message -------------------------------------------------------------------------


def test_message_names_key_expectation_and_given_value(prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, {"set": {"forgeway:hosts[1].arch": "armv7", "forgeway:tunnel.keepalive": 0}})
    with pytest.raises(ConfigError) as info:
        parse_stack(patched.config, patched.secret_keys)
    text = str(info.value)
    assert text.startswith("the stack config has 2 problem(s); nothing was changed:\n")
    assert re.search(r'^  - forgeway:hosts\[1\]\.arch: \S.*32-bit ARM.* \(got "armv7"\)$', text, re.MULTILINE)
    assert re.search(r"^  - forgeway:tunnel\.keepalive: \S.* \(got 0\)$", text, re.MULTILINE)


_ORDER_PROBE = """
from components.config import ConfigError, Problem
problems = [Problem("forgeway:hosts", "[]", f"exactly one host with role {r!r} (found 0)") for r in ("vps", "gitlab")]
print(str(ConfigError(problems)))
"""


def test_message_order_does_not_depend_on_the_hash_seed() -> None:
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _ORDER_PROBE],
            cwd=ROOT,
            env={"PYTHONHASHSEED": str(seed), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(1, 5)
    ]
    outputs = {run.communicate(timeout=30)[0] for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(outputs) == 1, outputs
