"""GitLabServer: the omnibus GitLab container on the GitLab host, through its docker provider.

What it registers (children of the component):

* ``<host>-gitlab-image``: ``RemoteImage`` of ``gitlab.images[<host arch>]`` for platform
  ``linux/<arch>`` (config already refused an image whose name says another arch).
* ``<host>-gitlab-{config,logs,data}``: ``Volume`` with ``protect`` and ``retain_on_delete``
  and the label ``forgeway.role=gitlab-<role>`` the policy pack looks for. The config
  volume holds ``/etc/gitlab``, where omnibus keeps its SSH host keys and secrets, so a
  new container keeps the fingerprint users pinned and can still decrypt the database.
* ``<host>-gitlab-root-password``: ``RandomPassword`` unless ``gitlab_root_password``
  is secret config.
* ``<host>-gitlab``: the ``Container``. Its env is GITLAB_OMNIBUS_CONFIG only (the
  gitlab.rb text of components/render/gitlab.py and a ``from_file`` of
  :data:`SECRETS_FILE`), still marked secret. The root password is uploaded, before the
  container starts, in :data:`SECRETS_FILE` (root, 0600), never in the env, where
  ``docker inspect`` and every process's ``/proc/<pid>/environ`` would show it. With
  ``own-ca`` the server certificate chain (0644) and key (root, 0600) are uploaded to
  ``/etc/gitlab/ssl/<name>.{crt,key}``. Published ports bind the host's tunnel IPv4
  address only, never every interface and never two addresses (issue 20): each forwarded
  service's home port onto the container's fixed port.
* With tunnel.ipv6 or ``gitlab.publish_on_lan``: ``<host>-gitlab-network``, GitLab's own
  dual-stack docker network (``gitlab.container_subnet``/``container_subnet6``), the
  container at fixed addresses on it, and ``<host>-gitlab-nat`` (components/forge_nat.py):
  the forge host's ``table ip6/ip forgeway_forge`` DNATs the tunnel IPv6 address and the
  LAN address to them, so GitLab sees the client's own address.

Omnibus uses ``gitlab_rails['initial_root_password']`` only when it first creates the
database; changing it later changes nothing inside GitLab (documented in the README).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random
from pulumi_command import remote

from components.config import ForwardedPort, StackConfig, VolumeRole
from components.config import GitLab as GitLabSection
from components.forge import Forge
from components.forge_nat import forge_reach, published_ports
from components.hosts import Host
from components.pki import ServerCertificate
from components.render.forge_nat import PortMap
from components.render.gitlab import (
    CONTAINER_PORTS,
    SSL_DIR,
    GitLabSettings,
    render_gitlab_rb,
    ruby_str,
    settings_from_config,
)
from components.tunnel import tunnel_addresses6
from components.upgrade import Version, pre_upgrade_backup, target_version, upgrade_wait

__all__ = [
    "CONTAINER_NAME",
    "HEALTHCHECK",
    "HEALTHCHECK_INTERVAL",
    "HEALTHCHECK_START_PERIOD",
    "HEALTHCHECK_TIMEOUT",
    "MOUNTS",
    "PRIVATE_FILE_PERMISSIONS",
    "SECRETS_FILE",
    "SHM_SIZE_MB",
    "GitLabServer",
    "GitLabServerArgs",
    "forge_container_basics",
    "go_duration",
    "memory_limit_mb",
    "omnibus_config",
    "secrets_rb",
]

CONTAINER_NAME = "forgeway-gitlab"
# Where omnibus keeps each volume's contents.
VOLUME_ROLES: tuple[VolumeRole, ...] = ("config", "logs", "data")
MOUNTS: dict[str, str] = {"config": "/etc/gitlab", "logs": "/var/log/gitlab", "data": "/var/opt/gitlab"}
# PostgreSQL and Prometheus need more than docker's default 64 MB of /dev/shm (omnibus docs).
SHM_SIZE_MB = 256
# The omnibus image's own check; it starts slowly on small devices (first boot: minutes).
HEALTHCHECK = ("CMD", "/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10")
# Read by gitlab.rb, not the env. omnibus-gitlab 18.5.1 docker/assets/gitlab.rb evals
# GITLAB_OMNIBUS_CONFIG in gitlab.rb's own context, where `from_file` loads more config
# (it loads /etc/gitlab/gitlab.rb that way); the first reconfigure seeds root with
# gitlab_rails['initial_root_password'] (gitlab/recipes/database_migrations.rb). An env
# GITLAB_ROOT_PASSWORD would win over it (gitlab/libraries/gitlab_rails.rb transform_secrets)
# and show in `docker inspect`: the container has none.
SECRETS_FILE = "/etc/gitlab/forgeway-secrets.rb"
# terraform-provider-docker uploads a file without `permissions` as 0644 (0744 if
# `executable`), in a tar header with no owner, so as root:root
# (internal/provider/resource_docker_container_funcs.go, the uploads loop of create).
# Private files are root's alone: omnibus reads gitlab.rb and nginx's master process
# loads the TLS key as root (its workers run as gitlab-www: nginx.conf.erb `user`).
PRIVATE_FILE_PERMISSIONS = "0600"
PUBLIC_FILE_PERMISSIONS = "0644"
DEFAULT_MEMORY_MB = 4096
MIN_MEMORY_MB = 2048


def memory_limit_mb(cfg: StackConfig) -> int:
    """gitlab.memory_limit_mb, else 3/4 of the host's memory_mb (at least 2 GB), else 4 GB."""
    if cfg.gitlab.memory_limit_mb is not None:
        return cfg.gitlab.memory_limit_mb
    host_mb = cfg.gitlab_host.memory_mb
    return max(MIN_MEMORY_MB, host_mb * 3 // 4) if host_mb is not None else DEFAULT_MEMORY_MB


def omnibus_config(gitlab_rb: str) -> str:
    """GITLAB_OMNIBUS_CONFIG: the rendered gitlab.rb, then the secrets file loaded from disk."""
    return f"{gitlab_rb}from_file({ruby_str(SECRETS_FILE)})\n"


def secrets_rb(root_password: str) -> str:
    """The text of :data:`SECRETS_FILE`; the error never shows the password."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in root_password):
        raise ValueError("gitlab_root_password contains a control character; expected printable characters only")
    return f"gitlab_rails['initial_root_password'] = {ruby_str(root_password)}\n"


def go_duration(seconds: int) -> str:
    """Whole seconds as Go's ``time.Duration.String()`` writes them: "30s", "1m0s", "10m0s"."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


# The provider reads the healthcheck back with these durations in Go's form
# (resource_docker_container_funcs.go resourceDockerContainerRead: Interval.String()),
# so any other spelling ("60s") is a diff on the next up after a create or refresh.
HEALTHCHECK_INTERVAL = go_duration(60)
HEALTHCHECK_TIMEOUT = go_duration(30)
HEALTHCHECK_START_PERIOD = go_duration(600)  # first boot migrates the database: minutes


def forge_container_basics(memory_mb: int, health: Sequence[str], start_period: str) -> dict[str, Any]:
    """What a forge's container (GitLab's, Gitea's) is given alike: restart, memory, its
    health check and log rotation, as the provider reads them back."""
    return {
        "restart": "unless-stopped",
        "memory": memory_mb,
        # dockerd's own default (moby daemon/daemon_unix.go adaptContainerSettings: twice
        # the memory), which the provider's Read records; unset, it is a diff after every
        # create and refresh (memory_swap is read back but neither computed nor defaulted).
        "memory_swap": 2 * memory_mb,
        "healthcheck": docker.ContainerHealthcheckArgs(
            tests=list(health),
            interval=HEALTHCHECK_INTERVAL,
            timeout=HEALTHCHECK_TIMEOUT,
            retries=5,
            start_period=start_period,
        ),
        "log_driver": "json-file",
        "log_opts": {"max-size": "50m", "max-file": "5"},
    }


def _port_maps(services: Sequence[ForwardedPort], registry_enabled: bool) -> tuple[PortMap, ...]:
    """Each published service: its home port onto the container's fixed port."""
    return tuple(
        PortMap(fp.service, fp.home_port, CONTAINER_PORTS[fp.service])
        for fp in services
        if fp.service != "registry" or registry_enabled
    )


@dataclass(frozen=True)
class GitLabServerArgs:
    """What GitLab needs: its section, gitlab.rb's settings, the forge facts, its host,
    and what it waits for. ``from_config`` derives them from the stack config."""

    settings: GitLabSection  # the ``gitlab`` section: images, volumes, publish_on_lan
    rb: GitLabSettings  # gitlab.rb's settings (render/gitlab.settings_from_config)
    forge: Forge  # gitlab_forge(cfg): its host, published services and certificate names
    host: Host  # the host with role gitlab
    tunnel_address: ipaddress.IPv4Address  # the host's wg0 address: what the VPS DNATs to
    memory_limit_mb: int  # the container's memory limit (memory_limit_mb)
    tunnel: pulumi.Resource  # the host's wg0: the ports bind its address
    # What a client's packet to a public port needs (PortForwarding.resources): with Let's
    # Encrypt, GitLab's first boot answers the HTTP-01 challenge through it.
    forwarding: Sequence[pulumi.Resource] = ()
    certificate: ServerCertificate | None = None  # own-ca: the registry/GitLab server certificate
    root_password: pulumi.Output[str] | None = None  # secret config; None: generate
    # What changes the host's docker daemon and may restart it (the registry trust's proxy
    # drop-in): the image pull and the container wait for it, so no restart cuts them off.
    docker_changes: Sequence[pulumi.Resource] = ()
    # The upgrade guard (components/upgrade.py): the configured version, and whether the
    # pre-upgrade backup is forgeway-backup (backup.enabled) or a recorded manual one.
    version: Version | None = None
    backups: bool = False
    tunnel_address6: ipaddress.IPv6Address | None = None  # tunnel.ipv6: DNATed to the container (forge_nat)

    @classmethod
    def from_config(
        cls,
        cfg: StackConfig,
        forge: Forge,
        hosts: Mapping[str, Host],
        addresses: Mapping[str, ipaddress.IPv4Address],
        *,
        tunnel: Mapping[str, pulumi.Resource],
        forwarding: Sequence[pulumi.Resource],
        certificate: ServerCertificate | None,
        root_password: pulumi.Output[str] | None,
        docker_changes: Mapping[str, pulumi.Resource],
    ) -> GitLabServerArgs:
        """The fields from the config and the forge. ``hosts``, ``addresses``, ``tunnel``
        (wg0 commands) and ``docker_changes`` (registry trust) are per host name: the
        forge host's are taken."""
        return cls(
            settings=cfg.gitlab,
            rb=settings_from_config(cfg, str(addresses[cfg.vps.name]), cfg.gitlab.letsencrypt_emails),
            forge=forge,
            host=hosts[forge.host],
            tunnel_address=addresses[forge.host],
            memory_limit_mb=memory_limit_mb(cfg),
            tunnel=tunnel[forge.host],
            forwarding=forwarding,
            certificate=certificate,
            root_password=root_password,
            docker_changes=[docker_changes[forge.host]] if forge.host in docker_changes else [],
            version=target_version(cfg),
            backups=cfg.backup.enabled,
            tunnel_address6=tunnel_addresses6(cfg).get(forge.host),
        )


class GitLabServer(pulumi.ComponentResource):
    """GitLab's image, volumes, root password and container on the GitLab host."""

    image: docker.RemoteImage
    volumes: dict[str, docker.Volume]
    container: docker.Container
    upgrade_wait: remote.Command | None  # after each new container (components/upgrade.py)
    root_password: pulumi.Output[str]
    forge: Forge  # what the rest of the stack knows of it

    def __init__(self, name: str, args: GitLabServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:gitlab:GitLabServer", name, None, opts)
        gitlab, host = args.settings, args.host
        settings = host.settings
        self.forge = args.forge
        if host.docker is None:
            raise ValueError(f"host '{settings.name}' has role gitlab but no docker provider")
        # After every host's read-only check (components/hosts.py: preflight).
        on_host = pulumi.ResourceOptions(parent=self, provider=host.docker, depends_on=list(host.preflight))
        prefix = f"{settings.name}-gitlab"
        # The container's ports bind the tunnel address: wg0 must exist first. With Let's
        # Encrypt its first boot answers the HTTP-01 challenge through the forwarding.
        depends_on = [args.tunnel, *(args.forwarding if args.rb.tls == "letsencrypt" else [])]
        # Another version: backed up first (components/upgrade.py).
        if args.version is not None:
            depends_on.append(
                pre_upgrade_backup(host, args.version, container=CONTAINER_NAME, backups=args.backups, parent=self)
            )

        self.image = docker.RemoteImage(
            f"{prefix}-image",
            name=gitlab.images[settings.arch],
            platform=f"linux/{settings.arch}",
            keep_locally=True,  # a replaced container must not leave the host without GitLab's image
            opts=pulumi.ResourceOptions.merge(on_host, pulumi.ResourceOptions(depends_on=[*args.docker_changes])),
        )
        keep = pulumi.ResourceOptions(protect=True, retain_on_delete=True)
        self.volumes = {}
        for role, path in ((r, gitlab.volume_paths.get(r)) for r in VOLUME_ROLES):
            self.volumes[role] = docker.Volume(
                f"{prefix}-{role}",
                name=f"{CONTAINER_NAME}-{role}",
                labels=[docker.VolumeLabelArgs(label="forgeway.role", value=f"gitlab-{role}")],
                # A host directory, bound by the local driver, when the user chose one.
                driver_opts={"type": "none", "o": "bind", "device": path} if path else None,
                opts=pulumi.ResourceOptions.merge(on_host, keep),
            )

        if args.root_password is not None:
            self.root_password = pulumi.Output.secret(args.root_password)
        else:
            generated = random.RandomPassword(
                f"{prefix}-root-password",
                length=24,
                override_special="-_.",
                min_lower=2,
                min_upper=2,
                min_numeric=2,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.root_password = pulumi.Output.secret(generated.result)

        gitlab_rb = render_gitlab_rb(args.rb)
        # Secret although it holds no secret now: a value in gitlab.rb may be one some day.
        envs: pulumi.Output[list[str]] = pulumi.Output.secret(
            [f"GITLAB_OMNIBUS_CONFIG={omnibus_config(gitlab_rb.text)}"]
        )
        private = PRIVATE_FILE_PERMISSIONS
        uploads: list[docker.ContainerUploadArgs] = [
            docker.ContainerUploadArgs(
                file=SECRETS_FILE,
                content=pulumi.Output.secret(self.root_password.apply(secrets_rb)),
                permissions=private,
            )
        ]
        if args.certificate is not None:
            chain = args.certificate.chain_pem
            key: pulumi.Output[str] = pulumi.Output.secret(args.certificate.private_key_pem)
            for cert_name in args.forge.public_names:
                uploads += [
                    docker.ContainerUploadArgs(
                        file=f"{SSL_DIR}/{cert_name}.crt", content=chain, permissions=PUBLIC_FILE_PERMISSIONS
                    ),
                    docker.ContainerUploadArgs(file=f"{SSL_DIR}/{cert_name}.key", content=key, permissions=private),
                ]
        # The tunnel IPv6 and LAN addresses reach GitLab through the forge host's DNAT to
        # its fixed addresses on a network of its own (components/forge_nat.py).
        ports = _port_maps(args.forge.services, args.rb.registry_enabled)
        reach = forge_reach(
            prefix, CONTAINER_NAME, host, gitlab, ports=ports, tunnel6=args.tunnel_address6, parent=self
        )
        self.network, self.nat = reach.network, reach.nat
        self.container = docker.Container(
            prefix,
            name=CONTAINER_NAME,
            image=self.image.image_id,
            hostname=gitlab.domain,
            envs=envs,
            ports=published_ports(ports, str(args.tunnel_address)),
            networks_advanced=reach.networks_advanced,
            volumes=[
                docker.ContainerVolumeArgs(volume_name=volume.name, container_path=MOUNTS[role])
                for role, volume in self.volumes.items()
            ],
            uploads=uploads,
            labels=[docker.ContainerLabelArgs(label="forgeway.role", value="gitlab")],
            shm_size=SHM_SIZE_MB,
            **forge_container_basics(args.memory_limit_mb, HEALTHCHECK, HEALTHCHECK_START_PERIOD),
            # omnibus stops its services in order (PostgreSQL last); docker's 10 s would kill it mid-write.
            destroy_grace_seconds=120,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=host.docker,
                depends_on=[*host.preflight, *depends_on, *args.docker_changes],
                # The provider echoes inputs as outputs: keep them secret in the state too.
                additional_secret_outputs=["envs", "uploads"],
            ),
        )
        # Each new container: ready, background migrations finished, before the up ends.
        self.upgrade_wait = (
            upgrade_wait(host, args.version, container=CONTAINER_NAME, replaced=self.container.id, parent=self)
            if args.version is not None
            else None
        )
        self.register_outputs({"image": self.image.image_id, "small_device": dict(gitlab_rb.figures)})
