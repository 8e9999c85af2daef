"""Runner keys of issue 17: runners created through GitLab's API (scope, locked,
maximum_timeout, protected, the API URL), runner_tokens as an optional override, and the
removed runner.protected_only named with what replaces it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import PROJECT, ConfigError, parse_stack
from tests.unit.config_patches import Config


def _with_builder(prod: tuple[Config, list[str]], **runner: Any) -> tuple[Config, list[str]]:
    config, secret_keys = copy.deepcopy(prod[0]), prod[1]
    builder = next(h for h in config[f"{PROJECT}:hosts"] if h["name"] == "builder")
    builder["runner"] = {**builder["runner"], **runner}
    for key, value in list(builder["runner"].items()):
        if value is None:
            del builder["runner"][key]
    return config, secret_keys


def _problems(loaded: tuple[Config, list[str]]) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        parse_stack(*loaded)
    return {p.key: p.expected for p in refused.value.problems}


def test_runner_tokens_are_an_optional_override(prod: tuple[Config, list[str]]) -> None:
    config, secret_keys = copy.deepcopy(prod[0]), prod[1]
    config.pop(f"{PROJECT}:runner_tokens", None)
    _, secrets = parse_stack(config, secret_keys)
    assert "runner_tokens" not in secrets, "no token: every runner is created through the API"


def test_protected_only_is_refused_naming_what_replaces_it(prod: tuple[Config, list[str]]) -> None:
    problems = _problems(_with_builder(prod, protected=None, protected_only=True))
    key = f"{PROJECT}:hosts[3].runner.protected_only"
    assert "runner.protected" in problems[key] and "GitLab's API" in problems[key], problems


def test_privileged_and_socket_still_need_protected(prod: tuple[Config, list[str]]) -> None:
    problems = _problems(_with_builder(prod, protected=None, insecure_docker_socket_in_jobs=True))
    assert "runner.protected: true" in problems[f"{PROJECT}:hosts[3].runner.privileged"]
    assert "runner.protected: true" in problems[f"{PROJECT}:hosts[3].runner.insecure_docker_socket_in_jobs"]


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ({"scope": "group"}, "scope group needs group_id"),
        ({"scope": "project", "group_id": 4}, "group_id only with scope group"),
        ({"project_id": 7}, "project_id only with scope project"),
        ({"scope": "galaxy"}, "'instance', 'group' or 'project'"),
        ({"maximum_timeout": 599}, "greater than or equal to 600"),
    ],
)
def test_runner_scope_and_timeout_errors_name_the_key(
    prod: tuple[Config, list[str]], runner: dict[str, Any], expected: str
) -> None:
    problems = _problems(_with_builder(prod, **runner))
    assert any(k.startswith(f"{PROJECT}:hosts[3].runner") and expected in v for k, v in problems.items()), problems


def test_scoped_runner_and_its_access_level(prod: tuple[Config, list[str]]) -> None:
    stack, _ = parse_stack(*_with_builder(prod, scope="project", project_id=42, locked=True))
    builder = stack.host("builder").effective_runner
    assert (builder.scope, builder.scope_id, builder.locked) == ("project", 42, True)
    assert builder.access_level == "ref_protected", "privileged: GitLab must hold it protected"
    assert stack.host("pi5").effective_runner.access_level == "not_protected"


def test_api_url_defaults_to_gitlab_and_an_override_must_end_in_api_v4(prod: tuple[Config, list[str]]) -> None:
    stack, _ = parse_stack(*prod)
    assert stack.gitlab_api_url == "https://gitlab.example.org/api/v4/"
    config = copy.deepcopy(prod[0])
    config[f"{PROJECT}:runners"]["api_url"] = "https://10.8.0.2/api/v4"
    problems = _problems((config, prod[1]))
    assert "ending in /api/v4/" in problems[f"{PROJECT}:runners.api_url"], problems
