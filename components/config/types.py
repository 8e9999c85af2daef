"""The field types of the stack config: each value's type and the validator that
says, in one line, what is expected.

A section model (sections.py) declares a field as ``name: Type = Field(default,
description=...)``; the type here carries the check. Renderers and components import
these types (``Arch``, ``Role``, ``ForwardingMode``, ...) rather than spelling them again.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from components.oncalendar import calendar_problem

PROJECT = "forgeway"  # the config namespace: every key is forgeway:<key>

# --- choices -----------------------------------------------------------------------

Arch = Literal["arm64", "amd64"]
Role = Literal["vps", "gitlab", "runner"]  # gitlab: the forge host, whichever forge (docs/gitea.md)
ForgeKind = Literal["gitlab", "gitea"]  # forge
Service = Literal["http", "https", "ssh", "registry", "ci"]  # ci: Woodpecker (forge gitea)
ForwardingMode = Literal["snat", "preserve-source"]
TunnelImplementation = Literal["auto", "kernel", "wireguard-go"]
TlsMode = Literal["letsencrypt", "own-ca"]
SmallDevice = Literal["auto", "on", "off"]
PullPolicy = Literal["always", "if-not-present", "never"]
RunnerScope = Literal["instance", "group", "project"]  # runners[].scope: GitLab's runner_type without _type
VolumeRole = Literal["config", "logs", "data"]
Become = Literal["sudo", "none"]
EndpointFamily = Literal["auto", "ipv4", "ipv6"]  # hosts[].tunnel_endpoint_family

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


def _matching(pattern: str | re.Pattern[str], expected: str) -> AfterValidator:
    """A check that the whole text matches ``pattern``, else says what is ``expected``."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(expected)
        return value

    return AfterValidator(check)


LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_KEY = re.compile(
    r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa)"
    r" [A-Za-z0-9+/]{32,}={0,3}( [^\s]*)?$"
)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A pinned image: either a digest, or a tag that names a version (has a digit) and is
# not a floating alias.
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Kept in step with policies/rules/images.py (image_pin_problem): config and pack agree.
_FLOATING_TAGS = {
    "latest", "stable", "edge", "nightly", "rc", "main", "master", "lts", "beta", "alpha", "dev",
    "develop", "current", "mainline", "testing", "unstable", "canary", "next",
}  # fmt: skip
_ARM32 = {"armv7", "armv7l", "armhf", "arm", "armel", "armv6", "arm32", "armv6l"}


def _is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(value) <= 253 and all(LABEL.fullmatch(label.lower()) for label in labels)


# An interface name: the kernel's dev_valid_name (1-15 bytes, not '.' or '..', no '/', ':' or
# whitespace) narrowed to the bytes nft, ip, wg-quick and a shell take unquoted; VLANs (eth0.100),
# enp3s0, br-lan and wg_home pass. Kept in step with components/render/nftables.py (_IFNAME).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_IFNAME_RULE = (
    "1-15 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-' "
    "(the kernel's limit, e.g. eth0, enp3s0 or the VLAN eth0.100)"
)


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


Name = Annotated[
    str, _matching(LABEL, "expected a lowercase name of letters, digits and '-' (a DNS label, at most 63 characters)")
]
Address = Annotated[str, AfterValidator(_address)]
InterfaceName = Annotated[str, _matching(_IFNAME, f"an interface name: {_IFNAME_RULE}")]
Hostname = Annotated[str, AfterValidator(_hostname)]
HostKey = Annotated[str, AfterValidator(_host_key)]
ArchField = Annotated[Arch, BeforeValidator(_arch)]
Image = Annotated[str, AfterValidator(_image)]


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s']+@[^@\s']+", value) or not _is_hostname(value.rsplit("@", 1)[1]):
        raise ValueError("an e-mail address such as admin@example.org")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or any(part in ("", ".", "..") for part in value.split("/")[1:]) or "\x00" in value:
        raise ValueError("an absolute, normalized directory path such as /srv/gitlab/data")
    return value


# The docker provider sends a container's volumes as "host:container[:mode]" binds
# (kreuzwerker/terraform-provider-docker, volumeSetToDockerVolumes) and the local volume
# driver's mount options are comma-separated: a ':' or ',' would split the path.
_BINDABLE_PATH = _matching(
    r"[A-Za-z0-9_./@+=-]{1,1024}",
    "a path of letters, digits and _ . / @ + = - only (docker binds split on ':' and ',')",
)


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
# A NO_PROXY entry as Go's net/http reads it: host, .domain, *.domain, host:port, IP, CIDR, [v6].
NoProxyEntry = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9*.\[\]:/_-]{1,253}",
        "a NO_PROXY entry: a host, .domain, *.domain, host:port, an address or a CIDR, "
        "of letters, digits and . * : / [ ] _ - only",
    ),
]


def _ipv4_address_text(value: Any) -> Any:
    # pydantic would take 5 or true as the address 0.0.0.5 or 0.0.0.1.
    if not isinstance(value, str | ipaddress.IPv4Address):
        raise ValueError("an IPv4 address written as text, e.g. 10.8.0.10")
    return value


IPv4AddressText = Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4_address_text)]


def _ipv6_address_text(value: Any) -> Any:
    # As for IPv4: a number is not an address; a zone ID has no place on a tunnel or public address.
    if not isinstance(value, str | ipaddress.IPv6Address) or "%" in str(value):
        raise ValueError("an IPv6 address written as text without a zone, e.g. 2001:db8::10")
    return value


def _public_address6(value: Any) -> Any:
    if value == "auto":
        return value
    try:
        return str(ipaddress.IPv6Address(_ipv6_address_text(value)))
    except ValueError:
        raise ValueError("auto, or the VPS's public IPv6 address (no zone), e.g. 2001:db8::10") from None


def _tunnel_ipv6_subnet(value: Any) -> ipaddress.IPv6Network:
    network = _network(value)
    # /64 to /120: room for a host part that mirrors the IPv4 one (10.8.0.2 -> ::2).
    if not isinstance(network, ipaddress.IPv6Network) or not 64 <= network.prefixlen <= 120:
        raise ValueError("an IPv6 prefix of /64 to /120, a ULA such as fd77:6179:7761::/64")
    return network


IPv6AddressText = Annotated[ipaddress.IPv6Address, BeforeValidator(_ipv6_address_text)]
PublicAddress6 = Annotated[str, BeforeValidator(_public_address6)]
TunnelIPv6Subnet = Annotated[ipaddress.IPv6Network, BeforeValidator(_tunnel_ipv6_subnet)]
Email = Annotated[str, AfterValidator(_email)]
# gitlab.rb and the runner's config.toml quote the URL: printable ASCII only, no quote or backslash.
ExternalUrl = Annotated[
    str,
    _matching(
        r"[\x21\x23-\x26\x28-\x5b\x5d-\x7e]{1,2048}",
        "a URL of printable ASCII without spaces, quotes or backslashes",
    ),
]
IPv6Network = Annotated[ipaddress.IPv6Network, BeforeValidator(_ipv6_network)]
IPv4Network = Annotated[ipaddress.IPv4Network, BeforeValidator(_ipv4_network)]
HttpsUrl = Annotated[
    str,
    _matching(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s']*)?", "an https:// URL such as https://mirror.example.org"),
]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path), _BINDABLE_PATH]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
SshUser = Annotated[str, Field(pattern=_USER.pattern)]


class Section(BaseModel):
    """The base of every section model: an unknown key is an error (a typo is caught), and a
    parsed config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
