"""The sections of the stack config, one pydantic model each.

Like a NixOS module's options, each field is declared once with its type (types.py),
its default and its description (the config reference is generated from them), and
every value derived from fields is a property next to them (``Tunnel.effective_mtu``,
``StackConfig.gitlab_url``, ...), so no component computes it again.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo

from components.config.backup import Backup
from components.config.host import Host
from components.config.types import (
    AbsolutePath,
    Address,
    ArchField,
    Email,
    ExternalUrl,
    ForgeKind,
    ForwardingMode,
    Hostname,
    HttpsUrl,
    Image,
    Int,
    IPv4Network,
    IPv6Network,
    Name,
    Network,
    OnCalendar,
    Port,
    PullPolicy,
    Section,
    Service,
    SmallDevice,
    TlsMode,
    TunnelImplementation,
    TunnelIPv6Subnet,
    VolumeRole,
)

# --- sections ----------------------------------------------------------------------


class AddressPool(Section):
    """A docker default address pool: networks of /size carved out of base."""

    base: IPv4Network = Field(description="IPv4 network docker carves bridge networks from, e.g. 172.28.0.0/14")
    size: Annotated[Int, Field(ge=16, le=29)] = Field(24, description="Prefix length of each network")


class Prune(Section):
    """Disk kept in check on runner hosts: a timer prunes when usage is above a threshold."""

    threshold_percent: Annotated[Int, Field(ge=10, le=99)] = Field(
        80, description="Prune when the docker data root's file system is fuller than this"
    )
    keep_hours: Annotated[Int, Field(ge=0, le=8760)] = Field(
        72, description="Keep unused images and build cache younger than this"
    )
    on_calendar: OnCalendar = Field(
        "hourly", description="systemd OnCalendar of the check, UTC only (cron fallback: hourly)"
    )


class Tunnel(Section):
    """The WireGuard tunnel between the VPS and its peers."""

    subnet: Network = Field(ipaddress.ip_network("10.8.0.0/24"), description="Tunnel subnet (IPv4)")
    listen_port: Port = Field(51820, description="UDP port of WireGuard on the VPS")
    # 1360: the smallest uplink whose default tunnel MTU (uplink - 80) carries IPv6's 1280.
    uplink_mtu: Annotated[Int, Field(ge=1360, le=9000)] = Field(
        1500, description="MTU of the narrowest uplink on the path"
    )
    mtu: Annotated[Int, Field(ge=1280, le=8920)] | None = Field(
        None, description="Tunnel MTU; default uplink_mtu - 80 (WireGuard over IPv6 overhead)"
    )
    keepalive: Annotated[Int, Field(ge=1, le=600)] = Field(
        25, description="PersistentKeepalive seconds for peers behind NAT"
    )
    endpoint: Address | None = Field(None, description="What peers dial; default: the VPS public_address or address")
    implementation: TunnelImplementation = Field(
        "auto", description="auto: the kernel module where it loads, else wireguard-go"
    )
    ipv6: bool = Field(
        False, description="Dual-stack tunnel: every host also gets an address of ipv6_subnet (README, Tunnel)"
    )
    ipv6_subnet: TunnelIPv6Subnet = Field(
        ipaddress.IPv6Network("fd77:6179:7761::/64"),
        description="Tunnel prefix (IPv6, /64 to /120, a ULA) with tunnel.ipv6; a host's address mirrors its "
        "IPv4 host part (10.8.0.2 -> ::2)",
    )
    admin_peers: list[Name] = Field(
        default_factory=list,
        description="Hosts (by name) whose tunnel address may reach the VPS admin SSH and every other host's "
        'own SSH through the tunnel; default none (README, "Who accepts what")',
    )

    @property
    def effective_mtu(self) -> int:
        return self.mtu if self.mtu is not None else self.uplink_mtu - 80


class ForwardedPort(Section):
    """One public port on the VPS and where it lands on the GitLab host."""

    service: Service = Field(description="http, https, ssh, registry, or ci (Woodpecker, forge gitea)")
    public: Port = Field(description="Port on the VPS public address")
    home: Port | None = Field(None, description="Port on the GitLab host (default: same as public)")

    @property
    def home_port(self) -> int:
        return self.home if self.home is not None else self.public


def _default_ports() -> list[ForwardedPort]:
    return [
        ForwardedPort(service="http", public=80),
        ForwardedPort(service="https", public=443),
        ForwardedPort(service="ssh", public=22, home=2222),
        ForwardedPort(service="registry", public=5050),
    ]


class Forwarding(Section):
    """NAT forwarding on the VPS."""

    mode: ForwardingMode = Field(
        "preserve-source",
        description="preserve-source: GitLab sees each client's address (policy routing on the GitLab host); "
        'snat: every internet client arrives from the VPS tunnel address (README, "Client addresses")',
    )
    ports: list[ForwardedPort] = Field(
        default_factory=_default_ports, description="Forwarded services (public -> home port)"
    )
    admin_ssh_port: Port | None = Field(None, description="VPS admin SSH port kept open; default: the VPS ssh_port")
    ipv6: bool = Field(
        False,
        description="Also forward the ports on the VPS's IPv6 address to the forge's tunnel IPv6 address "
        "(needs tunnel.ipv6); same mode as IPv4",
    )

    def port(self, service: str) -> ForwardedPort | None:
        return next((p for p in self.ports if p.service == service), None)

    def public_port(self, service: str) -> int | None:
        """The public port a service is forwarded on, or None when it is not forwarded."""
        port = self.port(service)
        return port.public if port is not None else None


class VolumePaths(Section):
    """Host directories bound into GitLab's named volumes (e.g. an SSD on a Jetson)."""

    config: AbsolutePath | None = Field(None, description="/etc/gitlab: settings, secrets, SSH host keys")
    logs: AbsolutePath | None = Field(None, description="/var/log/gitlab")
    data: AbsolutePath | None = Field(None, description="/var/opt/gitlab: repositories, database, registry")

    def get(self, role: VolumeRole) -> str | None:
        path: str | None = getattr(self, role)
        return path


def _container_subnet_field(forge: str) -> Any:  # Field(): pydantic types it Any
    """``<forge>.container_subnet``: one forge per stack, so GitLab's and Gitea's share the default."""
    return Field(
        ipaddress.IPv4Network("172.31.254.0/29"),
        description=f"IPv4 subnet of {forge}'s docker network (tunnel.ipv6 or publish_on_lan); {forge} is its .2",
    )


def _container_subnet6_field(forge: str) -> Any:
    return Field(
        ipaddress.IPv6Network("fd77:6179:7762::/64"),
        description=f"IPv6 subnet (a ULA, /64 to /120) of {forge}'s docker network with tunnel.ipv6; {forge} is "
        "its ::2",
    )


def forge_subnet(value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """A forge network's IPv4 subnet: a gateway (.1) and the forge (.2) at least; a private
    range, never a routed one."""
    if value.prefixlen > 30 or not value.is_private:
        raise ValueError("a private IPv4 subnet of /30 or larger, e.g. 172.31.254.0/29")
    return value


class GitLab(Section):
    """The GitLab server on the host with role gitlab."""

    domain: Hostname = Field(description="Public DNS name of GitLab, pointing at the VPS")
    external_url: ExternalUrl | None = Field(
        None, description="Default https://<domain> (with the https port if not 443)"
    )
    images: dict[ArchField, Image] = Field(description="Pinned image per architecture: {arm64: ..., amd64: ...}")
    small_device: SmallDevice = Field("auto", description="Small-device profile; auto: on for arm64 hosts with <= 8 GB")
    tls: TlsMode = Field("own-ca", description="Certificates from Let's Encrypt or our own CA")
    memory_limit_mb: Annotated[Int, Field(ge=2048)] | None = Field(
        None, description="Container memory limit; default 3/4 of the host's memory_mb, else 4096"
    )
    letsencrypt_emails: list[Email] = Field(
        default_factory=list, description="Contact addresses for Let's Encrypt expiry mail (tls letsencrypt)"
    )
    publish_on_lan: bool = Field(
        False,
        description="Also reach GitLab's ports on the host's LAN address (forgeway's DNAT; default: tunnel "
        "address only)",
    )
    # With tunnel.ipv6 or publish_on_lan GitLab runs on a docker network of its own, at
    # fixed addresses the forge host's table forgeway_forge DNATs to (components/forge_nat.py).
    container_subnet: IPv4Network = _container_subnet_field("GitLab")
    container_subnet6: TunnelIPv6Subnet = _container_subnet6_field("GitLab")
    volume_paths: VolumePaths = Field(
        VolumePaths(), description="Host directories behind GitLab's volumes; default: docker named volumes"
    )
    version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+(-ee)?$")] | None = Field(
        None,
        description="GitLab version of the images (17.11.3, or 17.11.3-ee) where their tag does not say it; "
        "the upgrade guard needs it (docs/gitlab.md, Upgrades)",
    )
    allow_edition_change: bool = Field(
        False, description="Let an up change GitLab's edition (CE to EE or back); refused otherwise"
    )

    @field_validator("container_subnet")
    @classmethod
    def _container_subnet(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        return forge_subnet(value)


class GiteaDatabase(Section):
    """Gitea's database: SQLite in its data volume, or a PostgreSQL server you run."""

    type: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="sqlite: a file in Gitea's data volume; postgres: the server at host"
    )
    host: Address | None = Field(None, description="PostgreSQL server's address or DNS name (type postgres)")
    port: Port = Field(5432, description="PostgreSQL server's port (type postgres)")
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = Field(
        "gitea", description="Database name (type postgres)"
    )
    user: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = Field(
        "gitea", description="Database user (type postgres); its password is the secret gitea_db_password"
    )


class Gitea(Section):
    """The Gitea server on the forge host (forge: gitea; docs/gitea.md)."""

    domain: Hostname = Field(description="Public DNS name of Gitea (and its container registry), pointing at the VPS")
    images: dict[ArchField, Image] = Field(
        description="Pinned image per architecture: {arm64: ..., amd64: ...} (gitea/gitea is multi-arch: the "
        "same tag, or a digest per arch)"
    )
    version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] | None = Field(
        None, description="Gitea version of the images (1.22.3) where their tag does not say it"
    )
    tls: TlsMode = Field("own-ca", description="Certificates from our own CA, or Let's Encrypt (Gitea's own ACME)")
    acme_email: Email | None = Field(None, description="Contact address for Let's Encrypt (tls letsencrypt)")
    ssh_listen_port: Port = Field(
        22, description="Port Gitea's SSH server listens on inside the container (the public ssh port forwards to it)"
    )
    database: GiteaDatabase = Field(GiteaDatabase(), description="Gitea's database")
    admin_username: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,38}$")] = Field(
        "forgeway-admin",
        description="Gitea's admin user, created with `gitea admin user create` (not 'admin': Gitea reserves it)",
    )
    admin_email: Email | None = Field(None, description="The admin user's e-mail; default forgeway-admin@<domain>")
    memory_limit_mb: Annotated[Int, Field(ge=256)] = Field(1024, description="Container memory limit")
    publish_on_lan: bool = Field(
        False,
        description="Also reach Gitea's ports on the host's LAN address (forgeway's DNAT; default: tunnel "
        "address only)",
    )
    # As GitLab's: with tunnel.ipv6 or publish_on_lan Gitea runs on a docker network of its own.
    container_subnet: IPv4Network = _container_subnet_field("Gitea")
    container_subnet6: TunnelIPv6Subnet = _container_subnet6_field("Gitea")
    data_path: AbsolutePath | None = Field(
        None, description="Host directory behind Gitea's /data volume; default: a docker named volume"
    )

    @field_validator("container_subnet")
    @classmethod
    def _container_subnet(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        return forge_subnet(value)

    @field_validator("admin_username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        # Gitea refuses these names (models/user/user.go reservedUsernames).
        if value.lower() in {"admin", "api", "assets", "explore", "user", "org", "repo", "login", "ghost"}:
            raise ValueError("a user name Gitea does not reserve, e.g. forgeway-admin")
        return value

    @property
    def admin_address(self) -> str:
        return self.admin_email or f"{self.admin_username.lower()}@{self.domain}"


class Woodpecker(Section):
    """Woodpecker CI for a Gitea stack: its server on the forge host, an agent on every runner
    host (components/woodpecker.py, docs/gitea.md). The section present is Woodpecker on."""

    server_images: dict[ArchField, Image] = Field(
        description="Pinned woodpecker-server image per architecture: {arm64: ..., amd64: ...}"
    )
    agent_images: dict[ArchField, Image] = Field(
        description="Pinned woodpecker-agent image per architecture, for every runner host's arch"
    )
    domain: Hostname | None = Field(
        None,
        description="Public DNS name of Woodpecker (added to the forge certificate); default gitea.domain, "
        "on the public port of the `ci` entry of forwarding.ports",
    )
    grpc_port: Port = Field(
        9000, description="Port the agents reach the server on, over the tunnel only (never forwarded)"
    )
    privileged_plugins: list[Image] = Field(
        default_factory=list,
        description="Plugin images (with their tag) run privileged in any repository; default none: "
        "privileged steps only in repositories a Woodpecker admin marks trusted",
    )
    memory_limit_mb: Annotated[Int, Field(ge=128)] = Field(512, description="Server container memory limit")


class RegistryGarbageCollection(Section):
    """The registry's garbage collection on the GitLab host (components/registry_gc.py, docs/gitlab.md)."""

    enabled: bool = Field(
        True, description="Run `gitlab-ctl registry-garbage-collect -m` on a timer (frees untagged images' space)"
    )
    schedule: OnCalendar = Field(
        "Sun *-*-* 04:30:00",
        description="systemd OnCalendar of the window, UTC only (cron fallback where it can); the registry is "
        "down while it runs: pushes and pulls fail",
    )
    timeout_minutes: Annotated[Int, Field(ge=5, le=1440)] = Field(
        120, description="A run taking longer is stopped, the registry started again, and the run reported failed"
    )


class Registry(Section):
    """GitLab's container registry."""

    enabled: bool = Field(True, description="Serve the container registry")
    domain: Hostname | None = Field(None, description="Registry DNS name; default: the GitLab domain")
    garbage_collection: RegistryGarbageCollection = Field(
        RegistryGarbageCollection(), description="Scheduled garbage collection of untagged images"
    )


class Runners(Section):
    """Settings shared by every runner host."""

    images: dict[ArchField, Image] = Field(
        default_factory=dict, description="Pinned gitlab-runner image per architecture"
    )
    helper_images: dict[ArchField, Image] = Field(
        default_factory=dict, description="Pinned gitlab-runner-helper image per architecture (default: the runner's)"
    )
    default_job_image: Image = Field("debian:12.8-slim", description="Image of jobs that name none (pinned)")
    pull_policy: PullPolicy = Field("if-not-present", description="When jobs pull their images")
    ipv6: bool = Field(False, description="IPv6 for job containers (default bridge and per-job networks)")
    ipv6_prefix: IPv6Network = Field(
        ipaddress.IPv6Network("fd00:f0e5:7a1b::/48"),
        description="ULA (or routed) prefix; each runner host gets a /56 of it (docker0 and per-job networks)",
    )
    address_pools: list[AddressPool] = Field(
        default_factory=lambda: [AddressPool(base=ipaddress.IPv4Network("172.28.0.0/14"), size=24)],
        description="docker default-address-pools (must not overlap the tunnel or any LAN)",
    )
    registry_mirrors: list[HttpsUrl] = Field(default_factory=list, description="docker registry mirrors (https)")
    log_max_size_mb: Annotated[Int, Field(ge=1, le=1024)] = Field(10, description="Container log rotation size")
    log_max_files: Annotated[Int, Field(ge=1, le=20)] = Field(3, description="Container log files kept")
    prune: Prune = Field(Prune(), description="Pruning of unused images and build cache")
    binfmt_image: Image | None = Field(
        None, description="Pinned image that registers QEMU binfmt handlers (hosts with runner.multiarch)"
    )
    # 3600: GitLab's default job timeout, so a job started just before the stop can end on
    # its own; 7200: the stop timeout gitlab-runner's docs give systemd (docs/configuration/init.md).
    stop_grace_seconds: Annotated[Int, Field(ge=0, le=7200)] = Field(
        3600,
        description="Seconds a runner container's replace or delete waits for its running jobs to finish "
        "(SIGQUIT: it takes no new ones) before docker kills it; 0 to 7200, 0: no wait",
    )
    api_url: HttpsUrl | None = Field(
        None,
        description="GitLab's API as the deployer reaches it to create runners, ending in /api/v4/ (default: "
        "<gitlab URL>/api/v4/; e.g. the GitLab host's tunnel address where that is all the deployer reaches)",
    )
    api_ready_timeout_seconds: Annotated[Int, Field(ge=60, le=7200)] = Field(
        1800,
        description="Seconds the first up waits for GitLab's container to be healthy before seeding its API token",
    )

    @field_validator("api_url")
    @classmethod
    def _api_url_ends_in_api_v4(cls, value: str | None) -> str | None:
        # The provider wants the API's base URL, ending in a slash (pulumi-gitlab Provider base_url).
        if value is not None and not value.endswith("/api/v4/"):
            raise ValueError("the API's base URL, ending in /api/v4/ (e.g. https://10.8.0.2/api/v4/)")
        return value


class StackConfig(Section):
    """One stack's whole configuration, without its secrets (SECRET_KEYS)."""

    hosts: list[Host] = Field(description="Every machine: exactly one vps, one gitlab; any number of runners")
    tunnel: Tunnel = Field(Tunnel(), description="The WireGuard tunnel")
    forwarding: Forwarding = Field(Forwarding(), description="Public ports on the VPS and where they land")
    forge: ForgeKind = Field(
        "gitlab", description="Which forge runs on the host with role gitlab: gitlab or gitea (docs/gitea.md)"
    )
    # Named gitlab_section in code: `cfg.gitlab` is the property below, which says so when
    # the stack's forge is not GitLab (a GitLab-only path reached on a Gitea stack).
    gitlab_section: GitLab | None = Field(
        None, alias="gitlab", description="The GitLab server (required with forge gitlab)"
    )
    gitea: Gitea | None = Field(None, description="The Gitea server (required with forge gitea)")
    woodpecker: Woodpecker | None = Field(
        None, description="Woodpecker CI (forge gitea only): its server and an agent per runner host"
    )
    allow_forge_change: bool = Field(
        False,
        description="Let an up change `forge` on a stack whose forge volumes hold data (a migration you did by "
        "hand; docs/gitea.md); refused otherwise",
    )
    registry: Registry = Field(Registry(), description="The container registry")
    runners: Runners = Field(Runners(), description="Settings shared by the runner hosts")
    backup: Backup = Field(Backup(), description="Scheduled, encrypted backups of GitLab off the device (restic)")
    insecure_unpinned_host_keys: bool = Field(
        False, description="Connect without checking SSH host keys (a loud opt-out; never in production)"
    )

    def hosts_with(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

    @property
    def gitlab(self) -> GitLab:
        """The ``gitlab`` section; only GitLab's paths read it (a check requires it with forge gitlab)."""
        if self.gitlab_section is None:
            raise ValueError(f"forgeway:gitlab: read on a stack with forge {self.forge} and no gitlab section")
        return self.gitlab_section

    @property
    def gitea_section(self) -> Gitea:
        """The ``gitea`` section; only Gitea's paths read it (a check requires it with forge gitea)."""
        if self.gitea is None:
            raise ValueError(f"forgeway:gitea: read on a stack with forge {self.forge} and no gitea section")
        return self.gitea

    @property
    def forge_settings(self) -> GitLab | Gitea | None:
        """The chosen forge's section, None when the stack lacks it (checks/forge.py says so)."""
        return self.gitea if self.forge == "gitea" else self.gitlab_section

    @property
    def forge_domain(self) -> str:
        """The forge's public DNS name, whichever forge."""
        return self.gitea_section.domain if self.forge == "gitea" else self.gitlab.domain

    @property
    def forge_tls(self) -> TlsMode:
        """Who issues the forge's certificate, whichever forge."""
        return self.gitea_section.tls if self.forge == "gitea" else self.gitlab.tls

    @property
    def vps(self) -> Host:
        return self.hosts_with("vps")[0]

    @property
    def gitlab_host(self) -> Host:
        return self.hosts_with("gitlab")[0]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def registry_domain(self) -> str:
        """The registry's name: ``registry.domain``, else GitLab's domain."""
        return self.registry.domain or self.gitlab.domain

    @property
    def admin_ssh_port(self) -> int:
        """The VPS's own SSH port, never forwarded: ``forwarding.admin_ssh_port``, else its ``ssh_port``."""
        port = self.forwarding.admin_ssh_port
        return port if port is not None else self.vps.ssh_port

    @property
    def tunnel_endpoint_host(self) -> str:
        """What peers dial: ``tunnel.endpoint``, else the VPS's internet address."""
        return self.tunnel.endpoint or self.vps.internet_address

    @property
    def vps_public_address6(self) -> str | None:
        """The VPS's public IPv6 address where config gives one: ``public_address6`` when it
        is not auto, else ``tunnel.endpoint``/``public_address``/``address`` when that is an
        IPv6 literal; None: only DNS (AAAA records) can say."""
        if self.vps.public_address6 != "auto":
            return self.vps.public_address6
        for value in (self.tunnel.endpoint, self.vps.internet_address):
            if value is not None and _ip_version(value) == 6:
                return str(ipaddress.IPv6Address(value.split("%")[0]))
        return None

    def tunnel_endpoint_for(self, host: Host) -> str | None:
        """What ``host`` dials (``hosts[].tunnel_endpoint_family``): auto, the endpoint as
        given (a DNS name is resolved by wg, as the host's resolver orders it); ipv6 or ipv4,
        an address of that family from config; None when config gives none (a check says so)."""
        family = host.tunnel_endpoint_family
        endpoint = self.tunnel_endpoint_host
        if family == "auto":
            return endpoint
        if family == "ipv6":
            return endpoint if _ip_version(endpoint) == 6 else self.vps_public_address6
        for value in (self.tunnel.endpoint, self.vps.public_address, self.vps.address):
            if value is not None and _ip_version(value) == 4:
                return value
        return None

    @property
    def default_gitlab_url(self) -> str:
        """https on GitLab's domain and the public https port (omitted when it is 443): the
        default of ``gitlab.external_url``, and the origin a set one must have."""
        https = self.forwarding.public_port("https")
        port = "" if https is None or https == 443 else f":{https}"
        return f"https://{self.gitlab.domain}{port}"

    @property
    def gitlab_url(self) -> str:
        """GitLab's URL as clients and runners use it: ``gitlab.external_url``, else the default."""
        return self.gitlab.external_url or self.default_gitlab_url

    @property
    def gitlab_api_url(self) -> str:
        """The API the deployer creates runners through: ``runners.api_url``, else GitLab's URL + /api/v4/."""
        return self.runners.api_url or f"{self.gitlab_url.rstrip('/')}/api/v4/"

    @property
    def served_domains(self) -> list[str]:
        """The DNS names GitLab serves TLS on: its domain, then the registry's when the
        registry is enabled and has a name of its own."""
        names = [self.gitlab.domain]
        if self.registry.enabled and self.registry_domain not in names:
            names.append(self.registry_domain)
        return names


def _ip_version(value: str) -> int | None:
    """4 or 6 for an address literal, None for a DNS name."""
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


# The top-level keys of the stack config that are not secrets (secrets.py holds those),
# by the name a stack spells them (a field's alias: gitlab_section is `gitlab`).
SECTION_FIELDS: dict[str, FieldInfo] = {f.alias or n: f for n, f in StackConfig.model_fields.items()}
SECTIONS: tuple[str, ...] = tuple(SECTION_FIELDS)
