"""Docker-daemon client files for docker-client-up.sh (pure: settings in, text out; no Pulumi, no I/O).

Every docker daemon forgeway manages must trust the forgeway CA and, where the host
reaches the internet through a proxy, use that proxy for everything but forgeway's
own endpoints. The files, by their place on a real host:

``/etc/docker/certs.d/<host>:<port>/ca.crt`` (0644), one per registry endpoint
    dockerd reads this directory (fixed; ``registry.CertsDir()`` in docker 20.10 is
    ``/etc/docker/certs.d`` unless it runs under RootlessKit) on every pull and push,
    so a new CA needs no restart.
``/etc/docker/forgeway-jobs/`` (0644 files), with the CA
    what runner jobs see: ``certs.d/<host>:<port>/ca.crt`` again (forgeway's CA only)
    and ``buildkitd.toml``, BuildKit's registry trust for ``docker buildx`` builders,
    which do not read certs.d (components/render/buildkitd.py).
``/usr/local/share/ca-certificates/forgeway-ca.crt`` (0644)
    the system trust store's input; ``update-ca-certificates`` builds
    ``/etc/ssl/certs`` from it (curl, git, apt and the daemon's non-registry TLS).
``/etc/systemd/system/docker.service.d/forgeway-proxy.conf``, only with a proxy
    ``[Service]`` and one ``Environment=`` line with ``HTTP_PROXY``, ``HTTPS_PROXY``
    and ``NO_PROXY``. NO_PROXY always holds localhost, 127.0.0.1, every registry
    host, the GitLab host and the tunnel subnet (then the extra entries): forgeway's
    own traffic never goes through the proxy. 0600 when a proxy URL has credentials.

The script gets the files staged under flat names (``stage.sh`` refuses ``/``) and a
``manifest``: one ``KIND MODE NAME PATH`` line per file, PATH relative to ``/``
(``etc/...`` lands in ``$FORGEWAY_ETC``; see docker-client-up.sh). KIND is ``cert``,
``plain`` (nothing), ``trust`` (update-ca-certificates when it changes) or ``dropin`` (daemon-reload and
restart of docker when it changes).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from components.render.buildkitd import JOBS_DIR, render_buildkitd_toml

__all__ = [
    "CERTS_DIR",
    "DROPIN_PATH",
    "MANIFEST",
    "TRUST_PATH",
    "DockerClientFiles",
    "DockerClientSettings",
    "ManagedFile",
    "no_proxy_entries",
    "render_docker_client",
]

Kind = Literal["cert", "plain", "trust", "dropin"]

CERTS_DIR = "etc/docker/certs.d"
TRUST_PATH = "usr/local/share/ca-certificates/forgeway-ca.crt"
DROPIN_PATH = "etc/systemd/system/docker.service.d/forgeway-proxy.conf"
MANIFEST = "manifest"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# NO_PROXY entries Go's net/http understands: host, .domain, *.domain, host:port, IP, CIDR, [v6]
_NO_PROXY_ENTRY = re.compile(r"^[A-Za-z0-9*.\[\]:/_-]+$")
# What may stand inside a double-quoted systemd Environment= word unescaped (% is doubled)
_UNIT_SAFE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # printable ASCII minus space, " and \
_PATH_SAFE = re.compile(r"^[A-Za-z0-9._:/-]+$")


@dataclass(frozen=True)
class DockerClientSettings:
    registries: tuple[str, ...]  # "host:port" of every registry endpoint clients use
    ca_pem: str | None  # the forgeway CA (PEM); None when certificates are public (Let's Encrypt)
    gitlab_host: str  # name or address
    tunnel_subnet: str  # e.g. 10.8.0.0/24
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: tuple[str, ...] = ()  # extra NO_PROXY entries


@dataclass(frozen=True)
class ManagedFile:
    kind: Kind
    mode: str  # octal, e.g. "0644"
    name: str  # staged file name (flat)
    path: str  # target, relative to / (etc/... goes under $FORGEWAY_ETC)


@dataclass(frozen=True)
class DockerClientFiles:
    managed: tuple[ManagedFile, ...]
    texts: Mapping[str, str] = field(repr=False)  # staged name -> text, for every managed file

    @property
    def manifest(self) -> str:
        return "".join(f"{f.kind} {f.mode} {f.name} {f.path}\n" for f in self.managed)

    def staged(self) -> dict[str, str]:
        """The files for ``staged_command``: the managed ones and the manifest."""
        return {**self.texts, MANIFEST: self.manifest}


def _host(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: empty")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{what}: {value!r} is not a host name or an IP address")
    return value.lower()


def _registry(value: str) -> tuple[str, int]:
    what = "registry endpoint"
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(f"{what}: {value!r} has whitespace (want host:port)")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or str(int(port)) != port:
        raise ValueError(f"{what}: {value!r} is not host:port with a port in 1..65535")
    if ":" in host or host.startswith("["):
        raise ValueError(f"{what}: {value!r}: IPv6 registry endpoints are not supported")
    return _host(host, what), int(port)


def _certs_dir(host: str, port: int) -> str:
    """A registry's certs.d directory: dockerd looks it up by the registry's name as images
    spell it, which has no port on 443 (Gitea's registry, on its https port)."""
    return host if port == 443 else f"{host}:{port}"


def _proxy(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not value or not _UNIT_SAFE.fullmatch(value):
        raise ValueError(f"{what}: {value!r} is empty or has whitespace, a quote, a backslash or a non-ASCII character")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "socks5") or not parts.hostname:
        raise ValueError(f"{what}: {value!r} is not an http://, https:// or socks5:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise ValueError(f"{what}: {value!r} has a bad port") from error
    return value


def _no_proxy_extra(value: str) -> str:
    if not isinstance(value, str) or not value or "," in value or not _NO_PROXY_ENTRY.fullmatch(value):
        raise ValueError(f"no_proxy entry {value!r}: want a host, .domain, address, CIDR or host:port")
    return value


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)


def no_proxy_entries(settings: DockerClientSettings) -> list[str]:
    """NO_PROXY, in order: localhost, 127.0.0.1, registries, GitLab, tunnel subnet, extras."""
    try:
        subnet = str(ipaddress.ip_network(settings.tunnel_subnet, strict=True))
    except (ValueError, TypeError) as error:
        raise ValueError(f"tunnel_subnet: {settings.tunnel_subnet!r} is not a network ({error})") from error
    registries = [host for host, _ in map(_registry, settings.registries)]
    return _dedupe(
        [
            "localhost",
            "127.0.0.1",
            *registries,
            _host(settings.gitlab_host, "gitlab_host"),
            subnet,
            *map(_no_proxy_extra, settings.no_proxy),
        ]
    )


def _ca(pem: str) -> str:
    if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
        raise ValueError("ca_pem: not a PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as error:
        raise ValueError(f"ca_pem: not a PEM certificate ({error})") from error
    return "".join(cert.public_bytes(Encoding.PEM).decode() for cert in certs)


def _unit_word(value: str) -> str:
    if not _UNIT_SAFE.fullmatch(value):  # guarded by the validators; never reached with good input
        raise ValueError(f"{value!r} cannot go into a unit file")
    return value.replace("%", "%%")  # systemd specifiers


def _dropin(settings: DockerClientSettings) -> str:
    http = _proxy(settings.http_proxy, "http_proxy")
    https = _proxy(settings.https_proxy, "https_proxy")
    env = []
    for name, value in (("HTTP_PROXY", http), ("HTTPS_PROXY", https)):
        if value is not None:
            env.append(f'"{name}={_unit_word(value)}"')
    env.append(f'"NO_PROXY={_unit_word(",".join(no_proxy_entries(settings)))}"')
    return (
        "# forgeway: docker daemon proxy (docker-client-up.sh); forgeway's endpoints bypass it\n"
        "[Service]\n"
        f"Environment={' '.join(env)}\n"
    )


def render_docker_client(settings: DockerClientSettings) -> DockerClientFiles:
    """The certs.d CAs, the trust-store CA, the proxy drop-in (with a proxy) and their manifest."""
    if not settings.registries:
        raise ValueError("registries: at least one registry endpoint (host:port) is needed")
    has_proxy = settings.http_proxy is not None or settings.https_proxy is not None
    if settings.ca_pem is None and not has_proxy:
        raise ValueError("ca_pem or a proxy: without either there is nothing to install")
    endpoints = sorted({_registry(r) for r in settings.registries})
    no_proxy_entries(settings)  # validate GitLab host, subnet and extras even without a proxy
    managed: list[ManagedFile] = []
    texts: dict[str, str] = {}
    if settings.ca_pem is not None:
        ca = _ca(settings.ca_pem)
        for index, (host, port) in enumerate(endpoints):
            name = f"registry-{index}.crt"
            path = f"{CERTS_DIR}/{_certs_dir(host, port)}/ca.crt"
            managed.append(ManagedFile("cert", "0644", name, path))
            texts[name] = ca
        for index, (host, port) in enumerate(endpoints):
            name = f"job-registry-{index}.crt"
            managed.append(ManagedFile("plain", "0644", name, f"{JOBS_DIR}/certs.d/{_certs_dir(host, port)}/ca.crt"))
            texts[name] = ca
        managed.append(ManagedFile("plain", "0644", "buildkitd.toml", f"{JOBS_DIR}/buildkitd.toml"))
        texts["buildkitd.toml"] = render_buildkitd_toml([f"{host}:{port}" for host, port in endpoints])
        managed.append(ManagedFile("trust", "0644", "forgeway-ca.crt", TRUST_PATH))
        texts["forgeway-ca.crt"] = ca
    if has_proxy:
        text = _dropin(settings)
        secret = any(
            urlsplit(url).username or urlsplit(url).password
            for url in (settings.http_proxy, settings.https_proxy)
            if url
        )
        managed.append(ManagedFile("dropin", "0600" if secret else "0644", "forgeway-proxy.conf", DROPIN_PATH))
        texts["forgeway-proxy.conf"] = text
    elif settings.no_proxy:
        raise ValueError("no_proxy: extra entries without http_proxy or https_proxy would not be used")
    for file in managed:
        if not _PATH_SAFE.fullmatch(file.path) or ".." in file.path.split("/"):
            raise ValueError(f"unsafe target path {file.path!r}")
    return DockerClientFiles(managed=tuple(managed), texts=texts)
