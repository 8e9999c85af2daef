"""A runner host's gitlab-runner ``config.toml``, rendered from config (pure: no Pulumi, no I/O).

Strings are written as TOML basic strings by ``toml_str`` (JSON's escaping is TOML's, but
for DEL and astral characters, handled), so no value can end its string. The token is in
the text: the program calls this inside ``apply`` on the secret token, and the result
stays secret (it reaches the host on a command's stdin into a 0600 file).

With runner authentication tokens (``glrt-``), GitLab keeps a runner's tags, "run
untagged" and "protected" on its side (set when the runner is created in GitLab); the
file names them in a comment so what GitLab must say is visible next to what runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["CA_PATH", "RunnerSettingsView", "registration", "render_config_toml", "toml_str"]

# Where the runner container finds the stack's CA (its config volume is /etc/gitlab-runner).
CA_PATH = "/etc/gitlab-runner/certs/ca.crt"


def toml_str(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("a lone surrogate cannot be written to TOML")
    return text


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(toml_str(v) for v in values) + "]"


@dataclass(frozen=True)
class RunnerSettingsView:
    """Everything config.toml depends on, already validated by components/config.py."""

    name: str  # the host's name
    url: str  # GitLab's external URL
    token: str  # glrt-... (secret)
    arch: str  # arm64 | amd64: the first tag
    concurrent: int
    default_image: str
    tags: Sequence[str] = ()
    privileged: bool = False
    protected_only: bool = False
    pull_policy: str = "if-not-present"
    helper_image: str | None = None
    job_memory_mb: int | None = None
    mtu: int | None = None  # the tunnel MTU: per-job networks and docker-in-docker
    ipv6: bool = False
    ca_registries: Sequence[str] = ()  # registry endpoints to trust with CA_PATH (own-ca)
    docker_socket_in_jobs: bool = False
    cache_dir: str = "/cache"
    extra_volumes: Sequence[str] = field(default_factory=tuple)


def registration(s: RunnerSettingsView) -> dict[str, object]:
    """What the runner must be created with in GitLab (tags, untagged, protected)."""
    return {
        "tag_list": [s.arch, *s.tags],
        "run_untagged": False,
        "access_level": "ref_protected" if s.protected_only else "not_protected",
    }


def render_config_toml(s: RunnerSettingsView) -> str:
    volumes = [s.cache_dir, *s.extra_volumes]
    volumes += [f"{CA_PATH}:/etc/docker/certs.d/{endpoint}/ca.crt:ro" for endpoint in s.ca_registries]
    if s.docker_socket_in_jobs:
        volumes.append("/var/run/docker.sock:/var/run/docker.sock")
    lines = [
        "# Rendered by forgeway (components/render/runner_config.py); edit the stack config instead.",
        f"# In GitLab this runner must have: tags {', '.join([s.arch, *s.tags])}; "
        f"run untagged jobs: no; protected: {'yes' if s.protected_only else 'no'}.",
        f"concurrent = {int(s.concurrent)}",
        "check_interval = 0",
        "shutdown_timeout = 0",
        "",
        "[[runners]]",
        f"  name = {toml_str(s.name)}",
        f"  url = {toml_str(s.url)}",
        f"  token = {toml_str(s.token)}",
        '  executor = "docker"',
    ]
    if s.ca_registries:
        lines.append(f"  tls-ca-file = {toml_str(CA_PATH)}")
    lines += [
        "  [runners.feature_flags]",
        "    FF_NETWORK_PER_BUILD = true",
        "  [runners.docker]",
        f"    image = {toml_str(s.default_image)}",
        f"    privileged = {'true' if s.privileged else 'false'}",
        f"    pull_policy = {_list([s.pull_policy])}",
        "    tls_verify = false",
        "    disable_cache = false",
        f"    volumes = {_list(volumes)}",
        "    shm_size = 0",
    ]
    if s.helper_image is not None:
        lines.append(f"    helper_image = {toml_str(s.helper_image)}")
    if s.job_memory_mb is not None:
        lines.append(f"    memory = {toml_str(f'{int(s.job_memory_mb)}m')}")
    if s.mtu is not None:
        lines.append(f"    network_mtu = {int(s.mtu)}")
    if s.ipv6:
        lines.append("    enable_ipv6 = true")
    return "\n".join(lines) + "\n"
