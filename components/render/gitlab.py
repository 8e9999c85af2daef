"""GitLab omnibus settings (the ``gitlab.rb`` text passed as GITLAB_OMNIBUS_CONFIG).

Settings in, Ruby text out: no Pulumi, no I/O. Every value that came from config is
written through ``ruby_str`` (one single-quoted literal, ``\\`` and ``'`` escaped), so no
config value can end its string and run Ruby; integers and booleans come from Python
``int``/``bool`` only.

Where the container listens: the container always uses fixed ports (``CONTAINER_PORTS``)
and the container component publishes each service's *home* port onto them. nginx
terminates TLS inside the container on 443 for both ``letsencrypt`` and ``own-ca``: the VPS
only NATs TCP, so nothing in front of GitLab speaks TLS. Because ``external_url`` carries the
*public* port (e.g. ``https://git.example.org:8443``), and omnibus would otherwise make nginx
listen on that port, ``nginx['listen_port']``/``listen_https`` are always set explicitly.

Client addresses (``forwarding.mode``; README, "Client addresses"). The VPS forwards TCP and
adds no header, and the container's nginx is the first HTTP hop, so the peer nginx sees is the
address GitLab should use. The same settings are written in both modes:

* ``nginx['proxy_set_headers']`` replaces X-Forwarded-For with ``$remote_addr``: a client
  cannot pick its own address by sending that header.
* ``gitlab_rails['trusted_proxies']`` is loopback only. Left empty, GitLab trusts every
  private range as a proxy (gitlabhq config/initializers/trusted_proxies.rb), the tunnel
  subnet included.
* ``nginx['real_ip_*']`` is never set: no hop in front of nginx tells the client's address.
* The failed Git/registry authentication ban (``gitlab_rails['rack_attack_git_basic_auth']``)
  is on, and its ``ip_whitelist``, like ``monitoring_whitelist``, is loopback only.

In ``preserve-source`` each client is banned on its own address. In ``snat`` every internet
client arrives from the VPS tunnel address, which is deliberately *not* allow-listed: one
client's 30 failures ban that address, and with it every internet client of Git over HTTPS
and the registry, for an hour. Allow-listing it instead would switch the ban off for the
whole internet (unlimited password guessing); an hour's lock-out is the lesser harm.

Pages the option names were checked against (docs.gitlab.com):
``omnibus/settings/nginx.html`` (listen_port, listen_https, ssl_certificate, proxy_set_headers,
registry_nginx), ``omnibus/settings/ssl/`` (letsencrypt), ``administration/packages/container_registry.html``
(registry_external_url), ``security/rate_limits.html`` and ``security/rack_attack.md``
(rack_attack_git_basic_auth, ip_whitelist), ``omnibus/settings/memory_constrained_envs.html``
(puma, sidekiq, prometheus_monitoring, MALLOC_CONF), ``administration/operations/puma.html``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from components.config import ForwardingMode, StackConfig, TlsMode

__all__ = [
    "CONTAINER_PORTS",
    "GitLabRb",
    "GitLabSettings",
    "SmallDeviceProfile",
    "render_gitlab_rb",
    "ruby_str",
    "settings_from_config",
    "shared_buffers_mb",
    "small_device_enabled",
    "small_device_profile",
]

# Ports inside the container; docker publishes each service's home port onto these.
CONTAINER_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "ssh": 22, "registry": 5050}

SSL_DIR = "/etc/gitlab/ssl"
# jemalloc returns freed pages to the kernel after 1 s instead of keeping them
# (memory_constrained_envs.html, "Configure how GitLab handles memory").
MALLOC_CONF = "dirty_decay_ms:1000,muzzy_decay_ms:1000"
# small_device=auto turns the profile on for arm64 hosts with at most this much memory.
SMALL_DEVICE_MAX_MB = 8192
# PostgreSQL shared_buffers in the small profile: 1/16 of the memory budget, at least
# 256 MB (the omnibus Docker image's own floor since omnibus-gitlab MR 7860: less made
# background migrations fail with "no unpinned buffers"), at most 1024 MB.
SHARED_BUFFERS_DIVISOR = 16
SHARED_BUFFERS_FLOOR_MB = 256
SHARED_BUFFERS_CAP_MB = 1024
# Failed Git/registry authentication ban: the documented defaults (rate_limits.html).
GIT_AUTH_BAN = {"maxretry": 30, "findtime": 180, "bantime": 3600}

Figure = int | str | bool


@dataclass(frozen=True)
class GitLabSettings:
    """Everything ``gitlab.rb`` depends on, already validated by components/config/."""

    domain: str  # gitlab.domain
    https_public_port: int  # forwarding.ports[service=https].public
    ssh_public_port: int  # forwarding.ports[service=ssh].public
    forwarding_mode: ForwardingMode  # forwarding.mode
    vps_tunnel_address: str  # the VPS's wg0 address, e.g. 10.8.0.1 (the SNAT source)
    tls: TlsMode = "own-ca"  # gitlab.tls
    external_url: str | None = None  # gitlab.external_url; default https://<domain>[:port]
    http_public_port: int | None = None  # forwarding.ports[service=http].public, None = not forwarded
    registry_enabled: bool = True  # registry.enabled
    registry_domain: str | None = None  # registry.domain; default: domain
    registry_public_port: int | None = None  # forwarding.ports[service=registry].public
    letsencrypt_emails: Sequence[str] = ()  # optional ACME contact addresses
    small_device: bool = False  # resolved with small_device_enabled()
    memory_budget_mb: int | None = None  # gitlab.memory_limit_mb, else the host's memory_mb


@dataclass(frozen=True)
class SmallDeviceProfile:
    """What the small-device profile sets, for the README and the stack outputs."""

    puma_worker_processes: int
    sidekiq_concurrency: int
    shared_buffers_mb: int
    monitoring: bool
    malloc_conf: str

    def figures(self) -> dict[str, Figure]:
        return {
            "puma['worker_processes']": self.puma_worker_processes,
            "sidekiq['concurrency']": self.sidekiq_concurrency,
            "postgresql['shared_buffers']": f"{self.shared_buffers_mb}MB",
            "prometheus_monitoring['enable']": self.monitoring,
            "MALLOC_CONF": self.malloc_conf,
        }


@dataclass(frozen=True)
class GitLabRb:
    text: str  # the gitlab.rb fragment
    figures: Mapping[str, Figure] = field(default_factory=dict)  # empty when the profile is off


def ruby_str(value: str) -> str:
    """``value`` as one single-quoted Ruby literal.

    In single quotes Ruby knows only two escapes, ``\\\\`` and ``\\'``; escaping both means
    the literal ends only at the closing quote we write. Control characters are refused:
    the text travels in an environment variable, and Ruby reads NUL, ^D and ^Z as the end
    of the script.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"control character in a gitlab.rb value: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ruby(value: str | int | bool | Sequence[str] | Mapping[str, str | int | bool | Sequence[str]]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return ruby_str(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{ruby_str(k)} => {_ruby(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(ruby_str(v) for v in value) + "]"


def small_device_enabled(mode: str, arch: str, memory_mb: int | None) -> bool:
    """gitlab.small_device: on, off, or auto (arm64 with <= 8 GB, or memory unknown)."""
    if mode in ("on", "off"):
        return mode == "on"
    return arch == "arm64" and (memory_mb is None or memory_mb <= SMALL_DEVICE_MAX_MB)


def shared_buffers_mb(memory_budget_mb: int | None) -> int:
    """1/16 of the budget, clamped to [256, 1024] MB; the floor when the budget is unknown."""
    if memory_budget_mb is None:
        return SHARED_BUFFERS_FLOOR_MB
    share = memory_budget_mb // SHARED_BUFFERS_DIVISOR
    return max(SHARED_BUFFERS_FLOOR_MB, min(SHARED_BUFFERS_CAP_MB, share))


def small_device_profile(memory_budget_mb: int | None) -> SmallDeviceProfile:
    # Sidekiq: the memory-constrained page suggests 10; at 4 GB or less (a Jetson Nano)
    # 5 threads keep the one Sidekiq process smaller still.
    small = memory_budget_mb is None or memory_budget_mb <= 4096
    return SmallDeviceProfile(
        puma_worker_processes=0,  # single mode: no forked workers (hundreds of MB saved)
        sidekiq_concurrency=5 if small else 10,
        shared_buffers_mb=shared_buffers_mb(memory_budget_mb),
        monitoring=False,
        malloc_conf=MALLOC_CONF,
    )


def _url(host: str, port: int, *, always_port: bool = False) -> str:
    return f"https://{host}" if port == 443 and not always_port else f"https://{host}:{port}"


def _external_url(s: GitLabSettings) -> str:
    if s.external_url is None:
        return _url(s.domain, s.https_public_port)
    parts = urlsplit(s.external_url)
    port = parts.port or 443
    if parts.scheme != "https" or port != s.https_public_port:
        raise ValueError(
            f"gitlab.external_url={s.external_url} must be https:// on the forwarded https port "
            f"{s.https_public_port} (forwarding.ports, service https)"
        )
    return s.external_url


def _tls_lines(s: GitLabSettings, registry_domain: str | None) -> list[str]:
    if s.tls == "letsencrypt":
        if s.http_public_port != 80:
            raise ValueError(
                "gitlab.tls=letsencrypt needs forwarding.ports to forward service http on public port 80 "
                "(the ACME HTTP-01 challenge); use gitlab.tls=own-ca otherwise"
            )
        lines = ["letsencrypt['enable'] = true", "letsencrypt['auto_renew'] = true"]
        if s.letsencrypt_emails:
            lines.append(f"letsencrypt['contact_emails'] = {_ruby(list(s.letsencrypt_emails))}")
        return lines
    # own-ca: the certificates are staged under /etc/gitlab/ssl/<name>.{crt,key}, the names
    # omnibus looks for by default; letsencrypt off so omnibus never tries ACME instead.
    lines = [
        "letsencrypt['enable'] = false",
        f"nginx['ssl_certificate'] = {ruby_str(f'{SSL_DIR}/{s.domain}.crt')}",
        f"nginx['ssl_certificate_key'] = {ruby_str(f'{SSL_DIR}/{s.domain}.key')}",
    ]
    if registry_domain is not None:
        lines += [
            f"registry_nginx['ssl_certificate'] = {ruby_str(f'{SSL_DIR}/{registry_domain}.crt')}",
            f"registry_nginx['ssl_certificate_key'] = {ruby_str(f'{SSL_DIR}/{registry_domain}.key')}",
        ]
    return lines


# Only the container's own nginx and workhorse are proxies (see the module docstring).
LOOPBACK = ("127.0.0.1", "::1")
MONITORING_ALLOWED = ("127.0.0.0/8", "::1/128")  # omnibus's default, written down


def _client_address_lines(s: GitLabSettings) -> list[str]:
    # Validated in both modes: the snat comment below names it.
    vps = str(ipaddress.ip_address(s.vps_tunnel_address))
    lines = [f"nginx['proxy_set_headers'] = {_ruby({'X-Forwarded-For': '$remote_addr'})}"]
    if s.forwarding_mode == "snat":
        lines.append(
            f"# snat: every internet client arrives from {vps}; it is not allow-listed, so one "
            'client\'s failed logins ban Git HTTP and the registry for all of them (README, "Client addresses")'
        )
    lines.append(f"gitlab_rails['trusted_proxies'] = {_ruby(list(LOOPBACK))}")
    lines.append(f"gitlab_rails['monitoring_whitelist'] = {_ruby(list(MONITORING_ALLOWED))}")
    ban: dict[str, str | int | bool | Sequence[str]] = {"enabled": True, "ip_whitelist": ["127.0.0.1"], **GIT_AUTH_BAN}
    lines.append(f"gitlab_rails['rack_attack_git_basic_auth'] = {_ruby(ban)}")
    return lines


def _profile_lines(p: SmallDeviceProfile) -> list[str]:
    off = [
        "prometheus",
        "alertmanager",
        "node_exporter",
        "redis_exporter",
        "postgres_exporter",
        "gitlab_exporter",
    ]
    return [
        f"puma['worker_processes'] = {p.puma_worker_processes}",
        f"sidekiq['concurrency'] = {p.sidekiq_concurrency}",
        f"postgresql['shared_buffers'] = {ruby_str(f'{p.shared_buffers_mb}MB')}",
        f"prometheus_monitoring['enable'] = {_ruby(p.monitoring)}",
        *(f"{name}['enable'] = false" for name in off),
        f"gitlab_rails['env'] = {_ruby({'MALLOC_CONF': p.malloc_conf})}",
        f"gitaly['env'] = {_ruby({'MALLOC_CONF': p.malloc_conf})}",
    ]


def render_gitlab_rb(s: GitLabSettings) -> GitLabRb:
    """The gitlab.rb fragment for ``s``, and the small-device figures it set."""
    registry_domain = (s.registry_domain or s.domain) if s.registry_enabled else None
    lines = [
        "# Rendered by forgeway (components/render/gitlab.py); edit the stack config instead.",
        f"external_url {ruby_str(_external_url(s))}",
        f"nginx['listen_port'] = {CONTAINER_PORTS['https']}",
        "nginx['listen_https'] = true",
        "nginx['redirect_http_to_https'] = true",
        f"gitlab_rails['gitlab_shell_ssh_port'] = {int(s.ssh_public_port)}",
    ]
    if registry_domain is not None:
        if s.registry_public_port is None:
            raise ValueError("registry.enabled=true needs forwarding.ports to forward service registry")
        lines += [
            f"registry_external_url {ruby_str(_url(registry_domain, s.registry_public_port, always_port=True))}",
            f"registry_nginx['listen_port'] = {CONTAINER_PORTS['registry']}",
            "registry_nginx['listen_https'] = true",
        ]
    else:
        lines += ["registry['enable'] = false", "gitlab_rails['registry_enabled'] = false"]
    lines += _tls_lines(s, registry_domain)
    lines += _client_address_lines(s)
    figures: dict[str, Figure] = {}
    if s.small_device:
        profile = small_device_profile(s.memory_budget_mb)
        lines.append("# small-device profile (gitlab.small_device)")
        lines += _profile_lines(profile)
        figures = profile.figures()
    return GitLabRb(text="\n".join(lines) + "\n", figures=figures)


def settings_from_config(
    cfg: StackConfig, vps_tunnel_address: str, letsencrypt_emails: Sequence[str] = ()
) -> GitLabSettings:
    """The renderer's settings from a validated stack config.

    The memory budget is the smaller of gitlab.memory_limit_mb and the host's memory_mb
    (whichever are known): the profile must fit the container, not just the host.
    """
    host = cfg.gitlab_host
    fwd = cfg.forwarding

    def public(service: str) -> int | None:
        port = fwd.port(service)
        return port.public if port is not None else None

    https, ssh = public("https"), public("ssh")
    if https is None or ssh is None:
        raise ValueError("forwarding.ports must forward services https and ssh to GitLab")
    known = [m for m in (cfg.gitlab.memory_limit_mb, host.memory_mb) if m is not None]
    return GitLabSettings(
        domain=cfg.gitlab.domain,
        https_public_port=https,
        ssh_public_port=ssh,
        forwarding_mode=fwd.mode,
        vps_tunnel_address=vps_tunnel_address,
        tls=cfg.gitlab.tls,
        external_url=cfg.gitlab.external_url,
        http_public_port=public("http"),
        registry_enabled=cfg.registry.enabled,
        registry_domain=cfg.registry.domain,
        registry_public_port=public("registry"),
        letsencrypt_emails=tuple(letsencrypt_emails),
        small_device=small_device_enabled(cfg.gitlab.small_device, host.arch, host.memory_mb),
        memory_budget_mb=min(known) if known else None,
    )
