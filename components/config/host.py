"""One machine of the stack config (``forgeway:hosts[i]``): how forgeway reaches it, what
it does, and its per-host docker proxy and runner options."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from components.config.types import (
    AbsolutePath,
    Address,
    ArchField,
    Become,
    EndpointFamily,
    HostKey,
    Int,
    InterfaceName,
    IPv4AddressText,
    IPv6AddressText,
    Name,
    Network,
    NoProxyEntry,
    Port,
    ProxyUrl,
    PublicAddress6,
    Role,
    RunnerScope,
    Section,
    SshUser,
)


class ProxySettings(Section):
    """An HTTP(S) proxy the host's docker daemon must use to reach registries."""

    http_proxy: ProxyUrl | None = Field(
        None, description="URL of the HTTP proxy, e.g. http://proxy.lan:3128 (no user:password@: not supported)"
    )
    https_proxy: ProxyUrl | None = Field(None, description="URL of the HTTPS proxy (no user:password@)")
    no_proxy: list[NoProxyEntry] = Field(
        default_factory=list,
        description="Extra NO_PROXY entries; the registry, GitLab host and tunnel subnet are always added",
    )

    @model_validator(mode="after")
    def _a_proxy_is_named(self) -> ProxySettings:
        # The docker-client renderer has nothing to write for a proxy section without a URL.
        if self.http_proxy is None and self.https_proxy is None:
            raise ValueError("http_proxy or https_proxy in a proxy section (leave proxy out for no proxy)")
        return self


# GitLab matches a job's tags against a runner's: a handful is normal, hundreds is a mistake.
MAX_RUNNER_TAGS = 32


class RunnerSettings(Section):
    """Per-host runner options (hosts with role `runner`)."""

    tags: Annotated[list[Name], Field(max_length=MAX_RUNNER_TAGS)] = Field(
        default_factory=list, description="Tags beside the architecture tag (at most 32, each a DNS label)"
    )
    concurrent: Annotated[Int, Field(ge=1, le=64)] | None = Field(
        None, description="Jobs at once; default: the host's cores"
    )
    privileged: bool = Field(False, description="Privileged job containers (needs protected)")
    protected: bool = Field(
        False,
        description="GitLab runs only jobs of protected branches and tags on it: the runner is created (or a "
        "runner_tokens override is checked) with access_level ref_protected",
    )
    scope: RunnerScope = Field(
        "instance", description="Who may use the runner in GitLab: instance, group (group_id) or project (project_id)"
    )
    group_id: Annotated[Int, Field(ge=1)] | None = Field(None, description="GitLab group id (scope group)")
    project_id: Annotated[Int, Field(ge=1)] | None = Field(None, description="GitLab project id (scope project)")
    locked: bool = Field(False, description="Locked to its current projects (GitLab's locked; project runners)")
    # GitLab refuses less than 10 minutes (POST /user/runners maximum_timeout).
    maximum_timeout: Annotated[Int, Field(ge=600, le=2_592_000)] | None = Field(
        None, description="Longest a job may run on it, in seconds (at least 600); default: each project's timeout"
    )
    job_memory_mb: Annotated[Int, Field(ge=64)] | None = Field(None, description="Memory limit of each job container")
    insecure_docker_socket_in_jobs: bool = Field(
        False, description="INSECURE: the host's docker socket in jobs (they own the host); needs protected"
    )
    multiarch: bool = Field(False, description="QEMU binfmt for the other arch: cross-arch builds and jobs")

    @model_validator(mode="after")
    def _scope_has_its_id(self) -> RunnerSettings:
        wanted = {"instance": None, "group": "group_id", "project": "project_id"}[self.scope]
        for key in ("group_id", "project_id"):
            if key == wanted and getattr(self, key) is None:
                raise ValueError(f"scope {self.scope} needs {key}: the id of the GitLab {self.scope} it belongs to")
            if key != wanted and getattr(self, key) is not None:
                raise ValueError(f"{key} only with scope {key.removesuffix('_id')} (scope is {self.scope})")
        return self

    @property
    def needs_protection(self) -> bool:
        """GitLab must hold this runner ref_protected: it is set protected, runs privileged
        jobs or hands jobs the docker socket (config refuses the last two without protected)."""
        return self.protected or self.privileged or self.insecure_docker_socket_in_jobs

    @property
    def access_level(self) -> str:
        """The runner's access_level in GitLab's API."""
        return "ref_protected" if self.needs_protection else "not_protected"

    @property
    def scope_id(self) -> int | None:
        """The group or project id of a group or project runner."""
        return self.group_id if self.scope == "group" else self.project_id if self.scope == "project" else None


class Host(Section):
    """A machine forgeway manages over SSH."""

    name: Name = Field(description="Unique host name, used in resource names")
    address: Address = Field(description="Address or DNS name the deployer reaches over SSH")
    arch: ArchField = Field(description="CPU architecture: arm64 or amd64 (32-bit ARM is refused)")
    roles: Annotated[list[Role], Field(min_length=1)] = Field(description="What the host does: vps, gitlab, runner")
    ssh_user: SshUser = Field("root", description="SSH login user")
    become: Become | None = Field(
        None,
        description="How host scripts get root: sudo (`sudo -n`, passwordless; the default when ssh_user "
        "is not root) or none (run as ssh_user; the default for root)",
    )
    ssh_port: Port = Field(22, description="SSH port; on the VPS this is the admin SSH port")
    host_key: HostKey | None = Field(
        None,
        description="Pinned SSH host key, 'ssh-ed25519 AAAA...' (or ecdsa-sha2-*; ssh-rsa is refused); "
        "required unless insecure_unpinned_host_keys",
    )
    jump_host: Name | None = Field(None, description="Name of another host to reach this one through")
    public_address: Address | None = Field(
        None, description="VPS only: the public address clients and peers use (default: address)"
    )
    public_address6: PublicAddress6 = Field(
        "auto",
        description="VPS only: its public IPv6 address (AAAA records, certificate, peers dialling over IPv6); "
        "auto: the AAAA records of public_address or address where that is a DNS name",
    )
    public_interface: InterfaceName = Field("eth0", description="VPS only: the interface that faces the internet")
    lan_networks: list[Network] = Field(
        default_factory=list, description="The host's LAN networks (must not overlap the tunnel)"
    )
    docker_networks: list[Network] = Field(
        default_factory=list, description="Docker bridge/address-pool networks on the host"
    )
    tunnel_address: IPv4AddressText | None = Field(
        None, description="Fixed tunnel address; default: assigned in host order (.1 is the VPS)"
    )
    tunnel_address6: IPv6AddressText | None = Field(
        None, description="Fixed tunnel IPv6 address (tunnel.ipv6); default: ipv6_subnet + the IPv4 host part"
    )
    tunnel_endpoint_family: EndpointFamily = Field(
        "auto",
        description="How this peer dials the VPS: auto (the endpoint as given; a name as the host's resolver "
        "orders it), ipv4 or ipv6 (the VPS's public_address6, else the name's AAAA records only)",
    )
    memory_mb: Annotated[Int, Field(ge=256)] | None = Field(
        None, description="Host memory in MB (drives the GitLab small-device profile)"
    )
    docker_socket: AbsolutePath = Field(
        "/var/run/docker.sock",
        description="The docker daemon's socket (runner hosts: bound into the runner, and into jobs when allowed)",
    )
    proxy: ProxySettings | None = Field(None, description="Proxy for the docker daemon")
    runner: RunnerSettings | None = Field(None, description="Runner options (role runner)")

    @property
    def escalation(self) -> Become:
        """``become`` as set, else sudo for a non-root ``ssh_user`` and none for root."""
        if self.become is not None:
            return self.become
        return "none" if self.ssh_user == "root" else "sudo"

    @property
    def internet_address(self) -> str:
        """What the internet reaches this host at: ``public_address``, else ``address``."""
        return self.public_address or self.address

    @property
    def effective_runner(self) -> RunnerSettings:
        """The runner options in force: ``runner`` as set, else every option's default."""
        return self.runner if self.runner is not None else RunnerSettings()
