"""Gitea as the forge (``forge: gitea``, components/gitea.py) as the program registers it:
Pulumi.gitea-example.yaml under the mock monitor (nothing is created). That Gitea really
serves through the VPS is the lab's job (the stand-ins, tools/lab/standin_image/gitea*)."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest

from components.config import PROJECT, ConfigError, parse_stack
from components.forge import stack_forge
from components.gitea import CONTAINER_NAME, DATA_VOLUME, HEALTHCHECK, KEY_FILE, SECRETS_DIR
from components.tunnel import tunnel_addresses
from tests.program.conftest import Stack, as_root
from tests.program.leaks import plaintext_leaks
from tests.program.test_plan import _plan
from tests.program.test_program import _staged_files
from tests.stacks import gitea_stack
from tools.stack.synth import Registration, is_secret_value, synthesize_in_subprocess, unwrap

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
COMMAND = "command:remote:Command"


def _named(stack: Stack, name: str) -> Registration:
    (reg,) = [r for r in stack.synth.resources if r.name == name and r.custom]
    return reg


def _env(stack: Stack) -> dict[str, str]:
    envs: list[str] = unwrap(_named(stack, "jetson-gitea").inputs["envs"])
    return dict(e.split("=", 1) for e in envs)


def test_no_gitlab_part_is_registered(gitea: Stack) -> None:
    types = {r.type for r in gitea.synth.resources}
    assert "forgeway:gitea:GiteaServer" in types
    assert not [t for t in types if "gitlab" in t.lower() or "runner" in t.lower() or "backup" in t.lower()]
    names = [r.name for r in gitea.synth.resources]
    assert not [n for n in names if "gitlab" in n or "runner" in n or "registry-gc" in n or "upgrade" in n], names


def test_image_is_the_forge_hosts_arch_through_its_provider(gitea: Stack) -> None:
    (image,) = gitea.synth.of_type(REMOTE_IMAGE)
    assert image.name == "jetson-gitea-image"
    assert image.inputs["name"] == "gitea/gitea:1.22.3" and image.inputs["platform"] == "linux/arm64"
    assert "jetson-docker" in image.provider and image.inputs["keepLocally"] is True


def test_the_data_volume_is_protected_retained_and_labelled(gitea: Stack) -> None:
    (volume,) = gitea.synth.of_type(VOLUME)
    assert volume.inputs["name"] == DATA_VOLUME and volume.protect and volume.retain_on_delete
    assert volume.inputs["labels"] == [{"label": "forgeway.role", "value": "gitea-data"}]
    container = _named(gitea, "jetson-gitea")
    assert container.inputs["volumes"] == [{"volumeName": DATA_VOLUME, "containerPath": "/data"}]


def test_settings_are_gitea_env_variables(gitea: Stack) -> None:
    env = _env(gitea)
    assert {k: env[k] for k in env if k.startswith("GITEA__server__")} == {
        "GITEA__server__DOMAIN": "git.example.org",
        "GITEA__server__ROOT_URL": "https://git.example.org/",
        "GITEA__server__SSH_DOMAIN": "git.example.org",
        "GITEA__server__SSH_PORT": "22",
        "GITEA__server__SSH_LISTEN_PORT": "22",
        "GITEA__server__PROTOCOL": "https",
        "GITEA__server__HTTP_PORT": "3000",
        "GITEA__server__REDIRECT_OTHER_PORT": "true",
        "GITEA__server__PORT_TO_REDIRECT": "3080",
        "GITEA__server__CERT_FILE": f"{SECRETS_DIR}/tls.crt",
        "GITEA__server__KEY_FILE": KEY_FILE,
    }
    assert env["GITEA__security__INSTALL_LOCK"] == "true"
    assert env["GITEA__database__DB_TYPE"] == "sqlite3" and env["GITEA__database__PATH"].startswith("/data/")
    assert env["GITEA__packages__ENABLED"] == "true"
    assert env["GITEA__webhook__ALLOWED_HOST_LIST"] == "external"
    assert env["SSH_LISTEN_PORT"] == "22"  # the image's own sshd_config template


def test_secrets_are_files_never_env_values(gitea: Stack) -> None:
    env = _env(gitea)
    for key in ("SECRET_KEY", "INTERNAL_TOKEN", "PASSWD"):
        assert not [k for k in env if k.endswith(f"__{key}")], f"{key} given as a value, not __FILE"
    assert env["GITEA__security__SECRET_KEY__FILE"] == f"{SECRETS_DIR}/secret_key"
    assert env["GITEA__security__INTERNAL_TOKEN__FILE"] == f"{SECRETS_DIR}/internal_token"
    container = _named(gitea, "jetson-gitea")
    uploads = {u["file"]: u for u in container.inputs["uploads"]}
    for name in ("secret_key", "internal_token"):
        upload = uploads[f"{SECRETS_DIR}/{name}"]
        assert upload["permissions"] == "0600"
        assert is_secret_value(upload["content"]), f"{name} reaches the container unwrapped"
    assert "uploads" in container.additional_secret_outputs
    randoms = {r.name: r for r in gitea.synth.of_type("random:index/randomPassword:RandomPassword")}
    assert set(randoms) == {"jetson-gitea-secret-key", "jetson-gitea-internal-token", "jetson-gitea-admin-password"}
    assert plaintext_leaks(gitea.synth, gitea.secrets) == []


def test_ports_bind_the_tunnel_address_and_publish_no_registry_port(gitea: Stack) -> None:
    config, _ = parse_stack(gitea.config, gitea.secret_keys)
    address = str(tunnel_addresses(config)["jetson"])
    ports = _named(gitea, "jetson-gitea").inputs["ports"]
    assert ports == [
        {"internal": 22, "external": 2222, "ip": address, "protocol": "tcp"},
        {"internal": 3000, "external": 443, "ip": address, "protocol": "tcp"},
        {"internal": 3080, "external": 80, "ip": address, "protocol": "tcp"},
    ]


def test_healthcheck_is_giteas_own_endpoint(gitea: Stack) -> None:
    check = _named(gitea, "jetson-gitea").inputs["healthcheck"]
    assert check["tests"] == list(HEALTHCHECK) and "/api/healthz" in check["tests"][-1]


def test_the_tls_key_reaches_the_volume_on_stdin_before_the_container(gitea: Stack) -> None:
    key = _named(gitea, "jetson-gitea-tls-key")
    command = as_root(key.inputs["create"])
    assert "-----BEGIN" not in command and DATA_VOLUME in command
    assert is_secret_value(key.inputs["stdin"]) and "stdin" in key.additional_secret_outputs
    container = _named(gitea, "jetson-gitea")
    assert key.urn in container.dependencies
    uploads = {u["file"]: u for u in container.inputs["uploads"]}
    assert "BEGIN CERTIFICATE" in unwrap(uploads[f"{SECRETS_DIR}/tls.crt"]["content"])


def test_the_admin_is_created_in_the_container_with_the_password_on_stdin_only(gitea: Stack) -> None:
    admin = _named(gitea, "jetson-gitea-admin")
    command = as_root(admin.inputs["create"])
    words = shlex.split(command)
    assert words[-4:] == [CONTAINER_NAME, "forgeway-admin", "forgeway-admin@git.example.org", "900"]
    assert is_secret_value(admin.inputs["stdin"])
    assert {"stdin", "stdout"} <= set(admin.additional_secret_outputs)  # the token is its stdout
    assert _named(gitea, "jetson-gitea").urn in admin.dependencies
    script = words[words.index("-c") + 1]
    assert "gitea admin user create --admin" in script and "generate-access-token" in script
    assert "--raw" in script and "--password " not in script  # no password argument anywhere


def test_every_docker_host_trusts_giteas_registry(gitea: Stack) -> None:
    for host in ("jetson", "pi5", "builder"):
        files = _staged_files(_named(gitea, f"{host}-docker-client"))
        # Public port 443: dockerd looks the registry up by its bare name.
        assert "etc/docker/certs.d/git.example.org/ca.crt" in files["manifest"], host


def test_segmentation_lets_runner_hosts_reach_the_forge(gitea: Stack) -> None:
    rules = unwrap(_named(gitea, "jetson-segment").inputs["stdin"])
    assert "runners to gitlab https, ssh" in rules  # role gitlab: the forge host (docs/gitea.md)


def test_outputs_name_the_forge(gitea: Stack) -> None:
    out = gitea.synth.outputs
    assert (out["forge"], out["forge_url"], out["registry"]) == ("gitea", "https://git.example.org", "git.example.org")
    assert out["ssh_clone_host"] == "git.example.org" and out["ssh_clone_port"] == 22
    assert out["gitea_admin_user"] == "forgeway-admin" and is_secret_value(out["gitea_admin_password"])
    assert "gitlab_url" not in out and "gitlab_root_password" not in out
    assert out["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")


def test_gitlab_stacks_name_their_forge_too(prod: Stack) -> None:
    out = prod.synth.outputs
    assert (out["forge"], out["forge_url"]) == ("gitlab", out["gitlab_url"])


def test_forge_facts_match_the_config(gitea: Stack) -> None:
    config, _ = parse_stack(gitea.config, gitea.secret_keys)
    forge = stack_forge(config)
    assert forge.kind == "gitea" and forge.registry_endpoints == ("git.example.org:443",)


def _variant(patch: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    config, secret_keys = gitea_stack()
    config = copy.deepcopy(config)
    for key, value in patch.items():
        section, _, field = key.partition(".")
        config[f"{PROJECT}:{section}"][field] = value
    return config, secret_keys


@pytest.fixture(scope="module")
def postgres_letsencrypt() -> Stack:
    config, secret_keys = _variant(
        {
            "gitea.database": {"type": "postgres", "host": "db.home.arpa"},
            "gitea.tls": "letsencrypt",
            "gitea.acme_email": "ops@example.org",
        }
    )
    config[f"{PROJECT}:gitea_db_password"] = "correct-horse-battery"
    secret_keys = [*secret_keys, f"{PROJECT}:gitea_db_password"]
    name = "gitea-postgres"
    return Stack(name, config, secret_keys, synthesize_in_subprocess(name, config, secret_keys))


def test_postgres_password_is_a_secret_file_and_acme_replaces_our_certificate(postgres_letsencrypt: Stack) -> None:
    stack = postgres_letsencrypt
    env = _env(stack)
    assert env["GITEA__database__DB_TYPE"] == "postgres" and env["GITEA__database__HOST"] == "db.home.arpa:5432"
    assert env["GITEA__database__PASSWD__FILE"] == f"{SECRETS_DIR}/db_password"
    uploads = {u["file"]: u for u in _named(stack, "jetson-gitea").inputs["uploads"]}
    assert is_secret_value(uploads[f"{SECRETS_DIR}/db_password"]["content"])
    assert env["GITEA__server__ENABLE_ACME"] == "true" and env["GITEA__server__ACME_EMAIL"] == "ops@example.org"
    assert "GITEA__server__CERT_FILE" not in env
    assert not [r for r in stack.synth.resources if r.name == "jetson-gitea-tls-key"]
    assert plaintext_leaks(stack.synth, ["correct-horse-battery"]) == []
    # Let's Encrypt's challenge comes through the VPS: the container waits for the forwarding.
    forwarding = _named(stack, "vps-forwarding")
    assert forwarding.urn in _named(stack, "jetson-gitea").dependencies


def test_a_bad_gitea_config_fails_the_program_by_key() -> None:
    config, secret_keys = _variant({"gitea.admin_username": "admin"})
    with pytest.raises(RuntimeError) as caught:
        synthesize_in_subprocess("gitea-bad", config, secret_keys)
    assert "forgeway:gitea.admin_username" in str(caught.value)


def test_the_forge_switch_guard_runs_before_any_change(gitea: Stack) -> None:
    check = _named(gitea, "jetson-forge-check")
    words = shlex.split(as_root(check.inputs["create"]))
    assert words[-6:] == ["jetson", "gitea", "no", *(f"forgeway-gitlab-{r}" for r in ("config", "logs", "data"))]
    for name in ("jetson-gitea", "vps-forwarding", "pi5-docker-client", "jetson-gitea-tls-key"):
        assert check.urn in _named(gitea, name).dependencies, name


def test_a_gitlab_stack_guards_against_giteas_data_the_same_way(prod: Stack) -> None:
    """gitea -> gitlab: Gitea's and Woodpecker's volumes looked at before any change."""
    (check,) = [r for r in prod.synth.resources if r.name.endswith("-forge-check") and r.custom]
    host = check.name.removesuffix("-forge-check")
    words = shlex.split(as_root(check.inputs["create"]))
    assert words[-5:] == [host, "gitlab", "no", "forgeway-gitea-data", "forgeway-woodpecker-server-data"]
    changes = [r for r in prod.synth.resources if r.custom and r.type in ("docker:index/container:Container",)]
    assert changes, "no container in the prod stack"
    for reg in [*changes, _named(prod, "vps-forwarding")]:
        assert check.urn in reg.dependencies, f"{reg.name} does not wait for the forge-switch check"


def test_allow_forge_change_reaches_the_guard() -> None:
    config, secret_keys = gitea_stack()
    config = {**config, f"{PROJECT}:allow_forge_change": True}
    synth = synthesize_in_subprocess("gitea-switch", config, secret_keys)
    (check,) = [r for r in synth.resources if r.name == "jetson-forge-check" and r.custom]
    assert shlex.split(as_root(check.inputs["create"]))[-4] == "yes"


def test_the_offline_plan_of_the_gitea_example(gitea: Stack) -> None:
    """`make preview` (tools/applier/plan.py) on a Gitea stack: every resource to create,
    the forge named in the outputs, no secret shown."""
    done = _plan("--stack", "gitea-example")  # the example's published passphrase, as for prod
    assert done.returncode == 0, done.stderr[-2000:]
    # Every resource the synthesis registered, components included, and the stack itself.
    assert f"Resources: {len(gitea.synth.resources) + 1} to create" in done.stdout
    assert 'forge               : "gitea"' in done.stdout and "jetson-gitea-admin" in done.stdout
    assert not [s for s in gitea.secrets if len(s) >= 8 and s in done.stdout]


GITEA6 = "fd77:6179:7762::2"  # gitea.container_subnet6's ::2 (the default)
GITEA4 = "172.31.254.2"  # gitea.container_subnet's .2


def _dual_stack_on_lan() -> tuple[dict[str, Any], list[str]]:
    """The Gitea example with tunnel.ipv6, forwarding.ipv6 and publish_on_lan: every address
    a client may use besides the tunnel IPv4 one."""
    config, secret_keys = gitea_stack()
    config = copy.deepcopy(config)
    config[f"{PROJECT}:tunnel"] = {**config.get(f"{PROJECT}:tunnel", {}), "ipv6": True}
    config[f"{PROJECT}:forwarding"] = {**config.get(f"{PROJECT}:forwarding", {}), "ipv6": True}
    vps = next(h for h in config[f"{PROJECT}:hosts"] if "vps" in h["roles"])
    vps["public_address6"] = "2001:db8::10"
    config[f"{PROJECT}:gitea"] = {**config[f"{PROJECT}:gitea"], "publish_on_lan": True}
    return config, secret_keys


@pytest.fixture(scope="module")
def gitea_dual() -> Stack:
    config, secret_keys = _dual_stack_on_lan()
    return Stack("gitea-dual", config, secret_keys, synthesize_in_subprocess("gitea-dual", config, secret_keys))


@pytest.mark.parametrize("which", ["gitea", "gitea_woodpecker", "gitea_dual", "postgres_letsencrypt"])
def test_every_port_binds_one_address_as_the_provider_reads_it_back(which: str, request: pytest.FixtureRequest) -> None:
    """Two bindings of one port come back from dockerd in an order of their own, and the
    provider then replaces Gitea's container on every up after a read (issue 20): one binding
    per port, the tunnel IPv4 address, in the provider's read order, in every config."""
    from tools.applier.refresh import normal_ports

    stack: Stack = request.getfixturevalue(which)
    config, _ = parse_stack(stack.config, stack.secret_keys)
    ports = _named(stack, "jetson-gitea").inputs["ports"]
    assert ports == normal_ports(ports)
    assert len({p["internal"] for p in ports}) == len(ports) == 3
    assert {p["ip"] for p in ports} == {str(tunnel_addresses(config)["jetson"])}


def test_ipv6_and_the_lan_reach_gitea_by_the_forge_hosts_dnat_to_its_own_network(gitea_dual: Stack) -> None:
    """As GitLab's (components/forge_nat.py): Gitea on its own dual-stack network at fixed
    addresses, the tunnel IPv6 address DNATed to ::2, the LAN address to .2, each port to
    Gitea's own port, for clients (prerouting) and the host itself (output)."""
    container = _named(gitea_dual, "jetson-gitea")
    assert "networkMode" not in container.inputs  # else docker attaches it without the fixed address
    (attached,) = container.inputs["networksAdvanced"]
    assert (attached["ipv4Address"], attached["ipv6Address"]) == (GITEA4, GITEA6)
    (network,) = gitea_dual.synth.of_type("docker:index/network:Network")
    assert network.name == "jetson-gitea-network" and network.inputs["name"] == attached["name"] == CONTAINER_NAME
    assert network.inputs["ipv6"] is True
    assert {c["subnet"] for c in network.inputs["ipamConfigs"]} == {"172.31.254.0/29", "fd77:6179:7762::/64"}
    nat = _named(gitea_dual, "jetson-gitea-nat-tables")
    files = _staged_files(nat)
    assert set(files) == {"forge-nat-up.sh", "forge6.nft", "forge4.nft"}
    assert as_root(nat.inputs["create"]).rstrip().endswith('''forge-nat-up.sh 'ip6 ip' "$d"''')
    config, _ = parse_stack(gitea_dual.config, gitea_dual.secret_keys)
    tunnel6 = "fd77:6179:7761::2"
    lan = next(h["address"] for h in gitea_dual.config[f"{PROJECT}:hosts"] if h["name"] == "jetson")
    for home, internal in ((443, 3000), (80, 3080), (2222, 22)):
        assert {fp.home_port for fp in config.forwarding.ports} >= {home}
        rule6 = f"ip6 daddr {tunnel6} tcp dport {home} dnat to [{GITEA6}]:{internal}"
        rule4 = f"ip daddr {lan} tcp dport {home} dnat to {GITEA4}:{internal}"
        assert files["forge6.nft"].count(rule6) == 2, rule6
        assert files["forge4.nft"].count(rule4) == 2, rule4
    # The table's command first (it records the host's IPv6 forwarding, which dockerd turns
    # on with the network), then the network, then the container on it.
    assert nat.urn in network.dependencies
    assert network.urn in container.dependencies


def test_without_ipv6_or_lan_gitea_stays_on_dockers_bridge_with_no_forge_nat(gitea: Stack) -> None:
    assert not gitea.config[f"{PROJECT}:gitea"].get("publish_on_lan")
    assert not gitea.config.get(f"{PROJECT}:tunnel", {}).get("ipv6")
    assert "networksAdvanced" not in _named(gitea, "jetson-gitea").inputs
    assert gitea.synth.of_type("docker:index/network:Network") == []
    assert not [r for r in gitea.synth.resources if r.name.endswith("-gitea-nat-tables")]


def test_a_gitea_container_subnet_that_clashes_is_a_config_error_by_key() -> None:
    config, secret_keys = _dual_stack_on_lan()
    config[f"{PROJECT}:gitea"] = {**config[f"{PROJECT}:gitea"], "container_subnet": "10.8.0.0/29"}
    with pytest.raises(ConfigError) as failed:
        parse_stack(config, secret_keys)
    message = str(failed.value)
    assert f"{PROJECT}:gitea.container_subnet" in message and "10.8.0.0/29" in message, message
    assert "does not overlap tunnel.subnet" in message, message
