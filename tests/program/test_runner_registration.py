"""Runners created through GitLab's API (issue 17), as the program registers them (mock monitor).

prod: builder (privileged, protected) has no runner_tokens override, so a UserRunner is
created ref_protected; pi5 keeps a hand-made token, checked by a local command before its
container. lab: both runners are created through the API. Checked: the API token's value,
its seed (stdin only, the ruby file's markers), the provider, each UserRunner's inputs, the
token flowing as a secret into config.toml, and the order: the runner container waits for
its UserRunner or its check. That GitLab enforces it is the lab tier's job.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from typing import Any

from components.config import PROJECT, parse_stack
from components.gitlab import CONTAINER_NAME
from components.runner_registration import API_TOKEN_LENGTH
from components.scripts import decode_staged
from tests.program.conftest import Stack, as_root
from tests.program.leaks import plaintext_leaks
from tools.stack.synth import Registration, is_secret_value, unwrap

USER_RUNNER = "gitlab:index/userRunner:UserRunner"
LOCAL = "command:local:Command"
CONTAINER = "docker:index/container:Container"
PROVIDER = "pulumi:providers:gitlab"


def _one(stack: Stack, type_: str, name: str) -> Registration:
    found = [r for r in stack.synth.of_type(type_) if r.name == name]
    assert len(found) == 1, f"{type_} {name}: {len(found)} registered"
    return found[0]


def _hosts(stack: Stack) -> list[dict[str, Any]]:
    return [h for h in stack.config[f"{PROJECT}:hosts"] if "runner" in h["roles"]]


def _hand(stack: Stack) -> dict[str, str]:
    tokens: dict[str, str] = stack.config.get(f"{PROJECT}:runner_tokens", {})
    return tokens


def _config_toml(stack: Stack, host: str) -> dict[str, Any]:
    container = _one(stack, CONTAINER, f"{host}-runner")
    (upload,) = [u for u in unwrap(container.inputs["uploads"]) if u["file"].endswith("config.toml")]
    return tomllib.loads(upload["content"])


def _staged_files(command: str) -> dict[str, str]:
    words = shlex.split(as_root(command).split("&&")[1])
    pairs = words[words.index('"$d"') + 1 :] if '"$d"' in words else words[5:]
    return {pairs[i]: decode_staged(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


def test_api_token_value_is_a_20_character_alphanumeric_secret(stack: Stack) -> None:
    value = _one(stack, "random:index/randomPassword:RandomPassword", "gitlab-api-token-value")
    assert value.inputs["length"] == API_TOKEN_LENGTH == 20
    assert value.inputs["special"] is False, "letters and digits only: no quoting anywhere"


def test_seed_waits_for_gitlab_then_runs_gitlab_rails_with_the_token_on_stdin_only(stack: Stack) -> None:
    seed = _one(stack, "command:remote:Command", "gitlab-api-token")
    assert is_secret_value(seed.inputs["stdin"]), "the token travels on stdin, as a secret"
    create, delete = unwrap(seed.inputs["create"]), unwrap(seed.inputs["delete"])
    token = unwrap(seed.inputs["stdin"])
    assert len(token) == API_TOKEN_LENGTH and token not in create and token not in delete
    assert as_root(create).rstrip().endswith(f'gitlab-api-token.sh create {CONTAINER_NAME} 1800 "$d"'), create[-200:]
    assert f"gitlab-api-token.sh revoke {CONTAINER_NAME} 120" in as_root(delete)
    files = _staged_files(create)
    assert set(files) == {"gitlab-api-token.sh", "gitlab-api-token.rb"}
    rb = files["gitlab-api-token.rb"].splitlines()
    assert "TOKEN_NAME = 'forgeway-provisioner'" in rb
    assert "TOKEN_SCOPES = %w[create_runner manage_runner]" in rb
    assert any(re.fullmatch(r"TOKEN_DAYS = \d+", line) and int(line.split()[-1]) <= 365 for line in rb)
    assert "value = STDIN.read.strip" in rb
    assert 'docker exec -i "$container" gitlab-rails runner "$RB" "$action"' in files["gitlab-api-token.sh"]
    gitlab = _one(
        stack,
        CONTAINER,
        next(h["name"] for h in stack.config[f"{PROJECT}:hosts"] if "gitlab" in h["roles"]) + "-gitlab",
    )
    assert gitlab.urn in seed.dependencies, "the seed waits for GitLab's container"


def test_provider_uses_the_api_url_the_seeded_token_and_own_ca_file(stack: Stack) -> None:
    config, _ = parse_stack(stack.config, stack.secret_keys)
    provider = _one(stack, PROVIDER, "gitlab-api")
    assert provider.inputs["baseUrl"] == config.gitlab_api_url == f"https://{config.gitlab.domain}/api/v4/"
    assert is_secret_value(provider.inputs["token"])
    assert unwrap(provider.inputs["token"]) == unwrap(
        _one(stack, "command:remote:Command", "gitlab-api-token").inputs["stdin"]
    )
    # Provider inputs travel as strings.
    assert provider.inputs["earlyAuthCheck"] in (False, "false"), "no GET /user: the token has no read_user scope"
    seed = _one(stack, "command:remote:Command", "gitlab-api-token")
    assert seed.urn in provider.dependencies, "the provider waits until GitLab holds the token"
    if config.gitlab.tls == "own-ca":
        ca = _one(stack, LOCAL, "gitlab-api-ca")
        assert provider.inputs["cacertFile"] == ca.inputs["environment"]["FORGEWAY_CA_FILE"]
        assert unwrap(ca.inputs["stdin"]).startswith("-----BEGIN CERTIFICATE-----")
        assert ca.urn in provider.dependencies
    else:
        assert "cacertFile" not in provider.inputs
        assert not [r for r in stack.synth.of_type(LOCAL) if r.name == "gitlab-api-ca"]


def test_one_user_runner_per_runner_host_without_a_hand_token(stack: Stack) -> None:
    config, _ = parse_stack(stack.config, stack.secret_keys)
    provider = _one(stack, PROVIDER, "gitlab-api")
    created = {r.name for r in stack.synth.of_type(USER_RUNNER)}
    assert created == {f"{h['name']}-runner-registration" for h in _hosts(stack) if h["name"] not in _hand(stack)}
    for host in _hosts(stack):
        if host["name"] in _hand(stack):
            continue
        settings = config.host(host["name"]).effective_runner
        runner = _one(stack, USER_RUNNER, f"{host['name']}-runner-registration")
        assert runner.provider.startswith(provider.urn), runner.provider
        assert runner.inputs["runnerType"] == "instance_type"
        assert host["name"] in runner.inputs["description"]
        assert runner.inputs["tagLists"] == [host["arch"], *settings.tags]
        assert runner.inputs["untagged"] is False and runner.inputs["paused"] is False
        assert runner.inputs["locked"] is settings.locked
        assert runner.inputs.get("maximumTimeout") == settings.maximum_timeout
        wanted = "ref_protected" if settings.privileged or settings.protected else "not_protected"
        assert runner.inputs["accessLevel"] == wanted, host["name"]
        assert "token" in runner.additional_secret_outputs or runner.inputs.get("token") is None


def test_the_user_runners_token_is_the_one_in_config_toml_and_the_container_waits(stack: Stack) -> None:
    for host in _hosts(stack):
        name = host["name"]
        container = _one(stack, CONTAINER, f"{name}-runner")
        token = _config_toml(stack, name)["runners"][0]["token"]
        labels = {label["label"]: label["value"] for label in container.inputs["labels"]}
        if name in _hand(stack):
            assert token == _hand(stack)[name]
            check = _one(stack, LOCAL, f"{name}-runner-token-check")
            assert check.urn in container.dependencies, "the token is checked before the container is touched"
            assert labels["forgeway.runner.registration"] == check.name
        else:
            runner = _one(stack, USER_RUNNER, f"{name}-runner-registration")
            assert token.startswith("glrt-")
            assert runner.urn in container.dependencies, "a new runner's token replaces the container (drain)"
            assert labels["forgeway.runner.registration"] == runner.name
            assert labels["forgeway.runner.access-level"] == runner.inputs["accessLevel"]
        assert _config_toml(stack, name)["runners"][0]["token_expires_at"].year == 1, "no rotation by the runner"


def test_hand_token_check_runs_locally_with_secrets_on_stdin(prod: Stack) -> None:
    config, _ = parse_stack(prod.config, prod.secret_keys)
    for name, token in _hand(prod).items():
        check = _one(prod, LOCAL, f"{name}-runner-token-check")
        assert is_secret_value(check.inputs["stdin"])
        secrets = json.loads(unwrap(check.inputs["stdin"]))
        assert secrets["runner_token"] == token and len(secrets["admin_token"]) == API_TOKEN_LENGTH
        env = check.inputs["environment"]
        assert env["FORGEWAY_API_URL"] == config.gitlab_api_url
        assert shlex.split(unwrap(check.inputs["create"]))[3] == name, "the refusal names the runner"
        needs = config.host(name).effective_runner.needs_protection
        assert env["FORGEWAY_REQUIRE_PROTECTED"] == ("true" if needs else "false")
        assert token not in json.dumps(unwrap(check.inputs["create"])) and "runners/verify" in unwrap(
            check.inputs["create"]
        )


def test_generated_tokens_never_show_in_plaintext(stack: Stack) -> None:
    value = unwrap(_one(stack, "command:remote:Command", "gitlab-api-token").inputs["stdin"])
    runner_tokens = [
        _config_toml(stack, h["name"])["runners"][0]["token"] for h in _hosts(stack) if h["name"] not in _hand(stack)
    ]
    assert plaintext_leaks(stack.synth, [value, *runner_tokens]) == []


def test_no_runner_hosts_no_api_token_in_gitlab() -> None:
    """A stack without runner hosts makes no admin token, seed or provider: nothing unused lies in GitLab."""
    from tests.program.conftest import _synth
    from tests.stacks import lab_stack

    config, secret_keys = lab_stack()
    config[f"{PROJECT}:hosts"] = [h for h in config[f"{PROJECT}:hosts"] if "runner" not in h["roles"]]
    config.pop(f"{PROJECT}:runner_tokens", None)
    stack = _synth("lab", (config, [k for k in secret_keys if k != f"{PROJECT}:runner_tokens"]))
    names = {r.name for r in stack.synth.resources}
    assert not names & {"gitlab-api-token-value", "gitlab-api-token", "gitlab-api-ca", "gitlab-api"}, names
    assert not stack.synth.of_type(PROVIDER) and not stack.synth.of_type(USER_RUNNER)


def test_the_provider_waits_for_the_api_path_and_each_runner_for_the_provider(stack: Stack) -> None:
    """The VPS's forwarding is the deployer's way to the API: runners are made only once it
    exists, and a destroy (dependents first) deletes them in GitLab before it goes."""
    provider = _one(stack, PROVIDER, "gitlab-api")
    forwarding = [r for r in stack.synth.resources if r.name == "vps-forwarding"]
    assert forwarding and forwarding[0].urn in provider.dependencies, provider.dependencies
    for runner in stack.synth.of_type(USER_RUNNER):
        assert runner.provider.startswith(provider.urn), runner.provider
