"""components.config: the bad-config corpus, valid variants of prod, the message format.

Each file in ``bad_configs/`` is a patch over the decrypted prod stack::

    description: one line saying what a user got wrong
    set: {path: value}        # forgeway:hosts[1].arch, forgeway:gitlab.images.amd64, ...
    delete: [path]            # applied after `set`, in order
    plaintext: [full key]     # a secret key of prod treated as NOT secret
    secret: [full key]        # extra keys treated as secret (stored encrypted)
    sensitive: [full key]     # keys whose values must never be printed, although not secret
    expect: [{key, contains, got?}]   # every problem that must be reported
    also: [key]               # further problem keys that may be reported
    xfail: reason             # a known bug in components/config/ (strict)

Setting a path ``[n]`` one past the end of a list appends to it.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import (
    PROJECT,
    SECRET_KEYS,
    SECTIONS,
    ConfigError,
    Problem,
    RunnerSettings,
    StackConfig,
    parse_stack,
)
from tests.stacks import ROOT, prod_stack

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parent / "bad_configs"
CASE_FILES = sorted(CORPUS.glob("*.yaml"))
CASE_FIELDS = {"description", "set", "delete", "plaintext", "secret", "sensitive", "expect", "also", "xfail"}
EXPECT_FIELDS = {"key", "contains", "got"}
# What a problem's key must look like: a full key, then .field or [index] parts.
KEY_SYNTAX = re.compile(rf"^{PROJECT}:[a-z_]+(\.[A-Za-z0-9_-]+|\[\d+\])*$")
_TOP = re.compile(r"[a-z0-9-]+:[A-Za-z0-9_]+")  # forgeway:hosts, docker:host
_PART = re.compile(r"\[(\d+)\]|\.([A-Za-z0-9_-]+)")
_MISSING = object()

Config = dict[str, Any]


@pytest.fixture(scope="session")
def prod() -> tuple[Config, list[str]]:
    """The prod stack, decrypted once (PBKDF2 is slow); tests patch deep copies."""
    return prod_stack()


# --- paths and patches ---------------------------------------------------------------


def split_path(path: str) -> list[str | int]:
    """'forgeway:hosts[1].arch' -> ['forgeway:hosts', 1, 'arch']."""
    top = _TOP.match(path)
    if top is None:
        raise ValueError(f"not a full key path: {path!r}")
    parts: list[str | int] = [top.group(0)]
    pos = top.end()
    while pos < len(path):
        part = _PART.match(path, pos)
        if part is None:
            raise ValueError(f"bad path {path!r} at {path[pos:]!r}")
        parts.append(int(part.group(1)) if part.group(1) is not None else part.group(2))
        pos = part.end()
    return parts


def lookup(config: Mapping[str, Any], path: str) -> Any:
    """The value at path, or _MISSING."""
    try:
        parts = split_path(path)
    except ValueError:
        return _MISSING
    current: Any = config
    for part in parts:
        in_list = isinstance(part, int) and isinstance(current, list) and part < len(current)
        in_dict = isinstance(part, str) and isinstance(current, dict) and part in current
        if not (in_list or in_dict):
            return _MISSING
        current = current[part]
    return current


def _parent(config: Config, path: str, create: bool) -> tuple[Any, str | int]:
    parts = split_path(path)
    current: Any = config
    for part, following in itertools.pairwise(parts):
        if isinstance(current, dict) and part not in current and create and isinstance(following, str):
            current[part] = {}
        try:
            current = current[part]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{path}: no {part!r} to descend into") from exc
    return current, parts[-1]


def set_path(config: Config, path: str, value: Any) -> None:
    parent, last = _parent(config, path, create=True)
    if isinstance(parent, list) and isinstance(last, int) and last == len(parent):
        parent.append(value)
        return
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        parent[last] = value
        return
    if isinstance(parent, dict) and isinstance(last, str):
        parent[last] = value
        return
    raise ValueError(f"{path}: cannot set {last!r} in a {type(parent).__name__}")


def delete_path(config: Config, path: str) -> None:
    parent, last = _parent(config, path, create=False)
    try:
        del parent[last]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: nothing to delete") from exc


@dataclass(frozen=True)
class Patched:
    config: Config
    secret_keys: list[str]
    sensitive: frozenset[str]  # top-level keys whose values are never printed
    hidden: frozenset[str]  # strings (secret values and parts of them) no message may contain


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    return [value] if isinstance(value, str) else []


def _fragments(secret: str) -> set[str]:
    """The secret and, so a truncated echo is caught too, its first and last 16 characters
    (PEM armour lines left out)."""
    core = "\n".join(line for line in secret.splitlines() if not line.startswith("-----")).strip()
    return {secret, core[:16], core[-16:]} if len(core) > 16 else {secret}


def apply_patch(base: tuple[Config, list[str]], patch: Mapping[str, Any]) -> Patched:
    config, secret_keys = copy.deepcopy(base[0]), list(base[1])
    for path, value in (patch.get("set") or {}).items():
        set_path(config, path, copy.deepcopy(value))
    for path in patch.get("delete") or []:
        delete_path(config, path)
    for key in patch.get("plaintext") or []:
        if key not in secret_keys:
            raise ValueError(f"plaintext: {key} is not a secret key of the base stack")
        secret_keys.remove(key)
    secret_keys += [k for k in patch.get("secret") or [] if k not in secret_keys]
    schema_secrets = {f"{PROJECT}:{k}" for k in SECRET_KEYS} & set(config)
    sensitive = set(secret_keys) | schema_secrets | set(patch.get("sensitive") or [])
    # Whole sections stored encrypted are checked by their [secret] values; their leaves
    # (arm64, runner, ...) are words every message uses.
    hidden = {
        fragment
        for key in sensitive
        if key.removeprefix(f"{PROJECT}:") not in SECTIONS
        for leaf in _leaves(config.get(key))
        if len(leaf) >= 8
        for fragment in _fragments(leaf)
    }
    return Patched(config, secret_keys, frozenset(sensitive), frozenset(hidden))


# --- the corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    patch: dict[str, Any]
    expect: list[dict[str, str]]
    also: list[str]
    xfail: str | None


def load_case(path: Path) -> Case:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path.name
    assert set(doc) <= CASE_FIELDS, f"{path.name}: unknown fields {set(doc) - CASE_FIELDS}"
    description = doc.get("description")
    assert isinstance(description, str) and description.strip() and "\n" not in description.strip(), path.name
    expect = doc.get("expect")
    assert isinstance(expect, list) and expect, f"{path.name}: expect must list at least one problem"
    for entry in expect:
        assert isinstance(entry, dict) and {"key", "contains"} <= set(entry) <= EXPECT_FIELDS, (path.name, entry)
        assert all(isinstance(v, str) for v in entry.values()), (path.name, entry)
        assert KEY_SYNTAX.match(entry["key"]), (path.name, entry["key"])
    also = doc.get("also") or []
    assert all(isinstance(k, str) for k in also), path.name
    xfail = doc.get("xfail")
    assert xfail is None or (isinstance(xfail, str) and xfail), path.name
    patch = {k: doc[k] for k in ("set", "delete", "plaintext", "secret", "sensitive") if doc.get(k)}
    return Case(path.name, patch, expect, also, xfail)


def _case_params() -> list[Any]:
    params = []
    for path in CASE_FILES:
        case = load_case(path)
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        params.append(pytest.param(case, id=path.name, marks=marks))
    return params


def _shows(shown: str, value: Any) -> bool:
    """Whether a problem's value text is the given value (maybe cut short with '...')."""
    text = json.dumps(value)
    return shown == text or (shown.endswith("...") and len(shown) > 3 and text.startswith(shown[:-3]))


def check_problem_values(problems: list[Problem], patched: Patched, pinned: set[Problem]) -> None:
    """Every problem names a real key and shows the value given there, or [secret];
    ``pinned`` problems have their value checked by a case's ``got`` instead (a bad map
    key, say, shows the key)."""
    for p in problems:
        assert KEY_SYNTAX.match(p.key), f"not a key: {p.key!r}"
        top = _TOP.match(p.key)
        assert top is not None
        given = lookup(patched.config, p.key)
        if top.group(0) in patched.sensitive:
            want = {"[secret]"} if given is not _MISSING else {"[secret]", "nothing"}
            assert p.value in want, f"{p.key} is secret but shows {p.value!r}"
        elif p in pinned:
            continue
        elif given is _MISSING:
            assert p.value == "nothing", f"{p.key} is not in the config, yet shows {p.value!r}"
        elif isinstance(given, dict | list):
            assert p.value not in {"", "nothing"}, f"{p.key} is set, yet shows {p.value!r}"
        else:
            assert _shows(p.value, given), f"{p.key} is {given!r} but shows {p.value!r}"


def check_error(err: ConfigError, patched: Patched, expect: list[dict[str, str]], also: list[str]) -> None:
    problems = err.problems
    assert problems, "a ConfigError without problems"
    text = str(err)
    # One exception listing every problem, one per line.
    lines = text.splitlines()
    assert f"has {len(problems)} problem(s)" in lines[0]
    assert lines[1:] == [f"  - {p}" for p in problems]

    def matches(p: Problem, e: Mapping[str, str]) -> bool:
        return p.key == e["key"] and e["contains"] in p.expected and p.value == e.get("got", p.value)

    check_problem_values(problems, patched, {p for p in problems for e in expect if "got" in e and matches(p, e)})
    for fragment in patched.hidden:
        assert fragment not in text, f"a secret value is printed: ...{fragment[:4]}..."

    for e in expect:
        assert any(matches(p, e) for p in problems), f"not reported: {e}\n{text}"
    unexpected = [str(p) for p in problems if p.key not in also and not any(matches(p, e) for e in expect)]
    assert not unexpected, "unexpected problems:\n" + "\n".join(unexpected)


@pytest.mark.parametrize("case", _case_params())
def test_bad_config_is_refused_with_every_problem(case: Case, prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, case.patch)
    with pytest.raises(ConfigError) as info:
        parse_stack(patched.config, patched.secret_keys)
    check_error(info.value, patched, case.expect, case.also)


def test_corpus_has_at_least_30_cases() -> None:
    assert len(CASE_FILES) >= 30


def test_corpus_files_are_named_numbered_and_change_prod(prod: tuple[Config, list[str]]) -> None:
    numbers = []
    descriptions = set()
    for path in CASE_FILES:
        assert re.fullmatch(r"\d{3}-[a-z0-9]+(-[a-z0-9]+)*\.yaml", path.name), path.name
        numbers.append(path.name[:3])
        case = load_case(path)
        descriptions.add(yaml.safe_load(path.read_text())["description"])
        patched = apply_patch(prod, case.patch)
        changed = patched.config != prod[0] or patched.secret_keys != prod[1] or patched.sensitive - set(prod[1])
        assert changed, f"{path.name} leaves prod as it is"
    assert len(set(numbers)) == len(numbers), "two cases share a number"
    assert len(descriptions) == len(CASE_FILES), "two cases share a description"


# --- the checker itself can fail -------------------------------------------------------


def test_the_checker_catches_leaks_strays_and_misses(prod: tuple[Config, list[str]]) -> None:
    patched = apply_patch(prod, {"set": {"forgeway:hosts[1].arch": "armv7"}})
    password = prod[0]["forgeway:gitlab_root_password"]
    arch = Problem("forgeway:hosts[1].arch", '"armv7"', "32-bit ARM is not supported")
    expect = [{"key": arch.key, "contains": "32-bit ARM"}]
    check_error(ConfigError([arch]), patched, expect, [])  # the baseline passes
    bad = [
        ([arch, Problem("forgeway:gitlab_root_password", json.dumps(password), "x")], expect),  # a leak
        ([arch, Problem("forgeway:tunnel.mtu", "nothing", "x")], expect),  # a problem nobody expected
        ([Problem("forgeway:hosts[2].arch", '"armv7"', "32-bit ARM")], expect),  # wrong key
        ([Problem(arch.key, '"arm64"', arch.expected)], expect),  # not the value given
        ([Problem("forgeway:gitlab.images.aarch64.[key]", '"x"', "y")], []),  # not a key
    ]
    for problems, want in bad:
        with pytest.raises(AssertionError):
            check_error(ConfigError(problems), patched, want, [])


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
    assert set(secrets) == {"ssh_private_key", "gitlab_root_password", "runner_tokens"}
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
        lambda _, sec: set(sec) == {"runner_tokens"},
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


# --- issue 17: runners created through GitLab's API ------------------------------------


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
