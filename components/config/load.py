"""The loader: a stack's raw config in, a ``StackConfig`` and its secrets out, or a
``ConfigError`` listing every problem.

Parsing is pure (``parse_stack``: a mapping in, a ``StackConfig`` or ``ConfigError``
out) so tests feed it the bad-config corpus without Pulumi; ``load_stack_config`` is the
thin Pulumi-facing wrapper.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from components.config.checks import CROSS_CHECKS, check_secrets, duplicate_wireguard_keys, missing_runner_tokens
from components.config.host import Host
from components.config.placeholders import runner_names_as_given, with_placeholders
from components.config.problems import ConfigError, Problem, key_path, show
from components.config.secrets import SECRET_KEYS, fix_command
from components.config.sections import SECTION_FIELDS, SECTIONS, StackConfig
from components.config.types import PROJECT
from components.config.yaml_numbers import stack_file, surprising_numbers

# Keys forgeway once accepted and no longer reads, and why; a stack that still sets one
# is told so by name (a plain "unknown key" could suggest a similar, unrelated key).
_NO_REGISTRY_LOGIN = (
    "removed: nothing used it. gitlab-runner pulls job images from GitLab's own registry with "
    "each job's token, and other private registries take a DOCKER_AUTH_CONFIG CI/CD variable (README, "
    "'Registry credentials'); delete it: pulumi config rm {rm}"
)
REMOVED_KEYS: dict[str, str] = {
    # Issue 17: GitLab holds a runner's protection (its access_level), not a label of ours.
    "hosts[].runner.protected_only": "renamed runner.protected: forgeway now creates each runner through GitLab's "
    "API with access_level ref_protected when it is protected (and checks a runner_tokens override against "
    "GitLab's API), so the setting is what GitLab enforces, not a label; write protected: true instead",
    "registry.username": _NO_REGISTRY_LOGIN.format(rm=f"--path '{PROJECT}:registry.username'"),
    "registry_password": _NO_REGISTRY_LOGIN.format(rm=f"{PROJECT}:registry_password"),
}


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model that holds the unknown key at loc (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = _by_key(current)
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = model_in(annotation)
        if current is None:
            return []
    return list(_by_key(current))


def _by_key(model: Any) -> dict[str, Any]:
    """A model's fields by the key a stack spells (the alias, where a field has one)."""
    return {info.alias or name: info for name, info in getattr(model, "model_fields", {}).items()}


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _problems_from(
    exc: ValidationError, *, base: tuple[int | str, ...], root: type[BaseModel] | None, secret: Callable[[str], bool]
) -> list[Problem]:
    """Problems from a pydantic error; ``base`` is prepended to each error's loc."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = base + tuple(err["loc"])
        key = key_path(str(loc[0]), loc[1:])
        value = "[secret]" if secret(str(loc[0])) else show(err.get("input"))
        expected = err["msg"].removeprefix("Value error, ")
        removed = re.sub(r"\[\d+\]", "[]", key.removeprefix(f"{PROJECT}:"))
        if err["type"] == "extra_forbidden" and removed in REMOVED_KEYS:
            expected = REMOVED_KEYS[removed]
        elif err["type"] == "extra_forbidden":
            known = _fields_at(root, loc) if root else []
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            expected = "unknown key" + (
                f"; did you mean '{hint[0]}'?" if hint else f" (known: {', '.join(known)})" if known else ""
            )
        elif err["type"] == "missing":
            value, expected = "nothing", "required key is missing"
        problems.append(Problem(key, value, expected))
    return problems


def _unknown_key(full_key: str, value: Any, secret: bool) -> Problem:
    prefix = f"{PROJECT}:"
    if not re.fullmatch(r"[\x21-\x7e]+", full_key):
        full_key = json.dumps(full_key)  # a key with a newline or space: quoted, on one line
    known = [*SECTIONS, *SECRET_KEYS]
    hint = difflib.get_close_matches(full_key.removeprefix(prefix), known, n=1)
    if hint and hint[0] in SECRET_KEYS:
        # Probably a secret under a misspelt name: never show it, say how to store it.
        return Problem(
            full_key,
            "[secret]",
            f"unknown key; did you mean '{prefix}{hint[0]}'? Store it encrypted: {fix_command(hint[0])}",
        )
    return Problem(
        full_key,
        "[secret]" if secret else show(value),
        "unknown key" + (f"; did you mean '{prefix}{hint[0]}'?" if hint else f" (known: {', '.join(known)})"),
    )


def _read_secret(key: str, value: Any, secret: bool, secrets: dict[str, Any]) -> list[Problem]:
    """Validate one secret key into ``secrets``; its problems never show the value."""
    problems = []
    if not secret:
        problems.append(
            Problem(
                f"{PROJECT}:{key}",
                "[secret]",
                f"an encrypted secret, but it is plaintext in the stack file; fix: {fix_command(key)}",
            )
        )
    try:
        secrets[key] = SECRET_KEYS[key].adapter.validate_python(value)
    except ValidationError as exc:
        problems += _problems_from(exc, base=(key,), root=None, secret=lambda _: True)
        # Set, if invalid: its names still count, and it is not also "missing"; the error is reported.
        secrets[key] = dict(value) if isinstance(value, dict) else value
    return problems


def parse_stack(raw: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> tuple[StackConfig, dict[str, Any]]:
    """Validate one stack's config; return it and the (plain) secret values.

    ``raw`` maps full keys (``forgeway:hosts``) to values, already decoded from JSON.
    ``secret_keys`` are the full keys the stack stores encrypted. Raises ConfigError
    with every problem found.
    """
    secret_set = set(secret_keys)
    prefix = f"{PROJECT}:"
    config: StackConfig
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for full_key, value in raw.items():
        if not full_key.startswith(prefix):
            continue  # provider config (docker:host, ...) is not ours to check
        key = full_key.removeprefix(prefix)
        if key in SECRET_KEYS:
            problems += _read_secret(key, value, full_key in secret_set, secrets)
        elif key in SECTIONS:
            sections[key] = value
        elif key in REMOVED_KEYS:
            shown = "[secret]" if full_key in secret_set else show(value)
            problems.append(Problem(full_key, shown, REMOVED_KEYS[key]))
        else:
            problems.append(_unknown_key(full_key, value, full_key in secret_set))

    try:
        config = StackConfig.model_validate(sections)
        whole, host_index = frozenset(SECTIONS), list(range(len(config.hosts)))
    except ValidationError as exc:
        problems += _problems_from(exc, base=(), root=StackConfig, secret=lambda top: f"{prefix}{top}" in secret_set)
        config, whole, host_index = _partial(sections)
    for needs, check in CROSS_CHECKS:
        if needs <= whole:
            problems += [_reindex(p, host_index) for p in check(config)]
    problems += duplicate_wireguard_keys(secrets)
    if "hosts" in whole:
        problems += check_secrets(config, secrets)
    else:
        problems += missing_runner_tokens(runner_names_as_given(sections.get("hosts")), secrets)
    problems = [_masked(p, secret_set) for p in with_placeholders(problems, sections)]
    if problems:
        raise ConfigError(problems)
    return config, secrets


def _masked(problem: Problem, secret_set: set[str]) -> Problem:
    """A problem on a key stored as a secret never shows the value given."""
    top = re.split(r"[.\[]", problem.key, maxsplit=1)[0]
    if top in secret_set and problem.value not in ("nothing", "[secret]"):
        return Problem(problem.key, "[secret]", problem.expected)
    return problem


def _reindex(problem: Problem, host_index: list[int]) -> Problem:
    """Point a problem found on the partial config back at the host's index as given."""
    match = re.match(rf"{PROJECT}:hosts\[(\d+)\]", problem.key)
    if not match:
        return problem
    key = f"{PROJECT}:hosts[{host_index[int(match.group(1))]}]" + problem.key[match.end() :]
    return Problem(key, problem.value, problem.expected)


def _partial(sections: Mapping[str, Any]) -> tuple[StackConfig, frozenset[str], list[int]]:
    """The config with invalid parts left out, the sections that were whole, and for each
    host kept its index in the config as given.

    Hosts that do not parse are dropped one by one, so network checks still see the rest.
    """
    good: dict[str, Any] = {}
    whole: set[str] = set()
    host_index: list[int] = []
    for key in SECTIONS:
        if key not in sections:
            if not SECTION_FIELDS[key].is_required():
                whole.add(key)  # the default applies
            continue
        try:
            StackConfig.model_validate({**_MINIMAL, key: sections[key]})
            good[key] = sections[key]
            whole.add(key)
        except ValidationError:
            if key == "hosts" and isinstance(sections[key], list):
                host_index = [i for i, h in enumerate(sections[key]) if _valid_host(h)]
                good[key] = [sections[key][i] for i in host_index]
    if "hosts" in whole:
        host_index = list(range(len(sections.get("hosts", []))))
    return StackConfig.model_validate({**_MINIMAL, **good}), frozenset(whole), host_index


def _valid_host(value: Any) -> bool:
    try:
        Host.model_validate(value)
        return True
    except ValidationError:
        return False


# Just enough of a stack for one section to be validated on its own.
_MINIMAL: dict[str, Any] = {
    "hosts": [],
    "gitlab": {"domain": "gitlab.example.org", "images": {}},
}


def load_stack_config() -> tuple[StackConfig, dict[str, Any]]:
    """Read this stack's `forgeway:*` config from the Pulumi runtime and validate it."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = {}
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    for key in merged:
        if key.startswith(f"{PROJECT}:"):
            raw[key] = _decode(runtime_config.get_config(key))
    secret_keys = [k for k in raw if runtime_config.is_config_secret(k)]
    # What config cannot see (the number only arrives): `0022` written in the stack file.
    spelled = stack_file_problems(Path.cwd(), pulumi.get_stack())
    try:
        parsed = parse_stack(raw, secret_keys)
    except ConfigError as exc:
        raise ConfigError([*exc.problems, *spelled]) from None
    if spelled:
        raise ConfigError(spelled)
    return parsed


def _as_yaml_reads(text: str) -> str:
    """What the CLI's YAML makes of a number written with a leading zero or base prefix."""
    digits = text.replace("_", "").lstrip("+-")
    sign = "-" if text.startswith("-") else ""
    try:
        value = int(digits, 0) if digits[1:2].isalpha() else int(digits, 8)
    except ValueError:
        return "not a whole number"
    return f"{sign}{value}"


def stack_file_problems(project_dir: Path, stack: str) -> list[Problem]:
    """Numbers in the stack's file that YAML reads in another base (`0022` is 18)."""
    path = stack_file(project_dir, stack)
    if path is None:
        return []
    return [
        Problem(
            key_path(found.top.removeprefix(f"{PROJECT}:"), found.loc),
            found.text,
            f"a number written in decimal without a leading zero: YAML reads {found.text} as "
            f"{_as_yaml_reads(found.text)} (in {path.name})",
        )
        for found in surprising_numbers(path.read_text(), f"{PROJECT}:")
    ]


def _decode(value: Any) -> Any:
    # Pulumi hands every value over as a string; objects, lists, numbers and booleans
    # arrive as JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
