"""No traceback, ever: hostile values in every config field end in a clean config error
naming the key, or in a program whose host-bound files read back with their own parsers.

The base is the prod stack with every optional field set (RICH), so every field is a
leaf here. Hypothesis replaces one leaf at a time with a hostile value (control
characters, quotes, NUL, very long or non-ASCII strings, shell and unit syntax,
booleans, negative and huge numbers, nested objects) or with the leaf's own value
spoiled. Each example must end in one of:

* ``ConfigError`` whose problems all name a well-formed key, one of them the replaced
  key (or a key on its path), none showing a secret;
* a config that loads, and then every renderer runs (wg0.conf, the nft rulesets,
  gitlab.rb, config.toml, daemon.json, the docker client files, ssh options, the
  host scripts' command lines) and its output parses: ``nft -c`` (in a scratch user and
  network namespace), ``ruby -c``, tomllib, json, ``systemd-analyze calendar``; the
  WireGuard file line by line as ``wg`` reads it.

Derandomized with a fixed example count: the same examples on every run.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from components.config import PROJECT, ConfigError, parse_stack
from tests.stacks import prod_stack
from tests.unit.config_patches import Config, set_path, split_path
from tests.unit.render_all import render_everything

pytestmark = pytest.mark.unit

# A full key: .field and [index] parts, and ["..."] (JSON-quoted) for a map key that is no word.
KEY_SYNTAX = re.compile(rf'{PROJECT}:[a-z_]+(\.[A-Za-z0-9_-]+|\[\d+\]|\["([^"\\\x00-\x1f]|\\.)*"\])*')


# Every optional field set to a valid value, so hostile values reach each of them.
RICH: dict[str, Any] = {
    "forgeway:hosts[1].proxy": {"http_proxy": "http://proxy.home.arpa:3128", "no_proxy": ["nas.home.arpa"]},
    "forgeway:hosts[2].jump_host": "jetson",
    "forgeway:hosts[2].tunnel_address": "10.8.0.11",
    "forgeway:hosts[2].docker_socket": "/run/docker.sock",
    "forgeway:hosts[2].runner.concurrent": 2,
    "forgeway:hosts[2].runner.job_memory_mb": 2048,
    "forgeway:hosts[2].runner.multiarch": True,
    "forgeway:hosts[3].proxy.no_proxy": [".home.arpa", "10.0.0.0/8"],
    "forgeway:tunnel.mtu": 1400,
    "forgeway:tunnel.endpoint": "vps.example.org",
    "forgeway:tunnel.implementation": "auto",
    "forgeway:tunnel.admin_peers": ["jetson"],
    "forgeway:forwarding.admin_ssh_port": 2202,
    "forgeway:gitlab.external_url": "https://gitlab.example.org",
    "forgeway:gitlab.small_device": "auto",
    "forgeway:gitlab.memory_limit_mb": 3072,
    "forgeway:gitlab.letsencrypt_emails": ["admin@example.org"],
    "forgeway:gitlab.publish_on_lan": False,
    "forgeway:gitlab.volume_paths": {"data": "/srv/gitlab/data", "logs": "/srv/gitlab/logs"},
    "forgeway:registry.enabled": True,
    "forgeway:runners.helper_images": {"arm64": "gitlab/gitlab-runner-helper:arm64-v18.5.0"},
    "forgeway:runners.default_job_image": "debian:12.8-slim",
    "forgeway:runners.pull_policy": "if-not-present",
    "forgeway:runners.ipv6": True,
    "forgeway:runners.ipv6_prefix": "fd00:f0e5:7a1b::/48",
    "forgeway:runners.address_pools": [{"base": "172.28.0.0/14", "size": 24}],
    "forgeway:runners.registry_mirrors": ["https://mirror.example.org"],
    "forgeway:runners.log_max_size_mb": 10,
    "forgeway:runners.log_max_files": 3,
    "forgeway:runners.prune": {"threshold_percent": 80, "keep_hours": 72, "on_calendar": "*:0/30"},
    "forgeway:runners.binfmt_image": "tonistiigi/binfmt:qemu-v8.1.5",
}


def _rich(prod: tuple[Config, list[str]]) -> tuple[Config, list[str]]:
    config = copy.deepcopy(prod[0])
    for path, value in RICH.items():
        set_path(config, path, copy.deepcopy(value))
    return config, list(prod[1])


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}")
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, value


def _maps(value: Any, key: str) -> Iterator[str]:
    """The keys of every map in the tree (a model or a dict such as images)."""
    if isinstance(value, dict):
        yield key
        for k, v in value.items():
            yield from _maps(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _maps(v, f"{key}[{i}]")


@functools.cache
def _map_keys() -> tuple[str, ...]:
    config, _, _ = _base()
    return tuple(m for key, value in config.items() if key.startswith(PROJECT) for m in _maps(value, key))


@functools.cache
def _base() -> tuple[Config, tuple[str, ...], tuple[tuple[str, Any], ...]]:
    config, secret_keys = _rich(prod_stack())
    parse_stack(config, secret_keys)  # the base itself loads
    leaves = tuple(leaf for key, value in config.items() if key.startswith(PROJECT) for leaf in _leaves(value, key))
    return config, tuple(secret_keys), leaves


HOSTILE_TEXT = [
    "", " ", "\n", "a\nb", "x\r\ny", "\t", '"', "'", "\\", "\x00", "a\x00b", "$(reboot)", "`id`", "; rm -rf /",
    "${HOME}", "%n%s%h", "../../etc/passwd", "é", "日本語", "\u202e", "\ufeff", "🙂", "\x1b[31m", "x" * 5000,
    "A" * 300, "eth0\n", "fe80::1%eth0\n[Peer]", "10.0.0.0/8", "0.0.0.0/0", "::", "latest", "FILL-IN",
    "[secret]", "}", "]]\n[[runners]]", "#{`id`}", '";system("id");"', "http://u:p@h", "*", "-1", "0x10", "0o17",
    "1e3", "yes", "on", "null",
]  # fmt: skip
HOSTILE_OTHER: list[Any] = [
    True, False, None, 0, -1, -65536, 65536, 2**31, 2**63, 10**30, 1.5, -0.0, math.inf, math.nan, [], {},
    [None], [[]], {"a": {"b": "c"}}, ["x"] * 40, {"": ""}, {"\n": 1},
]  # fmt: skip


# Unusual values a field may well take: each that loads must still render and parse.
EDGY_VALID: list[Any] = [
    "fe80::1%eth0", "2001:db8::10", "fe80::51%eth0.100", "203.0.113.99", "HOST.Example.ORG", "a" * 63 + ".org",
    "eth0.100", "enp0s31f6", "wg_home", "x" * 15, "b-1", "a", "9", "zz" * 31 + "z", "socks5://[2001:db8::1]:1080",
    "https://proxy.example.org", "*.example.org", "[2001:db8::1]:3128", "192.168.0.0/16", "fd00::/8", "10.8.0.0/29",
    "10.9.0.0/24", "100.64.0.0/10", "Mon..Fri 03:00", "*-*~01 04:00:00 UTC", "minutely", "*:0/5", "weekly",
    "/srv/x-y_z/data", "/var/run/docker.sock", "user_1", "_svc", "a-b", "ssh", "snat", "preserve-source", "own-ca",
    "on", "off", "wireguard-go", "kernel", "never", "always", "amd64", "arm64", "aarch64", "X86_64",
    "registry.example.org:5000/a/b:1.2.3", "gitlab/gitlab-ce:18.5.1-ce.0@sha256:" + "0" * 64, "x@example.org",
    1, 1280, 1360, 1420, 8920, 9000, 64, 65535, 600, 99, 10, 29, 16, 2048, 1024, 20, 8760, True, False,
]  # fmt: skip


def _spoiled(original: Any) -> list[Any]:
    """The leaf's own value, made hostile."""
    if not isinstance(original, str):
        return [str(original), [original], {"value": original}]
    return [original + "\n", original + '"', " " + original, original + "\x00", original * 60, original.upper()]


@st.composite
def _replacement(draw: st.DrawFn) -> tuple[str, Any]:
    _, _, leaves = _base()
    key, original = draw(st.sampled_from(leaves))
    value = draw(
        st.one_of(
            st.sampled_from(HOSTILE_TEXT),
            st.sampled_from(HOSTILE_OTHER),
            st.sampled_from(EDGY_VALID),
            st.sampled_from(EDGY_VALID),
            st.sampled_from(_spoiled(original)),
            st.text(max_size=40),
            st.integers(min_value=-(2**70), max_value=2**70),
        )
    )
    return key, value


def _on_path(problem_key: str, key: str) -> bool:
    """The problem names the replaced key, a key inside it, or one of its parents."""
    return any(a == b or a.startswith((b + ".", b + "[")) for a, b in ((problem_key, key), (key, problem_key)))


@settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_replacement())
def test_a_hostile_value_in_any_field_ends_in_a_config_error_or_files_that_parse(replacement: tuple[str, Any]) -> None:
    key, value = replacement
    base, secret_keys, _ = _base()
    config = copy.deepcopy(base)
    set_path(config, key, value)
    try:
        stack, _ = parse_stack(config, list(secret_keys))
    except ConfigError as error:
        event("refused")
        keys = [p.key for p in error.problems]
        assert all(KEY_SYNTAX.fullmatch(k) for k in keys), keys
        assert all("\n" not in str(p) and "\x00" not in str(p) for p in error.problems), error.problems
        # The replaced key; or, for a valid value with consequences elsewhere (a host renamed,
        # a port moved), a problem that names the replaced key or the new value in its text.
        field = [part for part in split_path(key)[1:] if isinstance(part, str)][-1:] or [key]
        named = any(_on_path(k, key) for k in keys) or any(
            re.search(rf"\b{re.escape(field[0])}\b", p.expected)
            or (isinstance(value, str) and value and value in str(p))
            for p in error.problems
        )
        assert named, f"replaced {key}; the error names only {keys}"
        assert all(p.expected.strip() for p in error.problems)
        top = split_path(key)[0]
        if top in secret_keys and isinstance(value, str) and len(value) >= 8 and value != "[secret]":
            assert value not in str(error), "a secret is shown"
        return
    event("loaded and rendered")
    render_everything(stack)


def test_the_rich_base_sets_every_section(prod: tuple[Config, list[str]]) -> None:
    _, _, leaves = _base()
    keys = {k for k, _ in leaves}
    assert len(keys) >= 100
    for needle in ("proxy.no_proxy", "runners.prune.on_calendar", "tunnel.endpoint", "gitlab.volume_paths.data"):
        assert any(needle in k for k in keys), needle


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.data())
def test_a_hostile_map_key_is_named_quoted_on_one_line(data: st.DataObject) -> None:
    """Keys are values too (a --path set with ["..."]): one with a newline must not start
    a line of its own in the error, nor crash the loader."""
    base, secret_keys, _ = _base()
    where = data.draw(st.sampled_from(_map_keys()))
    name = data.draw(st.one_of(st.sampled_from([k for k in HOSTILE_TEXT if isinstance(k, str)]), st.text(max_size=20)))
    config = copy.deepcopy(base)
    node: Any = config
    for part in split_path(where):
        node = node[part]
    node[name] = data.draw(st.sampled_from(["x", 1, True, None, {"a": 1}]))
    try:
        parse_stack(config, list(secret_keys))
    except ConfigError as error:
        assert all(KEY_SYNTAX.fullmatch(p.key) for p in error.problems), [p.key for p in error.problems]
        assert all("\n" not in str(p) and "\x00" not in str(p) for p in error.problems), error.problems
        return
    assert name in node, "a map took an unknown key"  # maps such as runner_tokens take any valid name
