"""RunnerFleet: a configured docker daemon and a GitLab runner on every host with role runner.

Per runner host (a ``RunnerHost`` component, children named ``<host>-...``):

* ``<host>-docker-daemon``: forgeway's keys merged into ``/etc/docker/daemon.json``
  (components/render/docker_daemon.py; the host keeps every key forgeway does not own,
  and its original file comes back on delete); the daemon restarts only when the file
  changed.
* ``<host>-docker-prune``: a timer (cron without systemd) that prunes unused images and
  build cache when docker's disk is fuller than ``runners.prune.threshold_percent``.
* ``<host>-binfmt-image``, ``<host>-binfmt`` (``runner.multiarch`` only): the pinned
  ``runners.binfmt_image`` pulled, then binfmt-up.sh registers QEMU for the other arch
  now and at every boot (components/scripts/binfmt-up.sh); delete unregisters only what
  it registered.
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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.config import Arch, StackConfig
from components.config import Host as HostConfig
from components.hosts import Host
from components.render.docker_daemon import DaemonSettings, host_ipv6_prefixes, render_daemon_json
from components.render.runner_config import CA_PATH, SOCKET_INSIDE, RunnerSettingsView, render_config_toml
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = [
    "RUNNER_CONTAINER",
    "STOP_SIGNAL",
    "RunnerFleet",
    "RunnerFleetArgs",
    "RunnerHost",
    "daemon_json_for",
    "delete_timeout",
    "host_cores",
]

RUNNER_CONTAINER = "forgeway-runner"  # not forgeway-gitlab-*: the pack reads that prefix as GitLab data
CONFIG_DIR = "/etc/gitlab-runner"
RUNNER_MEMORY_MB = 512  # the runner process itself; jobs have their own limits
DAEMON_STAGE = "docker-daemon"
PRUNE_STAGE = "docker-prune"
BINFMT_STAGE = "binfmt"
STOP_SIGNAL = "SIGQUIT"  # gitlab-runner: stop taking jobs, finish the running ones, exit
PROVIDER_DELETE_TIMEOUT_S = 20 * 60  # the docker provider's default for a container's delete
DELETE_MARGIN_S = 300  # the force remove and the wait for it after the grace period


def delete_timeout(grace_seconds: int) -> str:
    """The container's delete timeout: its grace period plus the remove, never below the provider's own."""
    return f"{max(PROVIDER_DELETE_TIMEOUT_S, grace_seconds + DELETE_MARGIN_S)}s"


def daemon_json_for(cfg: StackConfig, host: HostConfig) -> dict[str, object]:
    """forgeway's daemon.json keys for one runner host.

    The bridges get the tunnel MTU: jobs reach GitLab and the registry through the VPS and
    the tunnel (TCP is clamped there; UDP and nested docker are not)."""
    runners = cfg.runners
    index = [h.name for h in cfg.hosts_with("runner")].index(host.name)
    bridge, pool = host_ipv6_prefixes(runners.ipv6_prefix, index) if runners.ipv6 else (None, None)
    return render_daemon_json(
        DaemonSettings(
            address_pools=[(str(p.base), p.size) for p in runners.address_pools],
            mtu=cfg.tunnel.effective_mtu,
            ipv6_bridge=bridge,
            ipv6_pool=pool,
            registry_mirrors=runners.registry_mirrors,
            log_max_size_mb=runners.log_max_size_mb,
            log_max_files=runners.log_max_files,
        )
    )


@dataclass(frozen=True)
class RunnerFleetArgs:
    config: StackConfig
    hosts: Mapping[str, Host]
    tokens: Mapping[str, pulumi.Output[str]]  # secret, per runner host
    ca_pem: pulumi.Output[str] | None  # own-ca: the stack CA
    registry_endpoints: Sequence[str]  # host:port docker clients use for the registry
    depends_on: Mapping[str, Sequence[pulumi.Resource]]  # per host: e.g. its tunnel and registry trust


def host_cores(arch_check_stdout: str) -> int:
    """The CPU count the host's arch check printed (``cores N``); 1 when it said none."""
    for line in arch_check_stdout.splitlines():
        word, _, count = line.partition(" ")
        if word == "cores" and count.strip().isdigit():
            return max(1, int(count))
    return 1


def _view(cfg: StackConfig, host: HostConfig, token: str, cores: int, *, endpoints: Sequence[str], own_ca: bool) -> str:
    settings = host.runner
    concurrent = (settings.concurrent if settings else None) or cores
    view = RunnerSettingsView(
        name=host.name,
        url=cfg.gitlab_url,
        token=token,
        arch=host.arch,
        concurrent=concurrent,
        default_image=cfg.runners.default_job_image,
        tags=tuple(settings.tags) if settings else (),
        privileged=bool(settings and settings.privileged),
        protected_only=bool(settings and settings.protected_only),
        pull_policy=cfg.runners.pull_policy,
        helper_image=cfg.runners.helper_images.get(host.arch),
        job_memory_mb=settings.job_memory_mb if settings else None,
        mtu=cfg.tunnel.effective_mtu,
        ipv6=cfg.runners.ipv6,
        ca_registries=tuple(endpoints) if own_ca else (),
        docker_socket_in_jobs=bool(settings and settings.insecure_docker_socket_in_jobs),
        docker_socket=host.docker_socket,
    )
    return render_config_toml(view)


class RunnerHost(pulumi.ComponentResource):
    """One runner host: its daemon.json, its prune timer, its runner container."""

    daemon: remote.Command
    prune: remote.Command
    binfmt: remote.Command | None  # runner.multiarch only
    container: docker.Container

    def __init__(
        self,
        host_cfg: HostConfig,
        args: RunnerFleetArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        name = host_cfg.name
        super().__init__("forgeway:runners:RunnerHost", f"{name}-runner-host", None, opts)
        cfg, host = args.config, args.hosts[name]
        if host.docker is None:
            raise ValueError(f"runner host '{name}' has no docker provider")
        before = [*host.preflight, *args.depends_on.get(name, ())]
        extra = list(args.depends_on.get(name, ()))

        ours = json.dumps(daemon_json_for(cfg, host_cfg), indent=2, sort_keys=True) + "\n"
        daemon_files = {
            "forgeway.json": ours,
            "daemon_merge.py": script("daemon_merge.py"),
            "docker-daemon-up.sh": script("docker-daemon-up.sh"),
        }
        self.daemon = host.command(
            f"{name}-docker-daemon",
            parent=self,
            create=staged_command(DAEMON_STAGE, daemon_files, "docker-daemon-up.sh", []),
            delete=unstaged_command(DAEMON_STAGE, script_command("docker-daemon-up.sh", "--restore")),
            depends_on=extra,
        )
        prune = cfg.runners.prune
        self.prune = host.command(
            f"{name}-docker-prune",
            parent=self,
            create=staged_command(
                PRUNE_STAGE,
                {name: script(name) for name in ("docker-prune-up.sh", "docker-prune.sh", "host-files.sh")},
                "docker-prune-up.sh",
                [str(prune.threshold_percent), str(prune.keep_hours), prune.on_calendar],
            ),
            delete=unstaged_command(PRUNE_STAGE, script_command("docker-prune-down.sh")),
            depends_on=extra,
        )

        on_host = pulumi.ResourceOptions(parent=self, provider=host.docker, depends_on=[*before, self.daemon])
        self.binfmt = (
            self._binfmt(host_cfg, cfg, host, [*before, self.daemon])
            if host_cfg.runner and host_cfg.runner.multiarch
            else None
        )
        image = docker.RemoteImage(
            f"{name}-runner-image",
            name=cfg.runners.images[host_cfg.arch],
            platform=f"linux/{host_cfg.arch}",
            keep_locally=True,
            opts=on_host,
        )
        volume = docker.Volume(
            f"{name}-runner-config",
            name=f"{RUNNER_CONTAINER}-config",
            labels=[docker.VolumeLabelArgs(label="forgeway.role", value="gitlab-runner-config")],
            opts=on_host,
        )
        own_ca = args.ca_pem is not None
        # concurrent defaults to the host's own CPU count, which its arch check reports.
        config_toml: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.tokens[name], host.arch_check.stdout).apply(
                lambda v: _view(cfg, host_cfg, v[0], host_cores(v[1]), endpoints=args.registry_endpoints, own_ca=own_ca)
            )
        )
        uploads = [
            docker.ContainerUploadArgs(file=f"{CONFIG_DIR}/config.toml", content=config_toml, permissions="0600")
        ]
        if args.ca_pem is not None:
            uploads.append(docker.ContainerUploadArgs(file=CA_PATH, content=args.ca_pem, permissions="0644"))
        settings = host_cfg.runner
        tags = [host_cfg.arch, *(settings.tags if settings else [])]
        protected = bool(settings and settings.protected_only)
        socket_in_jobs = bool(settings and settings.insecure_docker_socket_in_jobs)
        grace = cfg.runners.stop_grace_seconds
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
                docker.ContainerLabelArgs(label="forgeway.runner.protected-only", value=str(protected).lower()),
                docker.ContainerLabelArgs(
                    label="forgeway.runner.insecure-docker-socket-in-jobs", value=str(socket_in_jobs).lower()
                ),
                docker.ContainerLabelArgs(label="forgeway.runner.tags", value=",".join(tags)),
            ],
            log_driver="json-file",
            log_opts={"max-size": f"{cfg.runners.log_max_size_mb}m", "max-file": str(cfg.runners.log_max_files)},
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
        # What GitLab must hold for this runner (tags, untagged, protected: GitLab keeps them).
        self.register_outputs(
            {"tag_list": tags, "run_untagged": False, "access_level": "ref_protected" if protected else "not_protected"}
        )

    def _binfmt(
        self, host_cfg: HostConfig, cfg: StackConfig, host: Host, before: list[pulumi.Resource]
    ) -> remote.Command:
        """QEMU for the other arch: the pinned binfmt image pulled, then binfmt-up.sh with its ID."""
        name = host_cfg.name
        if cfg.runners.binfmt_image is None:  # config refuses multiarch without it
            raise ValueError(f"runner host '{name}' has runner.multiarch but runners.binfmt_image is unset")
        image = docker.RemoteImage(
            f"{name}-binfmt-image",
            name=cfg.runners.binfmt_image,
            platform=f"linux/{host_cfg.arch}",
            keep_locally=True,
            opts=pulumi.ResourceOptions(parent=self, provider=host.docker, depends_on=before),
        )
        others = ",".join(a for a in get_args(Arch) if a != host_cfg.arch)
        files = {n: script(n) for n in ("binfmt-up.sh", "host-files.sh")}
        return host.command(
            f"{name}-binfmt",
            parent=self,
            create=image.image_id.apply(
                lambda image_id: staged_command(BINFMT_STAGE, files, "binfmt-up.sh", [image_id, others])
            ),
            delete=unstaged_command(BINFMT_STAGE, script_command("binfmt-down.sh")),
            depends_on=[*before, image],
        )


class RunnerFleet(pulumi.ComponentResource):
    """Every runner host's RunnerHost."""

    hosts: dict[str, RunnerHost]

    def __init__(self, name: str, args: RunnerFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:runners:RunnerFleet", name, None, opts)
        self.hosts = {
            h.name: RunnerHost(h, args, pulumi.ResourceOptions(parent=self)) for h in args.config.hosts_with("runner")
        }
        self.register_outputs({})
