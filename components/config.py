"""The whole stack config as pydantic models, and the one loader that reads it.

Every problem in a stack's config is reported at once, before any resource is
registered: each line names the full key (``forgeway:hosts[2].arch``), the value given
(``[secret]`` for secret keys) and what is expected.

Parsing is pure (``parse_stack``: a mapping in, a ``StackConfig`` or ``ConfigError``
out) so tests feed it the bad-config corpus without Pulumi; ``load_stack_config`` is the
thin Pulumi-facing wrapper.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from components.oncalendar import calendar_problem
from components.yaml_numbers import stack_file, surprising_numbers

__all__ = [
    "PROJECT",
    "SECRET_KEYS",
    "SECTIONS",
    "ConfigError",
    "Problem",
    "StackConfig",
    "VolumeRole",
    "parse_stack",
]

PROJECT = "forgeway"

Arch = Literal["arm64", "amd64"]
Role = Literal["vps", "gitlab", "runner"]
Service = Literal["http", "https", "ssh", "registry"]
ForwardingMode = Literal["snat", "preserve-source"]

# --- field types -------------------------------------------------------------------


def _strict_int(value: Any) -> Any:
    """YAML and the CLI hand over `yes`, 22.0 and "22" where an integer is meant; none
    is taken for a number (a boolean would become port 1, a fraction would be cut)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("an integer written as a plain number, e.g. 22 (not a boolean, a fraction or a quoted string)")
    return value


# Every integer of the config: strict, so `ssh_port: yes` is refused rather than becoming 1.
Int = Annotated[int, BeforeValidator(_strict_int)]
Port = Annotated[Int, Field(ge=1, le=65535)]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_KEY = re.compile(
    r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa)"
    r" [A-Za-z0-9+/]{32,}={0,3}( [^\s]*)?$"
)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A pinned image: either a digest, or a tag that names a version (has a digit) and is
# not a floating alias.
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Kept in step with policies/rules.py (image_pin_problem): config and pack agree.
_FLOATING_TAGS = {
    "latest", "stable", "edge", "nightly", "rc", "main", "master", "lts", "beta", "alpha", "dev",
    "develop", "current", "mainline", "testing", "unstable", "canary", "next",
}  # fmt: skip
_ARM32 = {"armv7", "armv7l", "armhf", "arm", "armel", "armv6", "arm32", "armv6l"}


def _is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(_LABEL.fullmatch(label.lower()) for label in labels)


# An interface name: the kernel's dev_valid_name (1-15 bytes, not '.' or '..', no '/', ':' or
# whitespace) narrowed to the bytes nft, ip, wg-quick and a shell take unquoted; VLANs (eth0.100),
# enp3s0, br-lan and wg_home pass. Kept in step with components/render/nftables.py (_IFNAME).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_IFNAME_RULE = (
    "1-15 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-' "
    "(the kernel's limit, e.g. eth0, enp3s0 or the VLAN eth0.100)"
)


def _interface_name(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise ValueError(f"an interface name: {_IFNAME_RULE}")
    return value


def _address(value: str) -> str:
    """An IP address or a DNS name (what SSH and WireGuard endpoints accept)."""
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        parsed = None
    zone = parsed.scope_id if isinstance(parsed, ipaddress.IPv6Address) else None
    # The zone reaches wg0.conf, ssh's command line and the docker provider's URL.
    if zone is not None and not _IFNAME.fullmatch(zone):
        raise ValueError(f"an IPv6 zone ID (after '%') that is an interface name: {_IFNAME_RULE}")
    if parsed is not None:
        return value
    if re.fullmatch(r"[0-9.]+", value) or not _is_hostname(value):
        raise ValueError("expected an IPv4/IPv6 address or a DNS hostname such as vps.example.org")
    return value


def _hostname(value: str) -> str:
    if not _is_hostname(value) or "." not in value:
        raise ValueError("expected a fully qualified DNS name such as gitlab.example.org")
    return value.lower()


def _name(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError("expected a lowercase name of letters, digits and '-' (a DNS label, at most 63 characters)")
    return value


def _host_key(value: str) -> str:
    if not _HOST_KEY.match(value.strip()):
        raise ValueError(
            "expected one public host key line such as 'ssh-ed25519 AAAAC3Nz...' "
            "(the output of `ssh-keyscan -t ed25519 HOST`, without the host name)"
        )
    if value.split(maxsplit=1)[0] == "ssh-rsa":
        # pulumi-command pins a key by offering only its type as the host key algorithm
        # (provider/pkg/provider/remote/connection.go: HostKeyAlgorithms = {publicKey.Type()}),
        # and for an RSA key that is "ssh-rsa", SHA-1 signatures, which OpenSSH 8.8 and
        # later refuse ("no matching host key type found"). ECDSA and Ed25519 keys are
        # their own algorithms and work.
        raise ValueError(
            "an ssh-rsa pin makes pulumi-command ask for SHA-1 RSA host signatures, which OpenSSH 8.8 "
            "and later refuse; pin the host's ed25519 key instead: `ssh-keyscan -t ed25519 HOST` "
            "(or ecdsa: `ssh-keyscan -t ecdsa HOST`)"
        )
    return " ".join(value.split()[:2])


def _arch(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in _ARM32:
        raise ValueError(
            f"32-bit ARM ({value}) is not supported: GitLab publishes no images for 32-bit ARM; "
            "install a 64-bit (aarch64) OS on this device and use arm64"
        )
    aliases = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64"}
    return aliases.get(value.lower(), value.lower()) if isinstance(value, str) else value


# An image reference by docker's grammar (distribution/reference regexp.go): an optional
# registry host[:port], lowercase path components, an optional tag and digest.
_REF_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
_REF_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:{_REF_DOMAIN}/)?{_REF_PATH}(?:/{_REF_PATH})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)


def _image(value: str) -> str:
    if len(value) > 512 or not _REFERENCE.fullmatch(value):
        raise ValueError(
            "an image reference such as gitlab/gitlab-ce:17.5.1-ce.0 or registry.example.org:5000/team/image:1.2 "
            "(lowercase name; tag of letters, digits, '_', '.', '-'; an optional digest @sha256:<64 hex digits>)"
        )
    if _DIGEST.search(value):
        return value
    if "@" in value:
        raise ValueError("expected a digest of the form name@sha256:<64 hex digits>")
    name, _, tag = value.rpartition(":")
    if not name or "/" in tag:
        raise ValueError(
            "expected an image pinned by digest (name@sha256:...) or by a fixed version tag "
            "(name:17.5.1-ce.0); an untagged image floats to 'latest'"
        )
    low = tag.lower()
    floating = low in _FLOATING_TAGS or "latest" in re.split(r"[-_.]", low) or not re.search(r"\d", tag)
    if floating or re.fullmatch(r"v?\d+", low):
        raise ValueError(f"tag '{tag}' moves over time; pin a fixed version tag (e.g. 17.5.1-ce.0) or a digest")
    return value


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        value = None  # ip_network() would take 1 or true as the address 0.0.0.1
    try:
        return ipaddress.ip_network(value, strict=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("expected a network in CIDR form with no host bits set, e.g. 192.168.1.0/24") from exc


Name = Annotated[str, AfterValidator(_name)]
Address = Annotated[str, AfterValidator(_address)]
InterfaceName = Annotated[str, AfterValidator(_interface_name)]
Hostname = Annotated[str, AfterValidator(_hostname)]
HostKey = Annotated[str, AfterValidator(_host_key)]
ArchField = Annotated[Arch, BeforeValidator(_arch)]
Image = Annotated[str, AfterValidator(_image)]
VolumeRole = Literal["config", "logs", "data"]


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s']+@[^@\s']+", value) or not _is_hostname(value.rsplit("@", 1)[1]):
        raise ValueError("an e-mail address such as admin@example.org")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or any(part in ("", ".", "..") for part in value.split("/")[1:]) or "\x00" in value:
        raise ValueError("an absolute, normalized directory path such as /srv/gitlab/data")
    return value


def _bindable_path(value: str) -> str:
    # The docker provider sends a container's volumes as "host:container[:mode]" binds
    # (kreuzwerker/terraform-provider-docker, volumeSetToDockerVolumes) and the local volume
    # driver's mount options are comma-separated: a ':' or ',' would split the path.
    if not re.fullmatch(r"[A-Za-z0-9_./@+=-]{1,1024}", value):
        raise ValueError("a path of letters, digits and _ . / @ + = - only (docker binds split on ':' and ',')")
    return value


def _ipv6_network(value: Any) -> ipaddress.IPv6Network:
    network = _network(value)
    if not isinstance(network, ipaddress.IPv6Network) or network.prefixlen > 56:
        raise ValueError("an IPv6 prefix of /56 or shorter (a /64 per runner host is carved from it), e.g. fd00:1::/48")
    return network


def _ipv4_network(value: Any) -> ipaddress.IPv4Network:
    network = _network(value)
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError("an IPv4 network in CIDR form, e.g. 172.28.0.0/14 (IPv6 comes from runners.ipv6_prefix)")
    return network


def _https_url(value: str) -> str:
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s']*)?", value):
        raise ValueError("an https:// URL such as https://mirror.example.org")
    return value


# A proxy URL goes into a systemd Environment= word (components/render/docker_client.py):
# printable ASCII without space, quote or backslash.
_PROXY_SAFE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,2048}")
_PROXY_URL = "an http://, https:// or socks5:// proxy URL of a host and an optional port, e.g. http://proxy.lan:3128"


def _proxy_url(value: str) -> str:
    if not _PROXY_SAFE.fullmatch(value) or "%" in value:
        # '%' too: Go's URL parser (docker's proxy) wants an IPv6 zone as %25, and a unit doubles it.
        raise ValueError(f"{_PROXY_URL}, with no whitespace, quote, backslash, '%' or non-ASCII character")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{_PROXY_URL} (this one does not parse: {exc})") from exc
    if parts.username is not None or parts.password is not None:
        # Credentials would land in the docker unit, Pulumi's state and the process list.
        raise ValueError(
            "a proxy URL without credentials: forgeway does not support proxy passwords (user:password@ "
            "would be stored in plain text in the stack, Pulumi's state and a systemd unit); let the proxy "
            "allow this host by its address instead"
        )
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        known = True
    except ValueError:
        known = _is_hostname(host) and not re.fullmatch(r"[0-9.]+", host)
    rest = parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#"))
    if parts.scheme not in ("http", "https", "socks5") or not known or rest or port == 0:
        raise ValueError(_PROXY_URL)
    return value


# A NO_PROXY entry as Go's net/http reads it: host, .domain, *.domain, host:port, IP, CIDR, [v6].
_NO_PROXY_ENTRY = re.compile(r"[A-Za-z0-9*.\[\]:/_-]{1,253}")


def _no_proxy_entry(value: str) -> str:
    if not _NO_PROXY_ENTRY.fullmatch(value):
        raise ValueError(
            "a NO_PROXY entry: a host, .domain, *.domain, host:port, an address or a CIDR, "
            "of letters, digits and . * : / [ ] _ - only"
        )
    return value


def _on_calendar(value: str) -> str:
    problem = calendar_problem(value)
    if problem is not None:
        raise ValueError(
            f"a systemd OnCalendar spec: {problem}, e.g. hourly, daily, *:0/30 or Mon..Fri 03:00 "
            "(time zone UTC only; check one with `systemd-analyze calendar SPEC`)"
        )
    return value


OnCalendar = Annotated[str, AfterValidator(_on_calendar)]
ProxyUrl = Annotated[str, AfterValidator(_proxy_url)]
NoProxyEntry = Annotated[str, AfterValidator(_no_proxy_entry)]


def _url_text(value: str) -> str:
    # gitlab.rb and the runner's config.toml quote the URL: printable ASCII only, no quote or backslash.
    if not re.fullmatch(r"[\x21\x23-\x26\x28-\x5b\x5d-\x7e]{1,2048}", value):
        raise ValueError("a URL of printable ASCII without spaces, quotes or backslashes")
    return value


def _ipv4_address_text(value: Any) -> Any:
    # pydantic would take 5 or true as the address 0.0.0.5 or 0.0.0.1.
    if not isinstance(value, str | ipaddress.IPv4Address):
        raise ValueError("an IPv4 address written as text, e.g. 10.8.0.10")
    return value


IPv4AddressText = Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4_address_text)]
Email = Annotated[str, AfterValidator(_email)]
ExternalUrl = Annotated[str, AfterValidator(_url_text)]
IPv6Network = Annotated[ipaddress.IPv6Network, BeforeValidator(_ipv6_network)]
IPv4Network = Annotated[ipaddress.IPv4Network, BeforeValidator(_ipv4_network)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path), AfterValidator(_bindable_path)]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
SshUser = Annotated[str, Field(pattern=_USER.pattern)]
Become = Literal["sudo", "none"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ----------------------------------------------------------------------


class ProxySettings(_Model):
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


class RunnerSettings(_Model):
    """Per-host runner options (hosts with role `runner`)."""

    tags: Annotated[list[Name], Field(max_length=MAX_RUNNER_TAGS)] = Field(
        default_factory=list, description="Tags beside the architecture tag (at most 32, each a DNS label)"
    )
    concurrent: Annotated[Int, Field(ge=1, le=64)] | None = Field(
        None, description="Jobs at once; default: the host's cores"
    )
    privileged: bool = Field(False, description="Privileged job containers (needs protected_only)")
    protected_only: bool = Field(False, description="Run jobs of protected branches and tags only")
    job_memory_mb: Annotated[Int, Field(ge=64)] | None = Field(None, description="Memory limit of each job container")
    insecure_docker_socket_in_jobs: bool = Field(
        False, description="INSECURE: the host's docker socket in jobs (they own the host); needs protected_only"
    )
    multiarch: bool = Field(False, description="QEMU binfmt for the other arch: cross-arch builds and jobs")


class AddressPool(_Model):
    """A docker default address pool: networks of /size carved out of base."""

    base: IPv4Network = Field(description="IPv4 network docker carves bridge networks from, e.g. 172.28.0.0/14")
    size: Annotated[Int, Field(ge=16, le=29)] = Field(24, description="Prefix length of each network")


class Prune(_Model):
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


class Host(_Model):
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


class Tunnel(_Model):
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
    implementation: Literal["auto", "kernel", "wireguard-go"] = Field(
        "auto", description="auto: the kernel module where it loads, else wireguard-go"
    )
    admin_peers: list[Name] = Field(
        default_factory=list,
        description="Hosts (by name) whose tunnel address may reach the VPS admin SSH and every other host's "
        'own SSH through the tunnel; default none (README, "Who accepts what")',
    )

    @property
    def effective_mtu(self) -> int:
        return self.mtu if self.mtu is not None else self.uplink_mtu - 80


class ForwardedPort(_Model):
    """One public port on the VPS and where it lands on the GitLab host."""

    service: Service = Field(description="http, https, ssh or registry")
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


class Forwarding(_Model):
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

    def port(self, service: str) -> ForwardedPort | None:
        return next((p for p in self.ports if p.service == service), None)


class VolumePaths(_Model):
    """Host directories bound into GitLab's named volumes (e.g. an SSD on a Jetson)."""

    config: AbsolutePath | None = Field(None, description="/etc/gitlab: settings, secrets, SSH host keys")
    logs: AbsolutePath | None = Field(None, description="/var/log/gitlab")
    data: AbsolutePath | None = Field(None, description="/var/opt/gitlab: repositories, database, registry")

    def get(self, role: VolumeRole) -> str | None:
        path: str | None = getattr(self, role)
        return path


class GitLab(_Model):
    """The GitLab server on the host with role gitlab."""

    domain: Hostname = Field(description="Public DNS name of GitLab, pointing at the VPS")
    external_url: ExternalUrl | None = Field(
        None, description="Default https://<domain> (with the https port if not 443)"
    )
    images: dict[ArchField, Image] = Field(description="Pinned image per architecture: {arm64: ..., amd64: ...}")
    small_device: Literal["auto", "on", "off"] = Field(
        "auto", description="Small-device profile; auto: on for arm64 hosts with <= 8 GB"
    )
    tls: Literal["letsencrypt", "own-ca"] = Field("own-ca", description="Certificates from Let's Encrypt or our own CA")
    memory_limit_mb: Annotated[Int, Field(ge=2048)] | None = Field(
        None, description="Container memory limit; default 3/4 of the host's memory_mb, else 4096"
    )
    letsencrypt_emails: list[Email] = Field(
        default_factory=list, description="Contact addresses for Let's Encrypt expiry mail (tls letsencrypt)"
    )
    publish_on_lan: bool = Field(
        False, description="Also publish GitLab's ports on the host's LAN address (default: tunnel address only)"
    )
    volume_paths: VolumePaths = Field(
        VolumePaths(), description="Host directories behind GitLab's volumes; default: docker named volumes"
    )


class Registry(_Model):
    """GitLab's container registry."""

    enabled: bool = Field(True, description="Serve the container registry")
    domain: Hostname | None = Field(None, description="Registry DNS name; default: the GitLab domain")


class Runners(_Model):
    """Settings shared by every runner host."""

    images: dict[ArchField, Image] = Field(
        default_factory=dict, description="Pinned gitlab-runner image per architecture"
    )
    helper_images: dict[ArchField, Image] = Field(
        default_factory=dict, description="Pinned gitlab-runner-helper image per architecture (default: the runner's)"
    )
    default_job_image: Image = Field("debian:12.8-slim", description="Image of jobs that name none (pinned)")
    pull_policy: Literal["always", "if-not-present", "never"] = Field(
        "if-not-present", description="When jobs pull their images"
    )
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


class StackConfig(_Model):
    """One stack's whole configuration, without its secrets (SECRET_KEYS)."""

    hosts: list[Host] = Field(description="Every machine: exactly one vps, one gitlab; any number of runners")
    tunnel: Tunnel = Field(Tunnel(), description="The WireGuard tunnel")
    forwarding: Forwarding = Field(Forwarding(), description="Public ports on the VPS and where they land")
    gitlab: GitLab = Field(description="The GitLab server")
    registry: Registry = Field(Registry(), description="The container registry")
    runners: Runners = Field(Runners(), description="Settings shared by the runner hosts")
    insecure_unpinned_host_keys: bool = Field(
        False, description="Connect without checking SSH host keys (a loud opt-out; never in production)"
    )

    def hosts_with(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

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
    def gitlab_url(self) -> str:
        """GitLab's URL as clients and runners use it: ``gitlab.external_url``, else https on
        GitLab's domain and the public https port (omitted when it is 443)."""
        https = self.forwarding.port("https")
        port = "" if https is None or https.public == 443 else f":{https.public}"
        return self.gitlab.external_url or f"https://{self.gitlab.domain}{port}"


# --- secrets -----------------------------------------------------------------------


def _pem_private_key(value: Any) -> Any:
    if isinstance(value, str) and "PRIVATE KEY-----" not in value:
        raise ValueError("expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    return value


def _runner_token(value: Any) -> Any:
    if isinstance(value, str) and not value.startswith("glrt-"):
        raise ValueError(
            "expected a runner authentication token (glrt-...): create the runner in GitLab "
            "(Admin > CI/CD > Runners > New instance runner) and use its token; registration "
            "tokens are deprecated and refused"
        )
    return value


def _wg_key(value: Any) -> Any:
    import base64
    import binascii

    try:
        ok = isinstance(value, str) and len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError("expected a WireGuard private key: 32 bytes in base64 (`wg genkey`)")
    return value


@dataclass(frozen=True)
class SecretKey:
    """A config key that must be set with `pulumi config set --secret`."""

    key: str
    adapter: TypeAdapter[Any]
    description: str
    example: str  # the value placeholder in the fix command
    path_hint: str = ""  # for maps: the path form of the fix command


SECRET_KEYS: dict[str, SecretKey] = {
    s.key: s
    for s in [
        SecretKey(
            "ssh_private_key",
            TypeAdapter(Annotated[str, AfterValidator(_pem_private_key)]),
            "SSH private key for every host (omit to use ssh-agent)",
            '"$(cat ~/.ssh/id_ed25519)"',
        ),
        SecretKey(
            "gitlab_root_password",
            TypeAdapter(Annotated[str, Field(min_length=12)]),
            "GitLab root password (default: generated)",
            "<password>",
        ),
        SecretKey(
            "ca_private_key",
            TypeAdapter(Annotated[str, AfterValidator(_pem_private_key)]),
            "Private key of our own CA (tls own-ca; default: generated)",
            '"$(cat ca.key)"',
        ),
        SecretKey(
            "wireguard_private_keys",
            TypeAdapter(dict[Name, Annotated[str, AfterValidator(_wg_key)]]),
            "WireGuard private key per host name (default: generated)",
            '"$(wg genkey)"',
            path_hint="<host>",
        ),
        SecretKey(
            "runner_tokens",
            TypeAdapter(dict[Name, Annotated[str, AfterValidator(_runner_token)]]),
            "Runner authentication token (glrt-...) per runner host name",
            "<glrt-token>",
            path_hint="<host>",
        ),
    ]
}

# Non-secret top-level keys and the model field that holds each.
SECTIONS: tuple[str, ...] = tuple(StackConfig.model_fields)

# Keys forgeway once accepted and no longer reads, and why; a stack that still sets one
# is told so by name (a plain "unknown key" could suggest a similar, unrelated key).
_NO_REGISTRY_LOGIN = (
    "removed: nothing used it. gitlab-runner pulls job images from GitLab's own registry with "
    "each job's token, and other private registries take a DOCKER_AUTH_CONFIG CI/CD variable (README, "
    "'Registry credentials'); delete it: pulumi config rm {rm}"
)
REMOVED_KEYS: dict[str, str] = {
    "registry.username": _NO_REGISTRY_LOGIN.format(rm=f"--path '{PROJECT}:registry.username'"),
    "registry_password": _NO_REGISTRY_LOGIN.format(rm=f"{PROJECT}:registry_password"),
}


def fix_command(key: str, path: str = "") -> str:
    """The exact CLI command that stores a secret key encrypted."""
    spec = SECRET_KEYS[key]
    if spec.path_hint:
        sub = path or spec.path_hint
        return f"pulumi config set --secret --path '{PROJECT}:{key}.{sub}' {spec.example}"
    return f"pulumi config set --secret {PROJECT}:{key} {spec.example}"


# --- errors ------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"://[^/@\s\"]*@")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the config: the full key, the value given, what is expected."""

    key: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.key}: {self.expected} (got {self.value})"


class ConfigError(Exception):
    """Every problem of a stack config, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.key, p.expected, p.value))
        lines = [f"  - {p}" for p in self.problems]
        super().__init__(
            f"the stack config has {len(self.problems)} problem(s); nothing was changed:\n" + "\n".join(lines)
        )


def _show(value: Any) -> str:
    # A URL's user:password@ is never shown (a proxy URL with credentials is refused by it).
    text = _URL_USERINFO.sub("://[secret]@", json.dumps(value, default=str))
    return text if len(text) <= 80 else text[:77] + "..."


def _path_part(name: str) -> str:
    """`.name`, or Pulumi's `["..."]` path form for a map key that is no plain word (a
    newline in a key given must not start a line of its own in the error)."""
    return f".{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f"[{json.dumps(name)}]"


def _key_path(top: str, loc: tuple[int | str, ...]) -> str:
    path = f"{PROJECT}:{top}"
    for part in loc:
        if part == "[key]":
            continue  # pydantic's marker for "the key of this map entry"
        path += f"[{part}]" if isinstance(part, int) else _path_part(str(part))
    return path


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model that holds the unknown key at loc (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _problems_from(
    exc: ValidationError, *, base: tuple[int | str, ...], root: type[BaseModel] | None, secret: Callable[[str], bool]
) -> list[Problem]:
    """Problems from a pydantic error; ``base`` is prepended to each error's loc."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = base + tuple(err["loc"])
        key = _key_path(str(loc[0]), loc[1:])
        value = "[secret]" if secret(str(loc[0])) else _show(err.get("input"))
        expected = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and key.removeprefix(f"{PROJECT}:") in REMOVED_KEYS:
            expected = REMOVED_KEYS[key.removeprefix(f"{PROJECT}:")]
        elif err["type"] == "extra_forbidden":
            known = _fields_at(root, loc) if root else []
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            expected = "unknown key" + (
                f"; did you mean '{hint[0]}'?" if hint else f" (known: {', '.join(known)})" if known else ""
            )
        elif err["type"] == "missing":
            value, expected = "nothing", "required key is missing"
        problems.append(Problem(key, value, expected))
    return problems


# --- cross-section checks ----------------------------------------------------------

Check = Callable[[StackConfig], list[Problem]]


def _host_index(cfg: StackConfig, host: Host) -> int:
    return cfg.hosts.index(host)


def _check_roles(cfg: StackConfig) -> list[Problem]:
    problems = []
    for role in ("vps", "gitlab"):
        holders = cfg.hosts_with(role)
        if len(holders) != 1:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts",
                    _show([h.name for h in holders]),
                    f"exactly one host with role '{role}' (found {len(holders)})",
                )
            )
    seen: dict[str, int] = {}
    for i, host in enumerate(cfg.hosts):
        if host.name in seen:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].name", _show(host.name), f"a unique name (hosts[{seen[host.name]}] has it)"
                )
            )
        seen.setdefault(host.name, i)
        if "vps" in host.roles and "gitlab" in host.roles:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].roles",
                    _show(host.roles),
                    "vps and gitlab on different hosts (GitLab runs at home, the VPS forwards to it)",
                )
            )
        if "gitlab" in host.roles and "runner" in host.roles:
            # The runner's daemon.json script restarts dockerd on every change of it, and
            # with it the GitLab container (components/runners.py, docker-daemon-up.sh).
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].roles",
                    _show(host.roles),
                    "gitlab and runner on different hosts (each daemon.json change of a runner host "
                    "restarts its docker, which would restart GitLab)",
                )
            )
        if len(set(host.roles)) != len(host.roles):
            problems.append(Problem(f"{PROJECT}:hosts[{i}].roles", _show(host.roles), "each role once"))
        if host.runner is not None and host.runner.privileged and not host.runner.protected_only:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].runner.privileged",
                    "true",
                    "privileged only with runner.protected_only: true (privileged jobs own the host; "
                    "let only protected branches and tags run them)",
                )
            )
        if host.runner is not None and host.runner.insecure_docker_socket_in_jobs and not host.runner.protected_only:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].runner.insecure_docker_socket_in_jobs",
                    "true",
                    "the docker socket in jobs only with runner.protected_only: true (a job with the socket "
                    "owns the host); prefer docker-in-docker on a privileged protected runner",
                )
            )
        if "runner" not in host.roles and host.runner is not None:
            problems.append(
                Problem(f"{PROJECT}:hosts[{i}].runner", "{...}", "runner settings only on a host with role 'runner'")
            )
        if "vps" not in host.roles and host.public_address is not None:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].public_address", _show(host.public_address), "public_address only on the vps"
                )
            )
    return problems


def _check_host_links(cfg: StackConfig) -> list[Problem]:
    names = {h.name for h in cfg.hosts}
    problems = []
    for i, host in enumerate(cfg.hosts):
        if host.jump_host is not None:
            if host.jump_host == host.name or host.jump_host not in names:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].jump_host",
                        _show(host.jump_host),
                        f"the name of another host ({', '.join(sorted(names - {host.name}))})",
                    )
                )
            elif cfg.host(host.jump_host).jump_host is not None:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].jump_host",
                        _show(host.jump_host),
                        "a host reached directly (one jump at most)",
                    )
                )
        if host.host_key is None and not cfg.insecure_unpinned_host_keys:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].host_key",
                    "nothing",
                    "a pinned SSH host key (`ssh-keyscan -t ed25519 -p PORT ADDRESS`); or set "
                    f"{PROJECT}:insecure_unpinned_host_keys true to connect without checking it",
                )
            )
    return problems


def _check_admin_peers(cfg: StackConfig) -> list[Problem]:
    """tunnel.admin_peers names hosts: a typo must not silently open nothing (or, later, the wrong host)."""
    names = [h.name for h in cfg.hosts]
    problems = []
    seen: set[str] = set()
    for i, name in enumerate(cfg.tunnel.admin_peers):
        key = f"{PROJECT}:tunnel.admin_peers[{i}]"
        if name not in names:
            problems.append(Problem(key, _show(name), f"the name of a host in hosts ({', '.join(names)})"))
        elif name in seen:
            problems.append(Problem(key, _show(name), "each host once"))
        seen.add(name)
    # A host the deployer reaches through the tunnel (by its tunnel address, via a jump
    # host) is reached from the jump host's tunnel address: the segmentation would cut it.
    for i, host in enumerate(cfg.hosts):
        try:
            inside = ipaddress.ip_address(host.address) in cfg.tunnel.subnet
        except ValueError:
            continue  # a DNS name: not checked
        if inside and host.jump_host is not None and host.jump_host not in cfg.tunnel.admin_peers:
            problems.append(
                Problem(
                    f"{PROJECT}:tunnel.admin_peers",
                    _show(cfg.tunnel.admin_peers),
                    f"a list naming '{host.jump_host}': hosts[{i}] ({host.name}) is reached through the tunnel "
                    f"from jump host '{host.jump_host}', and only admin peers may SSH through the tunnel",
                )
            )
    return problems


def _check_ports(cfg: StackConfig) -> list[Problem]:
    problems = []
    by_service: dict[str, int] = {}
    by_public: dict[int, int] = {}
    by_home: dict[int, int] = {}
    for i, fp in enumerate(cfg.forwarding.ports):
        key = f"{PROJECT}:forwarding.ports[{i}]"
        if fp.service in by_service:
            problems.append(
                Problem(
                    f"{key}.service", _show(fp.service), f"each service once (ports[{by_service[fp.service]}] has it)"
                )
            )
        if fp.public in by_public:
            problems.append(
                Problem(
                    f"{key}.public",
                    _show(fp.public),
                    f"a public port no other service uses (ports[{by_public[fp.public]}] has it)",
                )
            )
        if fp.home_port in by_home and fp.public not in by_public:  # a public clash says it already
            other = by_home[fp.home_port]
            # Name the entry whose home port was set explicitly: that is the one to change.
            at, seen = (i, other) if fp.home is not None or cfg.forwarding.ports[other].home is None else (other, i)
            field = "home" if cfg.forwarding.ports[at].home is not None else "public"
            problems.append(
                Problem(
                    f"{PROJECT}:forwarding.ports[{at}].{field}",
                    _show(fp.home_port),
                    f"a home port no other service lands on (ports[{seen}] lands there too; home defaults to public)",
                )
            )
        by_service.setdefault(fp.service, i)
        by_public.setdefault(fp.public, i)
        by_home.setdefault(fp.home_port, i)
    if "https" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports", _show(sorted(by_service)), "an https entry (GitLab is served over HTTPS)"
            )
        )
    if "ssh" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                _show(sorted(by_service)),
                "an ssh entry (git over SSH; e.g. {service: ssh, public: 22, home: 2222})",
            )
        )
    problems += _external_url_problems(cfg, by_service.get("https"))
    if cfg.registry.enabled and "registry" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                _show(sorted(by_service)),
                "a registry entry while registry.enabled is true",
            )
        )
    http = cfg.forwarding.port("http")
    if cfg.gitlab.tls == "letsencrypt" and http is not None and http.public != 80:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports[{cfg.forwarding.ports.index(http)}].public",
                _show(http.public),
                "80: gitlab.tls=letsencrypt answers the ACME HTTP-01 challenge on public port 80",
            )
        )
    if cfg.gitlab.tls == "letsencrypt" and http is None:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                _show(sorted(by_service)),
                "an http entry on port 80: gitlab.tls=letsencrypt answers its challenge there",
            )
        )
    if cfg.tunnel.listen_port in {fp.public for fp in cfg.forwarding.ports}:
        problems.append(
            Problem(f"{PROJECT}:tunnel.listen_port", _show(cfg.tunnel.listen_port), "a UDP port not also forwarded")
        )
    return problems


def _external_url_problems(cfg: StackConfig, https_index: int | None) -> list[Problem]:
    """gitlab.external_url must be what the VPS serves: https, GitLab's domain, the forwarded port."""
    url = cfg.gitlab.external_url
    if url is None or https_index is None:
        return []
    public = cfg.forwarding.ports[https_index].public
    expected = f"https://{cfg.gitlab.domain}" + ("" if public == 443 else f":{public}")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        parts, port = None, None
    host = (parts.hostname or "") if parts is not None else ""
    if parts is None or parts.scheme != "https" or host != cfg.gitlab.domain.lower() or port != public:
        return [
            Problem(
                f"{PROJECT}:gitlab.external_url",
                _show(url),
                f"{expected} (optionally with a path): https on gitlab.domain and on the public https port the VPS "
                f"forwards (forwarding.ports[{https_index}].public={public}); or leave it unset",
            )
        ]
    return []


def _check_host_ports(cfg: StackConfig) -> list[Problem]:
    """Ports that must not clash with the hosts' own SSH: the VPS admin, GitLab's host."""
    problems = []
    ssh = cfg.forwarding.port("ssh")
    gitlab = cfg.hosts_with("gitlab")
    if ssh is not None and len(gitlab) == 1 and ssh.home_port == gitlab[0].ssh_port:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports[{cfg.forwarding.ports.index(ssh)}].home",
                _show(ssh.home_port),
                f"a port other than the own SSH port of host '{gitlab[0].name}' "
                f"(hosts[{cfg.hosts.index(gitlab[0])}].ssh_port={gitlab[0].ssh_port}); GitLab's SSH must land "
                "elsewhere, e.g. 2222",
            )
        )
    vps = cfg.hosts_with("vps")
    if len(vps) == 1:
        admin = cfg.forwarding.admin_ssh_port or vps[0].ssh_port
        for i, fp in enumerate(cfg.forwarding.ports):
            if fp.public == admin:
                problems.append(
                    Problem(
                        f"{PROJECT}:forwarding.ports[{i}].public",
                        _show(fp.public),
                        f"a port other than the VPS admin SSH port {admin} (forwarding it would lock the admin out); "
                        "move the VPS's sshd to another port and set its ssh_port, or forward git SSH on another port",
                    )
                )
        if cfg.forwarding.admin_ssh_port not in (None, vps[0].ssh_port) and vps[0].jump_host is None:
            problems.append(
                Problem(
                    f"{PROJECT}:forwarding.admin_ssh_port",
                    _show(cfg.forwarding.admin_ssh_port),
                    "the port the deployer reaches the VPS on "
                    f"(hosts[{_host_index(cfg, vps[0])}].ssh_port={vps[0].ssh_port})",
                )
            )
    return problems


def _check_mtu(cfg: StackConfig) -> list[Problem]:
    problems = []
    if cfg.tunnel.mtu is not None and cfg.tunnel.mtu > cfg.tunnel.uplink_mtu - 60:
        problems.append(
            Problem(
                f"{PROJECT}:tunnel.mtu",
                _show(cfg.tunnel.mtu),
                f"at most uplink_mtu - 60 = {cfg.tunnel.uplink_mtu - 60} (WireGuard adds 60-80 bytes)",
            )
        )
    return problems


def _check_networks(cfg: StackConfig) -> list[Problem]:
    problems = []
    subnet = cfg.tunnel.subnet
    problems += _check_mtu(cfg)
    if subnet.version != 4:
        return [*problems, Problem(f"{PROJECT}:tunnel.subnet", _show(str(subnet)), "an IPv4 subnet")]
    if subnet.num_addresses < len(cfg.hosts) + 2:
        problems.append(Problem(f"{PROJECT}:tunnel.subnet", _show(str(subnet)), f"room for {len(cfg.hosts)} hosts"))
    pinned: dict[ipaddress.IPv4Address, int] = {}
    for i, host in enumerate(cfg.hosts):
        address = host.tunnel_address
        if address is not None and address in subnet:
            if address in (subnet.network_address, subnet.broadcast_address):
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].tunnel_address",
                        _show(str(address)),
                        "a host address, not the network or broadcast address",
                    )
                )
            elif address in pinned:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].tunnel_address",
                        _show(str(address)),
                        f"an address no other host has (hosts[{pinned[address]}] has it)",
                    )
                )
            pinned.setdefault(address, i)
        for field in ("lan_networks", "docker_networks"):
            for j, net in enumerate(getattr(host, field)):
                if net.version == subnet.version and net.overlaps(subnet):
                    problems.append(
                        Problem(
                            f"{PROJECT}:hosts[{i}].{field}[{j}]",
                            _show(str(net)),
                            f"a network that does not overlap the tunnel subnet {subnet} (tunnel.subnet)",
                        )
                    )
        if host.tunnel_address is not None and host.tunnel_address not in subnet:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].tunnel_address",
                    _show(str(host.tunnel_address)),
                    f"an address inside tunnel.subnet {subnet}",
                )
            )
    return problems


# An architecture named in an image reference (yrzr/gitlab-ce-arm64v8, ...-amd64): such an
# image under the other architecture's key would be pulled for, and fail on, the wrong CPU.
_ARCH_HINTS: dict[str, re.Pattern[str]] = {
    "arm64": re.compile(r"(?<![a-z0-9])(arm64(v8)?|aarch64)(?![a-z0-9])"),
    "amd64": re.compile(r"(?<![a-z0-9])(amd64|x86[_-]64)(?![a-z0-9])"),
}


def _image_arch_problems(section: str, images: Mapping[Arch, str]) -> list[Problem]:
    problems = []
    for arch, ref in sorted(images.items()):
        named = ref.split("@", 1)[0].lower()
        for other, hint in _ARCH_HINTS.items():
            if other != arch and hint.search(named):
                problems.append(
                    Problem(
                        f"{PROJECT}:{section}.images.{arch}",
                        _show(ref),
                        f"an image built for {arch}: this reference names {other}; "
                        f"put it under {section}.images.{other} and give {arch} hosts an {arch} image",
                    )
                )
    return problems


def _check_images(cfg: StackConfig) -> list[Problem]:
    problems = _image_arch_problems("gitlab", cfg.gitlab.images) + _image_arch_problems("runners", cfg.runners.images)
    gitlab = cfg.hosts_with("gitlab")
    if len(gitlab) == 1 and gitlab[0].arch not in cfg.gitlab.images:
        problems.append(
            Problem(
                f"{PROJECT}:gitlab.images.{gitlab[0].arch}",
                "nothing",
                f"a pinned GitLab image for {gitlab[0].arch}, the arch of host '{gitlab[0].name}'",
            )
        )
    for arch in sorted({h.arch for h in cfg.hosts_with("runner")} - set(cfg.runners.images)):
        problems.append(
            Problem(
                f"{PROJECT}:runners.images.{arch}",
                "nothing",
                f"a pinned gitlab-runner image for the {arch} runner hosts",
            )
        )
    return problems


def _check_runner_networks(cfg: StackConfig) -> list[Problem]:
    """docker's address pools must not take the tunnel's or any LAN's addresses; multiarch needs binfmt."""
    problems = []
    taken: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [("tunnel.subnet", cfg.tunnel.subnet)]
    for i, host in enumerate(cfg.hosts):
        taken += [(f"hosts[{i}].lan_networks", net) for net in host.lan_networks]
        taken += [(f"hosts[{i}].docker_networks", net) for net in host.docker_networks]
    for i, pool in enumerate(cfg.runners.address_pools):
        key = f"{PROJECT}:runners.address_pools[{i}].base"
        if pool.size < pool.base.prefixlen:
            problems.append(
                Problem(
                    f"{PROJECT}:runners.address_pools[{i}].size",
                    _show(pool.size),
                    f"a prefix length of at least {pool.base.prefixlen} (the base's own)",
                )
            )
        for where, net in taken:
            if net.version == 4 and pool.base.overlaps(net):
                problems.append(
                    Problem(key, _show(str(pool.base)), f"a pool that does not overlap {where} ({net}): pick another")
                )
    multiarch = [h.name for h in cfg.hosts_with("runner") if h.runner is not None and h.runner.multiarch]
    if multiarch and cfg.runners.binfmt_image is None:
        problems.append(
            Problem(
                f"{PROJECT}:runners.binfmt_image",
                "nothing",
                f"a pinned binfmt image (e.g. tonistiigi/binfmt:qemu-v8.1.5) for the multiarch hosts "
                f"{', '.join(multiarch)}",
            )
        )
    return problems


# docker's default bridge (docker0) when daemon.json sets no "bip", as forgeway's does not.
DOCKER_DEFAULT_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")


def _check_docker_overlaps(cfg: StackConfig) -> list[Problem]:
    """On a host running docker, docker0 and the host's docker networks take routes: a LAN
    or the tunnel in the same addresses becomes unreachable from that host."""
    problems = []
    subnet = cfg.tunnel.subnet
    docker_hosts = [(i, h) for i, h in enumerate(cfg.hosts) if {"gitlab", "runner"} & set(h.roles)]
    if docker_hosts and subnet.version == 4 and subnet.overlaps(DOCKER_DEFAULT_BRIDGE):
        problems.append(
            Problem(
                f"{PROJECT}:tunnel.subnet",
                _show(str(subnet)),
                f"a subnet outside docker's default bridge {DOCKER_DEFAULT_BRIDGE} (docker0 on the gitlab and "
                "runner hosts), e.g. 10.8.0.0/24",
            )
        )
    for i, host in docker_hosts:
        for j, lan in enumerate(host.lan_networks):
            clashes = [(str(DOCKER_DEFAULT_BRIDGE), "docker's default bridge docker0")]
            clashes += [(str(net), f"hosts[{i}].docker_networks[{k}]") for k, net in enumerate(host.docker_networks)]
            for net, what in clashes:
                if lan.version == 4 and lan.overlaps(ipaddress.ip_network(net)):
                    problems.append(
                        Problem(
                            f"{PROJECT}:hosts[{i}].lan_networks[{j}]",
                            _show(str(lan)),
                            f"a LAN that does not overlap {what} ({net}) on this docker host: its routes would "
                            "take the LAN's addresses",
                        )
                    )
    return problems


def _check_runner_tags(cfg: StackConfig) -> list[Problem]:
    """A tag naming the other architecture would send that arch's jobs to this host."""
    problems = []
    for i, host in enumerate(cfg.hosts):
        tags = host.runner.tags if host.runner is not None else []
        seen: set[str] = {host.arch}
        for j, tag in enumerate(tags):
            key = f"{PROJECT}:hosts[{i}].runner.tags[{j}]"
            named = [arch for arch, hint in _ARCH_HINTS.items() if hint.search(tag) and arch != host.arch]
            if named and not (host.runner is not None and host.runner.multiarch):
                problems.append(
                    Problem(
                        key,
                        _show(tag),
                        f"a tag that names no other architecture: this host is {host.arch}, and jobs tagged "
                        f"{named[0]} would run here on the wrong CPU (the {host.arch} tag is added by itself; "
                        "runner.multiarch: true runs the other arch's jobs under QEMU and allows it)",
                    )
                )
            elif tag in seen:
                problems.append(
                    Problem(key, _show(tag), f"each tag once (the architecture tag {host.arch} is added by itself)")
                )
            seen.add(tag)
    return problems


# Each check with the sections it needs whole: with a section invalid, the check is
# skipped (its field errors are already reported) rather than guessing from a part.
CROSS_CHECKS: tuple[tuple[frozenset[str], Check], ...] = (
    (frozenset({"hosts"}), _check_roles),
    (frozenset({"hosts"}), _check_host_links),
    (frozenset({"hosts", "tunnel"}), _check_admin_peers),
    (frozenset({"forwarding", "registry", "gitlab", "tunnel"}), _check_ports),
    (frozenset({"hosts", "forwarding"}), _check_host_ports),
    (frozenset({"tunnel"}), _check_networks),
    (frozenset({"hosts", "gitlab", "runners"}), _check_images),
    (frozenset({"hosts", "tunnel", "runners"}), _check_runner_networks),
    (frozenset({"hosts", "tunnel"}), _check_docker_overlaps),
    (frozenset({"hosts"}), _check_runner_tags),
)


def _duplicate_wireguard_keys(secrets: Mapping[str, Any]) -> list[Problem]:
    """A private key is a peer's identity on the tunnel: two hosts with one key are one peer."""
    keys = secrets.get("wireguard_private_keys")
    if not isinstance(keys, dict):
        return []
    from components.render.wireguard import wg_public_key

    problems = []
    first: dict[str, str] = {}
    for name, private in keys.items():
        try:
            # By public key: X25519 clamps the private key, so keys that differ only in
            # clamped bits are one key.
            key = wg_public_key(private)
        except (TypeError, ValueError):
            continue  # not a key: reported by its own check
        if key in first:
            problems.append(
                Problem(
                    f"{PROJECT}:wireguard_private_keys{_path_part(str(name))}",
                    "[secret]",
                    f"a key of its own: host '{first[key]}' has the same WireGuard private key, and WireGuard "
                    f"tells peers apart by key; {fix_command('wireguard_private_keys', str(name))}",
                )
            )
        first.setdefault(key, str(name))
    return problems


def _missing_runner_tokens(runner_names: Iterable[str], secrets: Mapping[str, Any]) -> list[Problem]:
    tokens = secrets.get("runner_tokens") or {}
    return [
        Problem(
            f"{PROJECT}:runner_tokens{_path_part(str(name))}",
            "nothing",
            f"a runner authentication token for runner host '{name}': {fix_command('runner_tokens', name)}",
        )
        for name in sorted(set(runner_names) - set(tokens))
    ]


def _check_secrets(cfg: StackConfig, secrets: Mapping[str, Any]) -> list[Problem]:
    runner_names = {h.name for h in cfg.hosts_with("runner")}
    tokens = secrets.get("runner_tokens") or {}
    problems = _missing_runner_tokens(runner_names, secrets)
    for name in sorted(set(tokens) - runner_names):
        problems.append(
            Problem(
                f"{PROJECT}:runner_tokens{_path_part(str(name))}",
                "[secret]",
                "a token only for a host with role 'runner'",
            )
        )
    for name in sorted(set(secrets.get("wireguard_private_keys") or {}) - {h.name for h in cfg.hosts}):
        problems.append(
            Problem(
                f"{PROJECT}:wireguard_private_keys{_path_part(str(name))}", "[secret]", "a key only for a host in hosts"
            )
        )
    if "ca_private_key" in secrets and cfg.gitlab.tls != "own-ca":
        problems.append(Problem(f"{PROJECT}:ca_private_key", "[secret]", "only with gitlab.tls=own-ca"))
    return problems


# --- placeholders of a new stack ---------------------------------------------------

# What `make new-stack` (tools/stack.py) writes where the example has a host, key or
# domain of its own; the check below refuses each one by its key, with the fix.
PLACEHOLDER = "FILL-IN"


def _placeholders(key: str, value: Any) -> list[Problem]:
    if isinstance(value, str) and value.startswith(PLACEHOLDER):
        given = "<value>"
        if key.endswith(".host_key"):
            given = "\"$(ssh-keyscan -t ed25519 -p <ssh_port> <address> | cut -d' ' -f2-)\""
        fix = f"pulumi config set --path '{key}' {given}"
        return [Problem(key, _show(value), f"your own value in place of new-stack's placeholder: {fix}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(f"{key}.{k}", v)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholders(f"{key}[{i}]", v)]
    return []


def _with_placeholders(problems: list[Problem], sections: Mapping[str, Any]) -> list[Problem]:
    """Each placeholder as one problem; what its value's type check said about it is noise."""
    unfilled = [p for top, value in sections.items() for p in _placeholders(f"{PROJECT}:{top}", value)]
    keys = tuple(p.key for p in unfilled)
    return [p for p in problems if not (keys and p.key.startswith(keys))] + unfilled


def _runner_names_as_given(hosts: Any) -> list[str]:
    """Runner host names from hosts that did not validate (a placeholder in them, say),
    so a new stack's missing runner tokens are reported in the same run."""
    if not isinstance(hosts, list):
        return []
    return [
        h["name"]
        for h in hosts
        if isinstance(h, dict)
        and isinstance(h.get("name"), str)
        and _LABEL.fullmatch(h["name"])  # a bad name is reported by its own key
        and isinstance(h.get("roles"), list)
        and "runner" in h["roles"]
    ]


# --- the loader --------------------------------------------------------------------


def _unknown_key(full_key: str, value: Any, secret: bool) -> Problem:
    prefix = f"{PROJECT}:"
    if not re.fullmatch(r"[\x21-\x7e]+", full_key):
        full_key = json.dumps(full_key)  # a key with a newline or space: quoted, on one line
    known = [*SECTIONS, *SECRET_KEYS]
    hint = difflib.get_close_matches(full_key.removeprefix(prefix), known, n=1)
    if hint and hint[0] in SECRET_KEYS:
        # Probably a secret under a misspelt name: never show it, say how to store it.
        return Problem(
            full_key,
            "[secret]",
            f"unknown key; did you mean '{prefix}{hint[0]}'? Store it encrypted: {fix_command(hint[0])}",
        )
    return Problem(
        full_key,
        "[secret]" if secret else _show(value),
        "unknown key" + (f"; did you mean '{prefix}{hint[0]}'?" if hint else f" (known: {', '.join(known)})"),
    )


def _read_secret(key: str, value: Any, secret: bool, secrets: dict[str, Any]) -> list[Problem]:
    """Validate one secret key into ``secrets``; its problems never show the value."""
    problems = []
    if not secret:
        problems.append(
            Problem(
                f"{PROJECT}:{key}",
                "[secret]",
                f"an encrypted secret, but it is plaintext in the stack file; fix: {fix_command(key)}",
            )
        )
    try:
        secrets[key] = SECRET_KEYS[key].adapter.validate_python(value)
    except ValidationError as exc:
        problems += _problems_from(exc, base=(key,), root=None, secret=lambda _: True)
        if isinstance(value, dict):
            secrets[key] = dict(value)  # its names still count; the error is reported
    return problems


def parse_stack(raw: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> tuple[StackConfig, dict[str, Any]]:
    """Validate one stack's config; return it and the (plain) secret values.

    ``raw`` maps full keys (``forgeway:hosts``) to values, already decoded from JSON.
    ``secret_keys`` are the full keys the stack stores encrypted. Raises ConfigError
    with every problem found.
    """
    secret_set = set(secret_keys)
    prefix = f"{PROJECT}:"
    config: StackConfig
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for full_key, value in raw.items():
        if not full_key.startswith(prefix):
            continue  # provider config (docker:host, ...) is not ours to check
        key = full_key.removeprefix(prefix)
        if key in SECRET_KEYS:
            problems += _read_secret(key, value, full_key in secret_set, secrets)
        elif key in SECTIONS:
            sections[key] = value
        elif key in REMOVED_KEYS:
            shown = "[secret]" if full_key in secret_set else _show(value)
            problems.append(Problem(full_key, shown, REMOVED_KEYS[key]))
        else:
            problems.append(_unknown_key(full_key, value, full_key in secret_set))

    try:
        config = StackConfig.model_validate(sections)
        whole, host_index = frozenset(SECTIONS), list(range(len(config.hosts)))
    except ValidationError as exc:
        problems += _problems_from(exc, base=(), root=StackConfig, secret=lambda top: f"{prefix}{top}" in secret_set)
        config, whole, host_index = _partial(sections)
    for needs, check in CROSS_CHECKS:
        if needs <= whole:
            problems += [_reindex(p, host_index) for p in check(config)]
    problems += _duplicate_wireguard_keys(secrets)
    if "hosts" in whole:
        problems += _check_secrets(config, secrets)
    else:
        problems += _missing_runner_tokens(_runner_names_as_given(sections.get("hosts")), secrets)
    problems = [_masked(p, secret_set) for p in _with_placeholders(problems, sections)]
    if problems:
        raise ConfigError(problems)
    return config, secrets


def _masked(problem: Problem, secret_set: set[str]) -> Problem:
    """A problem on a key stored as a secret never shows the value given."""
    top = re.split(r"[.\[]", problem.key, maxsplit=1)[0]
    if top in secret_set and problem.value not in ("nothing", "[secret]"):
        return Problem(problem.key, "[secret]", problem.expected)
    return problem


def _reindex(problem: Problem, host_index: list[int]) -> Problem:
    """Point a problem found on the partial config back at the host's index as given."""
    match = re.match(rf"{PROJECT}:hosts\[(\d+)\]", problem.key)
    if not match:
        return problem
    key = f"{PROJECT}:hosts[{host_index[int(match.group(1))]}]" + problem.key[match.end() :]
    return Problem(key, problem.value, problem.expected)


def _partial(sections: Mapping[str, Any]) -> tuple[StackConfig, frozenset[str], list[int]]:
    """The config with invalid parts left out, the sections that were whole, and for each
    host kept its index in the config as given.

    Hosts that do not parse are dropped one by one, so network checks still see the rest.
    """
    good: dict[str, Any] = {}
    whole: set[str] = set()
    host_index: list[int] = []
    for key in SECTIONS:
        if key not in sections:
            if not StackConfig.model_fields[key].is_required():
                whole.add(key)  # the default applies
            continue
        try:
            StackConfig.model_validate({**_MINIMAL, key: sections[key]})
            good[key] = sections[key]
            whole.add(key)
        except ValidationError:
            if key == "hosts" and isinstance(sections[key], list):
                host_index = [i for i, h in enumerate(sections[key]) if _valid_host(h)]
                good[key] = [sections[key][i] for i in host_index]
    if "hosts" in whole:
        host_index = list(range(len(sections.get("hosts", []))))
    return StackConfig.model_validate({**_MINIMAL, **good}), frozenset(whole), host_index


def _valid_host(value: Any) -> bool:
    try:
        Host.model_validate(value)
        return True
    except ValidationError:
        return False


# Just enough of a stack for one section to be validated on its own.
_MINIMAL: dict[str, Any] = {
    "hosts": [],
    "gitlab": {"domain": "gitlab.example.org", "images": {}},
}


def load_stack_config() -> tuple[StackConfig, dict[str, Any]]:
    """Read this stack's `forgeway:*` config from the Pulumi runtime and validate it."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = {}
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    for key in merged:
        if key.startswith(f"{PROJECT}:"):
            raw[key] = _decode(runtime_config.get_config(key))
    secret_keys = [k for k in raw if runtime_config.is_config_secret(k)]
    # What config cannot see (the number only arrives): `0022` written in the stack file.
    spelled = stack_file_problems(Path.cwd(), pulumi.get_stack())
    try:
        parsed = parse_stack(raw, secret_keys)
    except ConfigError as exc:
        raise ConfigError([*exc.problems, *spelled]) from None
    if spelled:
        raise ConfigError(spelled)
    return parsed


def _as_yaml_reads(text: str) -> str:
    """What the CLI's YAML makes of a number written with a leading zero or base prefix."""
    digits = text.replace("_", "").lstrip("+-")
    sign = "-" if text.startswith("-") else ""
    try:
        value = int(digits, 0) if digits[1:2].isalpha() else int(digits, 8)
    except ValueError:
        return "not a whole number"
    return f"{sign}{value}"


def stack_file_problems(project_dir: Path, stack: str) -> list[Problem]:
    """Numbers in the stack's file that YAML reads in another base (`0022` is 18)."""
    path = stack_file(project_dir, stack)
    if path is None:
        return []
    return [
        Problem(
            _key_path(found.top.removeprefix(f"{PROJECT}:"), found.loc),
            found.text,
            f"a number written in decimal without a leading zero: YAML reads {found.text} as "
            f"{_as_yaml_reads(found.text)} (in {path.name})",
        )
        for found in surprising_numbers(path.read_text(), f"{PROJECT}:")
    ]


def _decode(value: Any) -> Any:
    # Pulumi hands every value over as a string; objects, lists, numbers and booleans
    # arrive as JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
