"""Every key forgeway renders is one the real program knows (components/render/known_keys/).

The stand-ins accept any key, and none of the three programs refuses an unknown one where
it matters: omnibus ignores a misspelt attribute, gitlab-runner decodes config.toml without
checking for undecoded keys (common/config.go, ``toml.DecodeFile``), and dockerd refuses only
top-level names it has no flag for (``findConfigurationConflicts``, so ``registry-mirror``, the
flag's name, passes and is never read). So the rendered files of the prod and lab stacks and
of the variants the render tests build are checked here against key lists taken from each
program's source at the pinned version (tools/ci/known_keys.py makes them; its extractors
are tested in test_known_keys_extractor.py).

Keys are matched exactly: encoding/json and BurntSushi/toml also accept other letter cases,
but forgeway writes the documented spelling."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from components.config import StackConfig, parse_stack
from components.docker_host import daemon_json_for
from components.render.docker_daemon import OWNED_KEYS, DaemonSettings, host_ipv6_prefixes, render_daemon_json
from components.render.gitlab import GitLabSettings, render_gitlab_rb, settings_from_config
from components.render.runner_config import RunnerSettingsView, render_config_toml
from components.runners import RunnerDefaults
from components.runners import _view as runner_view
from components.scripts import daemon_merge
from tests.stacks import lab_stack, prod_stack
from tests.unit.test_gitlab_render import GOLDEN_CASES, ruby_eval
from tests.unit.test_gitlab_render import base as gitlab_base

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2] / "components" / "render" / "known_keys"


@dataclass(frozen=True)
class KnownKeys:
    path: Path
    keys: frozenset[str]
    parents: frozenset[str]  # keys whose children are listed: tables with a fixed set of keys

    @property
    def source(self) -> str:
        return str(self.path.relative_to(DATA.parents[2]))


@cache
def known(name: str) -> KnownKeys:
    path = DATA / name
    keys = frozenset(line for line in path.read_text().splitlines() if line and not line.startswith("#"))
    parents = {k[:i] for k in keys for i, c in enumerate(k) if c in ".[" and i}
    return KnownKeys(path, keys, frozenset(parents))


def _version(image: str) -> str:
    """18.5.1 from gitlab/gitlab-ce:18.5.1-ce.0, 18.5.0 from gitlab/gitlab-runner:v18.5.0."""
    tag = image.rpartition(":")[2]
    found = re.match(r"v?(\d+\.\d+\.\d+)", tag)
    assert found, f"no version in the pinned image {image}"
    return found.group(1)


@cache
def stacks() -> dict[str, StackConfig]:
    return {"prod": parse_stack(*prod_stack())[0], "lab": parse_stack(*lab_stack())[0]}


def gitlab_rb_data() -> KnownKeys:
    versions = {_version(i) for i in stacks()["prod"].gitlab.images.values()}
    assert len(versions) == 1, f"prod pins more than one GitLab version: {versions}"
    return known(f"gitlab_rb-{versions.pop()}.txt")


def runner_toml_data() -> KnownKeys:
    versions = {_version(i) for i in stacks()["prod"].runners.images.values()}
    assert len(versions) == 1, f"prod pins more than one gitlab-runner version: {versions}"
    return known(f"runner_config_toml-{versions.pop()}.txt")


def daemon_json_data() -> list[KnownKeys]:
    """Every reference daemon: the lab's (Debian 12's docker.io 20.10) and a current docker."""
    found = sorted(p.name for p in DATA.glob("daemon_json-*.txt"))
    assert len(found) >= 2, found
    return [known(name) for name in found]


# --- the checks ----------------------------------------------------------------------


def _problem(what: str, key: str, data: KnownKeys) -> str:
    return f"{what}: unknown key {key} (not in {data.source})"


def tree_problems(what: str, tree: Mapping[str, Any], data: KnownKeys, ruby: bool = False) -> list[str]:
    """Keys of a parsed file that ``data`` does not list. A table whose key has listed children
    is checked key by key; one without (an env map, log labels) is free-form. ``ruby``: the
    settings a gitlab.rb set (top-level names are namespaces: ``nginx['listen_port']``)."""
    problems: list[str] = []

    def child(prefix: str, key: str) -> str:
        if ruby:
            return f"{prefix}['{key}']" if prefix else key
        return f"{prefix}.{key}" if prefix else key

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item, prefix)
            return
        if not isinstance(value, Mapping):
            return
        for key, inner in value.items():
            path = child(prefix, key)
            namespace = ruby and not prefix and isinstance(inner, Mapping)
            if not namespace and path not in data.keys:
                problems.append(_problem(what, path, data))
            elif namespace or path in data.parents:
                walk(inner, path)

    walk(tree, "")
    return problems


def gitlab_rb_problems(what: str, text: str, tmp_path: Path) -> list[str]:
    # Ruby reads the text (the gitlab_render harness): the keys are the ones omnibus would see.
    return tree_problems(f"gitlab.rb ({what})", ruby_eval(tmp_path, text), gitlab_rb_data(), ruby=True)


def config_toml_problems(what: str, text: str) -> list[str]:
    return tree_problems(f"config.toml ({what})", tomllib.loads(text), runner_toml_data())


def daemon_json_problems(what: str, daemon: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for data in daemon_json_data():
        # the host's merge adds "experimental" for the daemons that need it: check it too
        major = int(data.path.stem.split("-")[1].split(".")[0])
        merged = daemon_merge.merge({}, daemon, [], major)
        problems += tree_problems(f"daemon.json ({what})", merged, data)
    return problems


# --- what forgeway renders -------------------------------------------------------------

GITLAB_VARIANTS: dict[str, GitLabSettings] = {
    **GOLDEN_CASES,
    "registry-off": gitlab_base(registry_enabled=False),
    "registry-on-gitlab-domain": gitlab_base(registry_domain=None),
    "small-device-8gb": gitlab_base(small_device=True, memory_budget_mb=8192),
    "external-url-8443": gitlab_base(https_public_port=8443, external_url="https://gitlab.example.org:8443"),
}


def rendered_gitlab_rb() -> dict[str, str]:
    texts = {name: render_gitlab_rb(s).text for name, s in GITLAB_VARIANTS.items()}
    for stack, cfg in stacks().items():
        texts[f"{stack} stack"] = render_gitlab_rb(settings_from_config(cfg, "10.8.0.1", ("ops@example.org",))).text
    return texts


def _runner_view(**changes: Any) -> RunnerSettingsView:
    view = RunnerSettingsView(
        name="pi5",
        url="https://gitlab.example.org",
        token="glrt-" + "a" * 20,
        arch="arm64",
        concurrent=4,
        default_image="debian:12.8-slim",
    )
    return dataclasses.replace(view, **changes)


RUNNER_VARIANTS: dict[str, RunnerSettingsView] = {
    "plain": _runner_view(),
    "everything": _runner_view(
        tags=("pi5",),
        privileged=True,
        protected_only=True,
        pull_policy="always",
        helper_image="gitlab/gitlab-runner-helper:arm64-v18.5.0",
        job_memory_mb=2048,
        mtu=1420,
        ipv6=True,
        ca_registries=("registry.example.org:5050",),
        docker_socket_in_jobs=True,
        extra_volumes=("/srv/cache:/srv/cache:ro",),
    ),
}


def rendered_config_toml() -> dict[str, str]:
    texts = {name: render_config_toml(view) for name, view in RUNNER_VARIANTS.items()}
    for stack, cfg in stacks().items():
        own_ca = cfg.gitlab.tls == "own-ca"
        for host in cfg.hosts_with("runner"):
            texts[f"{stack} stack, {host.name}"] = runner_view(
                RunnerDefaults.of(cfg),
                host,
                "glrt-" + "b" * 20,
                4,
                endpoints=["registry.example.org:5050"],
                own_ca=own_ca,
            )
    return texts


def rendered_daemon_json() -> dict[str, dict[str, Any]]:
    bridge, pool = host_ipv6_prefixes(ipaddress.IPv6Network("fd00:f0e5:7a1b::/48"), 0)
    found: dict[str, dict[str, Any]] = {
        "plain": render_daemon_json(DaemonSettings(address_pools=[("172.28.0.0/14", 24)])),
        "everything": render_daemon_json(
            DaemonSettings(
                address_pools=[("172.28.0.0/14", 24)],
                mtu=1420,
                ipv6_bridge=bridge,
                ipv6_pool=pool,
                registry_mirrors=["https://mirror.example.org"],
            )
        ),
    }
    for stack, cfg in stacks().items():
        for host in cfg.hosts_with("runner"):
            found[f"{stack} stack, {host.name}"] = dict(daemon_json_for(cfg, host))
    return found


# --- tests -----------------------------------------------------------------------------


def test_data_is_for_the_pinned_versions() -> None:
    """Bumping a pinned image without regenerating the data fails here (no file to read)."""
    gitlab, runner = gitlab_rb_data(), runner_toml_data()
    prod = stacks()["prod"]
    # the file's name and its header's source tag agree: 18.5.1 <- 18.5.1+ce.0, 18.5.0 <- v18.5.0
    for data, image in ((gitlab, prod.gitlab.images["amd64"]), (runner, prod.runners.images["amd64"])):
        tag = re.compile(rf"^# source: .* at v?{re.escape(_version(image))}\S* \(commit [0-9a-f]{{40}}\)$", re.M)
        assert tag.search(data.path.read_text()), (data.source, image)
    assert "nginx['listen_port']" in gitlab.keys and "runners.docker.privileged" in runner.keys


@pytest.mark.parametrize("name", sorted(rendered_gitlab_rb()))
def test_every_gitlab_rb_key_is_one_omnibus_knows(name: str, tmp_path: Path) -> None:
    assert gitlab_rb_problems(name, rendered_gitlab_rb()[name], tmp_path) == []


@pytest.mark.parametrize("name", sorted(rendered_config_toml()))
def test_every_config_toml_key_is_one_gitlab_runner_knows(name: str) -> None:
    assert config_toml_problems(name, rendered_config_toml()[name]) == []


@pytest.mark.parametrize("name", sorted(rendered_daemon_json()))
def test_every_daemon_json_key_is_one_dockerd_knows(name: str) -> None:
    assert daemon_json_problems(name, rendered_daemon_json()[name]) == []


def test_the_checks_see_every_variant() -> None:
    """The variants reach the optional keys: a key the renderer can write but no case renders
    would go unchecked."""
    rb = "".join(rendered_gitlab_rb().values())
    for key in ("registry['enable']", "letsencrypt['contact_emails']", "puma['worker_processes']", "registry_nginx["):
        assert key in rb, key
    toml = "".join(rendered_config_toml().values())
    for key in ("tls-ca-file", "helper_image", "memory =", "network_mtu", "enable_ipv6"):
        assert key in toml, key
    daemon = {k for d in rendered_daemon_json().values() for k in d}
    assert daemon >= OWNED_KEYS - {"experimental"}  # the merge's, for docker before 27


# --- planted misspellings fail, naming the key and the file ----------------------------


def _plant(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("nginx['listen_port']", "nginx['listen_prot']", "nginx['listen_prot']"),
        ("registry_nginx['listen_https']", "registry_nginx['listen_http']", "registry_nginx['listen_http']"),
        ("'maxretry'", "'max_retry'", "gitlab_rails['rack_attack_git_basic_auth']['max_retry']"),
        ("external_url '", "externel_url '", "externel_url"),
    ],
)
def test_a_misspelt_gitlab_rb_key_fails(old: str, new: str, key: str, tmp_path: Path) -> None:
    text = _plant(render_gitlab_rb(gitlab_base()).text, old, new)
    problems = gitlab_rb_problems("planted", text, tmp_path)
    assert problems == [f"gitlab.rb (planted): unknown key {key} (not in {gitlab_rb_data().source})"]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("    privileged =", "    privilegd =", "runners.docker.privilegd"),
        ("  tls-ca-file =", "  tls_ca_file =", "runners.tls_ca_file"),
        ("FF_NETWORK_PER_BUILD", "FF_NETWORK_PER_BUILDS", "runners.feature_flags.FF_NETWORK_PER_BUILDS"),
        ("check_interval", "check_intervall", "check_intervall"),
    ],
)
def test_a_misspelt_config_toml_key_fails(old: str, new: str, key: str) -> None:
    text = _plant(render_config_toml(RUNNER_VARIANTS["everything"]), old, new)
    problems = config_toml_problems("planted", text)
    assert problems == [f"config.toml (planted): unknown key {key} (not in {runner_toml_data().source})"]


Plant = Callable[[dict[str, Any]], None]


def _rename(key: str, new: str) -> Plant:
    return lambda d: d.__setitem__(new, d.pop(key))


@pytest.mark.parametrize(
    ("plant", "key"),
    [
        (_rename("registry-mirrors", "registry-mirror"), "registry-mirror"),
        (lambda d: d["log-opts"].__setitem__("max_size", d["log-opts"].pop("max-size")), "log-opts.max_size"),
        (lambda d: d["default-address-pools"][0].__setitem__("sizes", 24), "default-address-pools.sizes"),
    ],
)
def test_a_misspelt_daemon_json_key_fails(plant: Plant, key: str) -> None:
    daemon = rendered_daemon_json()["everything"]
    plant(daemon)
    problems = daemon_json_problems("planted", daemon)
    assert problems == [
        f"daemon.json (planted): unknown key {key} (not in {data.source})" for data in daemon_json_data()
    ]


def test_a_key_only_newer_daemons_know_fails_for_the_lab_daemon() -> None:
    """firewall-backend came after 20.10: checking against each reference daemon catches it."""
    problems = daemon_json_problems("planted", {**rendered_daemon_json()["plain"], "firewall-backend": "nftables"})
    assert problems == [
        f"daemon.json (planted): unknown key firewall-backend (not in {known('daemon_json-20.10.24.txt').source})"
    ]
