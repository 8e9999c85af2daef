"""A runner host's gitlab-runner ``config.toml``, rendered from config (pure: no Pulumi, no I/O).

Strings are written as TOML basic strings by ``toml_str`` (components/render/toml_text.py),
so no value can end its string. The token is in
the text: the program calls this inside ``apply`` on the secret token, and the result
stays secret (it reaches the host on a command's stdin into a 0600 file).

With runner authentication tokens (``glrt-``), GitLab keeps a runner's tags, "run
untagged" and "protected" on its side: forgeway creates the runner through GitLab's API
with them (components/runner_registration.py), or checks a hand token's runner; the file
names them in a comment so what GitLab holds is visible next to what runs.

gitlab-runner rotates its own token only when config.toml gives it an expiry
(``token_expires_at``); the file gives the zero time, "never", so the token is the one
Pulumi holds and rotation is a replace of the runner's UserRunner (docs/runners.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from components.render.buildkitd import JOB_CERTS_D, JOB_PATH, JOBS_DIR
from components.render.toml_text import toml_str

__all__ = [
    "CA_PATH",
    "DIND_CERTS_CLIENT",
    "NEVER",
    "SOCKET_INSIDE",
    "RunnerSettingsView",
    "job_volumes",
    "registration",
    "render_config_toml",
    "toml_str",
]

# gitlab-runner's "no expiry" (Go's zero time.Time, as the runner itself writes it).
NEVER = "0001-01-01T00:00:00Z"
# Where the runner container finds the stack's CA (its config volume is /etc/gitlab-runner).
CA_PATH = "/etc/gitlab-runner/certs/ca.crt"
# Where the runner container and a job given the socket see the host's docker socket
# (hosts[].docker_socket is bound here): docker's own default path, so the docker CLI in
# a job finds it with no DOCKER_HOST.
SOCKET_INSIDE = "/var/run/docker.sock"
# docker:dind writes its client certificates here when DOCKER_TLS_CERTDIR=/certs; a volume
# the runner gives the job and its services alike, so the job's client finds them and
# reaches dind over TLS on 2376 (docs.gitlab.com/ci/docker/using_docker_build.html).
DIND_CERTS_CLIENT = "/certs/client"


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(toml_str(v) for v in values) + "]"


@dataclass(frozen=True)
class RunnerSettingsView:
    """Everything config.toml depends on, already validated by components/config/."""

    name: str  # the host's name
    url: str  # GitLab's external URL
    token: str  # glrt-... (secret)
    arch: str  # arm64 | amd64: the first tag
    concurrent: int
    default_image: str
    tags: Sequence[str] = ()
    privileged: bool = False
    protected_only: bool = False  # GitLab holds it ref_protected: only protected refs' jobs
    pull_policy: str = "if-not-present"
    helper_image: str | None = None
    job_memory_mb: int | None = None
    mtu: int | None = None  # the tunnel MTU: per-job networks and docker-in-docker
    ipv6: bool = False
    ca_registries: Sequence[str] = ()  # own-ca: the registry endpoints; the runner trusts CA_PATH, jobs certs.d
    docker_socket_in_jobs: bool = False
    docker_socket: str = SOCKET_INSIDE  # hosts[].docker_socket: the socket's path on the host
    cache_dir: str = "/cache"
    extra_volumes: Sequence[str] = field(default_factory=tuple)


def registration(s: RunnerSettingsView) -> dict[str, object]:
    """What the runner must be created with in GitLab (tags, untagged, protected)."""
    return {
        "tag_list": [s.arch, *s.tags],
        "run_untagged": False,
        "access_level": "ref_protected" if s.protected_only else "not_protected",
    }


def job_volumes(s: RunnerSettingsView) -> list[str]:
    """The docker executor's ``volumes``: sources are paths on the runner host.

    With own-ca, forgeway's job directory on the host (components/render/buildkitd.py),
    read-only: its certs.d as the job's, so docker and docker-in-docker in jobs trust the
    registry, and the buildkitd.toml for buildx builders. A privileged runner (the only
    kind that runs docker:dind) shares :data:`DIND_CERTS_CLIENT`, so dind is reached over TLS."""
    volumes = [s.cache_dir, *s.extra_volumes]
    if s.privileged:
        volumes.append(DIND_CERTS_CLIENT)
    if s.ca_registries:
        volumes.append(f"/{JOBS_DIR}/certs.d:{JOB_CERTS_D}:ro")
        volumes.append(f"/{JOBS_DIR}/buildkitd.toml:{JOB_PATH}:ro")
    if s.docker_socket_in_jobs:
        # A bind's source is a path on the daemon's host, not in the runner container: the
        # host's configured socket, the one the runner container itself is given.
        volumes.append(f"{s.docker_socket}:{SOCKET_INSIDE}")
    return volumes


def render_config_toml(s: RunnerSettingsView) -> str:
    volumes = job_volumes(s)
    lines = [
        "# Rendered by forgeway (components/render/runner_config.py); edit the stack config instead.",
        f"# GitLab holds this runner with: tags {', '.join([s.arch, *s.tags])}; "
        f"run untagged jobs: no; protected: {'yes' if s.protected_only else 'no'} (GitLab's API).",
        f"concurrent = {int(s.concurrent)}",
        "check_interval = 0",
        "shutdown_timeout = 0",
        "",
        "[[runners]]",
        f"  name = {toml_str(s.name)}",
        f"  url = {toml_str(s.url)}",
        f"  token = {toml_str(s.token)}",
        # The zero time: no expiry, so gitlab-runner never rotates the token behind Pulumi's back.
        f"  token_expires_at = {NEVER}",
        '  executor = "docker"',
    ]
    if s.ca_registries:
        lines.append(f"  tls-ca-file = {toml_str(CA_PATH)}")
    lines += [
        "  [runners.feature_flags]",
        "    FF_NETWORK_PER_BUILD = true",
        "  [runners.docker]",
        # The runner starts jobs through the socket its container is given at SOCKET_INSIDE
        # (components/runners.py), named here rather than left to a DOCKER_HOST in its env
        # ([runners.docker] host; docs.gitlab.com/runner/configuration/advanced-configuration.html).
        f"    host = {toml_str('unix://' + SOCKET_INSIDE)}",
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
