"""RunnerFleet: a GitLab runner on every host with role runner.

Per runner host (a ``RunnerHost`` component, children named ``<host>-...``), after its
docker daemon is configured (components/docker_host.py: daemon.json, prune, binfmt):

* ``<host>-runner-image``: ``runners.images[<arch>]`` pulled for ``linux/<arch>``.
* ``<host>-runner-config``: the runner's config volume (its system id survives a new
  container; config.toml is uploaded anew).
* ``<host>-runner``: the gitlab-runner container. config.toml (with the ``glrt-`` token)
  is rendered inside ``apply`` on the secret token and uploaded with mode 0600; the
  whole upload list is secret and so are the container's ``uploads`` outputs. The host's
  docker socket is bound in: the docker executor starts jobs through it (jobs get the
  socket only with ``runner.insecure_docker_socket_in_jobs``). Replacing or deleting it
  drains it: SIGQUIT, then up to ``runners.stop_grace_seconds`` for running jobs to
  finish before docker kills it (the provider always replaces a container delete-first:
  the fixed name and the shared system id allow one runner at a time).

With ``gitlab.tls = own-ca`` the runner trusts the stack CA (``tls-ca-file``) and jobs
and docker-in-docker services get it in ``/etc/docker/certs.d/<registry>/ca.crt``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.config import Host as HostConfig
from components.config import Runners, StackConfig
from components.docker_host import DockerHost
from components.hosts import Host
from components.render.runner_config import CA_PATH, SOCKET_INSIDE, RunnerSettingsView, render_config_toml

__all__ = [
    "RUNNER_CONTAINER",
    "STOP_SIGNAL",
    "RunnerDefaults",
    "RunnerFleet",
    "RunnerFleetArgs",
    "RunnerHost",
    "RunnerHostBase",
    "delete_timeout",
    "host_cores",
    "runner_host_base",
    "runner_host_ready",
]

RUNNER_CONTAINER = "forgeway-runner"  # not forgeway-gitlab-*: the pack reads that prefix as GitLab data
CONFIG_DIR = "/etc/gitlab-runner"
RUNNER_MEMORY_MB = 512  # the runner process itself; jobs have their own limits
STOP_SIGNAL = "SIGQUIT"  # gitlab-runner: stop taking jobs, finish the running ones, exit
PROVIDER_DELETE_TIMEOUT_S = 20 * 60  # the docker provider's default for a container's delete
DELETE_MARGIN_S = 300  # the force remove and the wait for it after the grace period


def delete_timeout(grace_seconds: int) -> str:
    """The container's delete timeout: its grace period plus the remove, never below the provider's own."""
    return f"{max(PROVIDER_DELETE_TIMEOUT_S, grace_seconds + DELETE_MARGIN_S)}s"


@dataclass(frozen=True)
class RunnerDefaults:
    """What every runner shares, from the config: the runners section and derived values."""

    runners: Runners  # the runners section
    gitlab_url: str  # the URL runners register with and fetch jobs from
    mtu: int  # the tunnel's effective MTU (jobs' networks)

    @classmethod
    def of(cls, cfg: StackConfig) -> RunnerDefaults:
        return cls(cfg.runners, cfg.gitlab_url, cfg.tunnel.effective_mtu)


@dataclass(frozen=True)
class RunnerFleetArgs:
    """The runner fleet: the hosts with role runner and what their runners need."""

    defaults: RunnerDefaults
    runner_hosts: Sequence[HostConfig]  # the hosts[] entries with role runner
    hosts: Mapping[str, Host]  # connections, by host name
    docker: Mapping[str, DockerHost]  # each runner host's docker: the runner waits for its trust and daemon.json
    tokens: Mapping[str, pulumi.Output[str]]  # secret, per runner host (runner_registration.py)
    ca_pem: pulumi.Output[str] | None  # own-ca: the stack CA
    registry_endpoints: Sequence[str]  # host:port docker clients use for the registry
    depends_on: Mapping[str, Sequence[pulumi.Resource]]  # per host: e.g. its tunnel (the MTU it assumes)
    # Per host: the logical name of its UserRunner or token check (what GitLab holds rests on it).
    registration: Mapping[str, str] = field(default_factory=dict)


def runner_host_ready(
    host: Host, docker_host: DockerHost, depends_on: Sequence[pulumi.Resource]
) -> list[pulumi.Resource]:
    """What a CI container on a runner host (GitLab's runner, Woodpecker's agent) waits for:
    the host's preflight and ``depends_on`` (its wg0), the registry trust (it pulls through
    it), then daemon.json (the jobs' networks get the tunnel MTU)."""
    ready = [*host.preflight, *depends_on]
    return ready + [r for r in (docker_host.client, docker_host.daemon) if r is not None]


@dataclass(frozen=True)
class RunnerHostBase:
    """What a CI container on a runner host starts from: its pulled image and config volume,
    both on the host's docker provider after :func:`runner_host_ready` (``on_host``)."""

    on_host: pulumi.ResourceOptions
    image: docker.RemoteImage
    volume: docker.Volume


def runner_host_base(
    parent: pulumi.Resource,
    host_cfg: HostConfig,
    host: Host,
    docker_host: DockerHost,
    depends_on: Sequence[pulumi.Resource],
    *,
    prefix: str,
    image: str,
    volume: str,
    role: str,
) -> RunnerHostBase:
    """``<host>-<prefix>-image`` (``image`` for the host's arch) and ``<host>-<prefix>-config``
    (docker volume ``volume``, label forgeway.role=``role``): GitLab's runner and Woodpecker's agent."""
    name = host_cfg.name
    if host.docker is None:
        raise ValueError(f"runner host '{name}' has no docker provider")
    ready = runner_host_ready(host, docker_host, depends_on)
    on_host = pulumi.ResourceOptions(parent=parent, provider=host.docker, depends_on=ready)
    pulled = docker.RemoteImage(
        f"{name}-{prefix}-image", name=image, platform=f"linux/{host_cfg.arch}", keep_locally=True, opts=on_host
    )
    config = docker.Volume(
        f"{name}-{prefix}-config",
        name=volume,
        labels=[docker.VolumeLabelArgs(label="forgeway.role", value=role)],
        opts=on_host,
    )
    return RunnerHostBase(on_host, pulled, config)


def host_cores(arch_check_stdout: str) -> int:
    """The CPU count the host's arch check printed (``cores N``); 1 when it said none."""
    for line in arch_check_stdout.splitlines():
        word, _, count = line.partition(" ")
        if word == "cores" and count.strip().isdigit():
            return max(1, int(count))
    return 1


def _view(
    shared: RunnerDefaults, host: HostConfig, token: str, cores: int, *, endpoints: Sequence[str], own_ca: bool
) -> str:
    settings, runners = host.runner, shared.runners
    concurrent = (settings.concurrent if settings else None) or cores
    view = RunnerSettingsView(
        name=host.name,
        url=shared.gitlab_url,
        token=token,
        arch=host.arch,
        concurrent=concurrent,
        default_image=runners.default_job_image,
        tags=tuple(settings.tags) if settings else (),
        privileged=bool(settings and settings.privileged),
        protected_only=host.effective_runner.needs_protection,
        pull_policy=runners.pull_policy,
        helper_image=runners.helper_images.get(host.arch),
        job_memory_mb=settings.job_memory_mb if settings else None,
        mtu=shared.mtu,
        ipv6=runners.ipv6,
        ca_registries=tuple(endpoints) if own_ca else (),
        docker_socket_in_jobs=bool(settings and settings.insecure_docker_socket_in_jobs),
        docker_socket=host.docker_socket,
    )
    return render_config_toml(view)


class RunnerHost(pulumi.ComponentResource):
    """One runner host's runner container (its docker daemon is its DockerHost's)."""

    container: docker.Container

    def __init__(
        self,
        host_cfg: HostConfig,
        args: RunnerFleetArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        name = host_cfg.name
        super().__init__("forgeway:runners:RunnerHost", f"{name}-runner-host", None, opts)
        shared, host = args.defaults, args.hosts[name]
        runners = shared.runners
        base = runner_host_base(
            self, host_cfg, host, args.docker[name], args.depends_on.get(name, ()),
            prefix="runner", image=runners.images[host_cfg.arch], volume=f"{RUNNER_CONTAINER}-config",
            role="gitlab-runner-config",
        )  # fmt: skip
        on_host, image, volume = base.on_host, base.image, base.volume
        own_ca = args.ca_pem is not None
        # concurrent defaults to the host's own CPU count, which its arch check reports.
        config_toml: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.tokens[name], host.arch_check.stdout).apply(
                lambda v: _view(
                    shared, host_cfg, v[0], host_cores(v[1]), endpoints=args.registry_endpoints, own_ca=own_ca
                )
            )
        )
        uploads = [
            docker.ContainerUploadArgs(file=f"{CONFIG_DIR}/config.toml", content=config_toml, permissions="0600")
        ]
        if args.ca_pem is not None:
            uploads.append(docker.ContainerUploadArgs(file=CA_PATH, content=args.ca_pem, permissions="0644"))
        settings = host_cfg.runner
        tags = [host_cfg.arch, *(settings.tags if settings else [])]
        access_level = host_cfg.effective_runner.access_level
        socket_in_jobs = bool(settings and settings.insecure_docker_socket_in_jobs)
        grace = runners.stop_grace_seconds
        self.container = docker.Container(
            f"{name}-runner",
            name=RUNNER_CONTAINER,
            image=image.image_id,
            restart="unless-stopped",
            memory=RUNNER_MEMORY_MB,
            memory_swap=2 * RUNNER_MEMORY_MB,  # dockerd's default, as the provider reads it back (see gitlab.py)
            volumes=[
                docker.ContainerVolumeArgs(volume_name=volume.name, container_path=CONFIG_DIR),
                docker.ContainerVolumeArgs(host_path=host_cfg.docker_socket, container_path=SOCKET_INSIDE),
            ],
            uploads=uploads,
            labels=[
                docker.ContainerLabelArgs(label="forgeway.role", value="gitlab-runner"),
                # What GitLab holds (a UserRunner made it so, or the token check saw it) and
                # which resource of the stack guarantees it: the policy pack reads both.
                docker.ContainerLabelArgs(label="forgeway.runner.access-level", value=access_level),
                docker.ContainerLabelArgs(label="forgeway.runner.registration", value=args.registration.get(name, "")),
                docker.ContainerLabelArgs(
                    label="forgeway.runner.insecure-docker-socket-in-jobs", value=str(socket_in_jobs).lower()
                ),
                docker.ContainerLabelArgs(label="forgeway.runner.tags", value=",".join(tags)),
            ],
            log_driver="json-file",
            log_opts={"max-size": f"{runners.log_max_size_mb}m", "max-file": str(runners.log_max_files)},
            # A replace (any config.toml change) or delete drains the runner: the provider's
            # delete stops with the container's stop signal and destroy_grace_seconds, then
            # force-removes (terraform-provider-docker internal/provider/
            # resource_docker_container_funcs.go, resourceDockerContainerDelete). SIGQUIT is
            # gitlab-runner's graceful stop (no new jobs, running ones finish); its image says
            # so too (STOPSIGNAL, gitlab-runner dockerfiles/runner/ubuntu/Dockerfile).
            stop_signal=STOP_SIGNAL,
            destroy_grace_seconds=grace,
            opts=pulumi.ResourceOptions.merge(
                on_host,
                pulumi.ResourceOptions(
                    additional_secret_outputs=["uploads"],
                    # The provider's delete gives up after 20 minutes unless told otherwise
                    # (dockerContainerDeleteDefaultTimeout, resource_docker_container.go).
                    custom_timeouts=pulumi.CustomTimeouts(delete=delete_timeout(grace)),
                ),
            ),
        )
        # What GitLab holds for this runner (tags, untagged, protected: GitLab keeps them).
        self.register_outputs({"tag_list": tags, "run_untagged": False, "access_level": access_level})


class RunnerFleet(pulumi.ComponentResource):
    """Every runner host's RunnerHost."""

    hosts: dict[str, RunnerHost]

    def __init__(self, name: str, args: RunnerFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:runners:RunnerFleet", name, None, opts)
        self.hosts = {h.name: RunnerHost(h, args, pulumi.ResourceOptions(parent=self)) for h in args.runner_hosts}
        self.register_outputs({})
