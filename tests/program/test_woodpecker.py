"""Woodpecker CI on a Gitea stack (components/woodpecker.py) as the program registers it:
Pulumi.gitea-example.yaml with a ``woodpecker`` section and a ``ci`` forwarded port, under
the mock monitor (nothing is created; the OAuth flow and the agents' connection are the
lab's to show, with the stand-ins)."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest

from components.config import PROJECT
from components.gitea import CONTAINER_NAME as GITEA_CONTAINER
from components.woodpecker import AGENT_CONTAINER, AGENT_SECRET_FILE, APP_NAME, SERVER_CONTAINER
from policies import rules
from tests.policies.harness import run_policies, specs_from_synthesis
from tests.program.conftest import Stack, as_root
from tests.program.leaks import plaintext_leaks
from tests.stacks import gitea_stack
from tools.stack.synth import Registration, is_secret_value, synthesize_in_subprocess, unwrap

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
SERVER_IMAGE = "woodpeckerci/woodpecker-server:v2.8.3"
AGENT_IMAGE = "woodpeckerci/woodpecker-agent:v2.8.3"
URL = "https://ci.example.org:8443"


def with_woodpecker(loaded: tuple[dict[str, Any], list[str]]) -> tuple[dict[str, Any], list[str]]:
    """A Gitea stack with a woodpecker section (its own name) and a ci port (8443)."""
    config, secret_keys = loaded
    config = copy.deepcopy(config)
    images = {"arm64": SERVER_IMAGE, "amd64": SERVER_IMAGE}
    agents = {"arm64": AGENT_IMAGE, "amd64": AGENT_IMAGE}
    config[f"{PROJECT}:woodpecker"] = {"server_images": images, "agent_images": agents, "domain": "ci.example.org"}
    config[f"{PROJECT}:forwarding"]["ports"].append({"service": "ci", "public": 8443})
    return config, secret_keys


@pytest.fixture(scope="module")
def wp(gitea_woodpecker: Stack) -> Stack:
    return gitea_woodpecker


def _named(stack: Stack, name: str) -> Registration:
    (reg,) = [r for r in stack.synth.resources if r.name == name and r.custom]
    return reg


def _env(reg: Registration) -> dict[str, str]:
    envs: list[str] = unwrap(reg.inputs["envs"])
    return dict(e.split("=", 1) for e in envs)


def test_the_oauth_app_is_made_by_a_command_with_the_token_on_stdin(wp: Stack) -> None:
    oauth = _named(wp, "jetson-woodpecker-oauth")
    create = shlex.split(as_root(unwrap(oauth.inputs["create"])))
    assert create[-5:] == ["up", GITEA_CONTAINER, APP_NAME, f"{URL}/authorize", "900"]
    delete = shlex.split(as_root(unwrap(oauth.inputs["delete"])))
    assert delete[-4:] == ["down", GITEA_CONTAINER, APP_NAME, "forgeway-admin"]
    assert is_secret_value(oauth.inputs["stdin"])
    assert {"stdin", "stdout"} <= set(oauth.additional_secret_outputs)
    assert "jetson-gitea-admin" in " ".join(oauth.dependencies)


def test_the_server_env_names_files_for_every_secret(wp: Stack) -> None:
    server = _named(wp, "jetson-woodpecker-server")
    env = _env(server)
    assert env["WOODPECKER_HOST"] == URL
    assert env["WOODPECKER_GITEA"] == "true" and env["WOODPECKER_GITEA_URL"] == "https://git.example.org"
    assert env["WOODPECKER_ADMIN"] == "forgeway-admin" and env["WOODPECKER_OPEN"] == "false"
    assert env["WOODPECKER_PLUGINS_PRIVILEGED"] == ""
    for name in ("WOODPECKER_GITEA_CLIENT", "WOODPECKER_GITEA_SECRET", "WOODPECKER_AGENT_SECRET"):
        assert name not in env and env[f"{name}_FILE"].startswith("/etc/forgeway/")
    uploads = {u["file"]: u for u in unwrap(server.inputs["uploads"])}
    for path in (
        env["WOODPECKER_GITEA_CLIENT_FILE"],
        env["WOODPECKER_GITEA_SECRET_FILE"],
        env["WOODPECKER_SERVER_KEY"],
    ):
        assert uploads[path]["permissions"] == "0600"
    assert "uploads" in server.additional_secret_outputs
    for upload in server.inputs["uploads"]:
        if upload["file"] in (env["WOODPECKER_GITEA_CLIENT_FILE"], env["WOODPECKER_GITEA_SECRET_FILE"]):
            assert is_secret_value(upload["content"]), upload["file"]
    assert server.inputs["name"] == SERVER_CONTAINER


def test_the_server_publishes_https_on_the_ci_home_port_and_grpc_on_the_tunnel_only(wp: Stack) -> None:
    ports = unwrap(_named(wp, "jetson-woodpecker-server").inputs["ports"])
    assert [(p["internal"], p["external"], p["ip"]) for p in ports] == [
        (443, 8443, "10.8.0.2"),
        (9000, 9000, "10.8.0.2"),
    ]


def test_the_server_reaches_gitea_on_the_tunnel_address_beside_it(wp: Stack) -> None:
    hosts = unwrap(_named(wp, "jetson-woodpecker-server").inputs["hosts"])
    assert hosts == [{"host": "git.example.org", "ip": "10.8.0.2"}]


def test_the_server_data_volume_is_protected_and_retained(wp: Stack) -> None:
    volume = _named(wp, "jetson-woodpecker-data")
    assert volume.protect and volume.retain_on_delete


def test_one_agent_per_runner_host_with_its_arch(wp: Stack) -> None:
    agents = {r.name: r for r in wp.synth.of_type(CONTAINER) if r.inputs.get("name") == AGENT_CONTAINER}
    assert sorted(agents) == ["builder-woodpecker-agent", "pi5-woodpecker-agent"]
    for host, arch in (("pi5", "arm64"), ("builder", "amd64")):
        agent = agents[f"{host}-woodpecker-agent"]
        env = _env(agent)
        assert env["WOODPECKER_SERVER"] == "10.8.0.2:9000"
        assert env["WOODPECKER_BACKEND"] == "docker" and env["WOODPECKER_AGENT_LABELS"] == f"platform=linux/{arch}"
        assert "WOODPECKER_AGENT_SECRET" not in env and env["WOODPECKER_AGENT_SECRET_FILE"] == AGENT_SECRET_FILE
        assert env["WOODPECKER_BACKEND_DOCKER_VOLUMES"] == "/etc/docker/forgeway-jobs/certs.d:/etc/docker/certs.d:ro"
        assert f"{host}-docker" in agent.provider
        image = _named(wp, f"{host}-woodpecker-agent-image")
        assert image.inputs["platform"] == f"linux/{arch}" and image.inputs["name"] == AGENT_IMAGE
        # After the host's registry trust and daemon.json (the jobs' MTU), as the GitLab runner.
        assert any("daemon" in d for d in agent.dependencies), agent.dependencies


def test_woodpeckers_name_is_on_the_forge_certificate_and_in_gitea_webhooks(wp: Stack) -> None:
    env = dict(e.split("=", 1) for e in unwrap(_named(wp, "jetson-gitea").inputs["envs"]))
    assert env["GITEA__webhook__ALLOWED_HOST_LIST"] == "external,ci.example.org"
    csrs = [r for r in wp.synth.resources if r.type == "tls:index/certRequest:CertRequest"]
    assert any("ci.example.org" in unwrap(r.inputs.get("dnsNames", [])) for r in csrs)


def test_runners_reach_the_grpc_port_and_nothing_new(wp: Stack, gitea: Stack) -> None:
    base = gitea
    rules = _segment_rules(wp, "jetson")
    before = _segment_rules(base, "jetson")
    added = [line for line in rules if line not in before]
    # Changed: the runners' rule (9000 added), and the two forwarded-port rules (8443, the ci
    # service: from the VPS, and internet clients with their own address). Nothing else.
    assert len(added) == 3, added
    (runners,) = [line for line in added if "9000" in line]
    assert "runners to gitlab" in runners and "8443" not in runners
    assert all("8443" in line and "9000" not in line for line in added if line != runners)
    assert len(rules) == len(before)
    vps = [line for line in _segment_rules(wp, "vps") if line not in _segment_rules(base, "vps")]
    assert len(vps) == 1 and "9000" in vps[0] and "runners" in vps[0], vps


def _segment_rules(stack: Stack, host: str) -> list[str]:
    staged = unwrap(_named(stack, f"{host}-segment").inputs["stdin"])
    return [line.strip() for line in str(staged).splitlines() if "accept" in line]


def test_the_url_is_an_output_and_no_secret_leaks(wp: Stack) -> None:
    assert wp.synth.outputs["woodpecker_url"] == URL
    assert plaintext_leaks(wp.synth, wp.secrets) == []


def test_the_pack_passes_woodpeckers_ports_by_default(wp: Stack) -> None:
    """The ci port forwarded (8443), the server's published 8443 and its gRPC 9000 on the
    tunnel address: in the pack's default allowlists (docs/policies.md), nothing to configure."""
    outcome = run_policies(rules.POLICIES, specs_from_synthesis(wp.synth.resources))
    assert outcome.violations == [] and outcome.not_evaluated == [], outcome.violations


def test_another_ci_port_is_flagged_until_the_config_allows_it() -> None:
    config, secret_keys = with_woodpecker(gitea_stack())
    ports = config[f"{PROJECT}:forwarding"]["ports"]
    ports[-1] = {"service": "ci", "public": 9443}
    specs = specs_from_synthesis(synthesize_in_subprocess("gitea-wp-9443", config, secret_keys).resources)
    found = run_policies(rules.POLICIES, specs).violations
    # Forwarded from the VPS, and published by the server: both name 9443, nothing else is found.
    assert {v.policy for v in found} == {"vps-forwarding-ports"} and len(found) == 2, found
    assert all("9443" in v.message for v in found), found
    widened = {"vps-forwarding-ports": {"allowedPorts": [22, 80, 443, 9443], "allowedHomePorts": [80, 443, 2222, 9443]}}
    outcome = run_policies(rules.POLICIES, specs, widened)
    assert outcome.violations == [] and outcome.not_evaluated == [], outcome.violations
