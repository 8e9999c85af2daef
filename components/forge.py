"""The forge seam: what the rest of the stack needs from "the forge" (GitLab today).

The tunnel, the forwarding, the segmentation, TLS, the registry trust and the runners
need only a few facts about the forge: which host it runs on, which public services the
VPS forwards to it, the names clients reach it by (for the certificate and DNS), the
URL runners use and its registry endpoints. :class:`Forge` is those facts, as one
frozen value. A forge implementation is a function that builds it from the config
(GitLab: :func:`gitlab_forge`) and a component that runs the forge on ``Forge.host``
(GitLab: ``components.gitlab.GitLabServer``, whose ``forge`` is this value);
:func:`stack_forge` picks the stack's.

Adding a forge (Gitea, issue 22): its builder here, chosen in :func:`stack_forge`, and
its component; the tunnel, forwarding and segmentation code does not change
(tests/program/test_forge.py drives them with a fake forge and no GitLab module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.config import ForwardedPort, StackConfig
from components.registry import registry_endpoints

__all__ = ["Forge", "TlsMode", "gitea_forge", "gitea_url", "gitlab_forge", "stack_forge", "woodpecker_url"]

TlsMode = Literal["letsencrypt", "own-ca"]  # gitlab.tls


@dataclass(frozen=True)
class Forge:
    """One forge, as the stack around it sees it."""

    kind: str  # "gitlab" or "gitea"; names it in messages
    host: str  # the name of the host it runs on: the tunnel peer the VPS forwards to
    domain: str  # its own DNS name: the certificate's common name, SSH clone host
    services: tuple[ForwardedPort, ...]  # the public ports the VPS forwards to `host`
    tls: TlsMode  # who issues its certificate
    # Every DNS name (or address) clients use for the forge and its registry, `domain`
    # first; the certificate also names the VPS's public IP and the host's tunnel address.
    certificate_names: tuple[str, ...]
    lan_address: str  # the host's LAN address (an IP or a LAN DNS name), in the certificate
    # The names Let's Encrypt must reach through the VPS (letsencrypt only).
    public_names: tuple[str, ...]
    url: str  # what runners and clients use, e.g. https://gitlab.example.org
    registry_endpoints: tuple[str, ...]  # host:port of its container registry (empty: none)
    # Ports on `host` that runner hosts reach over the tunnel only, never forwarded by the VPS
    # (Woodpecker's gRPC for its agents); segmentation lets runners in to them.
    tunnel_ports: tuple[int, ...] = ()

    def service(self, name: str) -> ForwardedPort | None:
        """The forwarded port of one service (https, ssh, ...), if the forge publishes it."""
        return next((p for p in self.services if p.service == name), None)

    @property
    def dialed_names(self) -> tuple[str, ...]:
        """The host names clients dial: the forge's domain and each registry endpoint's host."""
        return (self.domain, *(endpoint.rsplit(":", 1)[0] for endpoint in self.registry_endpoints))

    def __post_init__(self) -> None:
        if not self.certificate_names or self.certificate_names[0] != self.domain:
            raise ValueError(f"forge {self.kind}: certificate_names must start with its domain {self.domain!r}")


def gitlab_forge(cfg: StackConfig) -> Forge:
    """GitLab as the forge: the ``gitlab`` section, the host with role gitlab, the registry."""
    host = cfg.gitlab_host
    public = [cfg.gitlab.domain]
    if cfg.registry.enabled and cfg.registry_domain not in public:
        public.append(cfg.registry_domain)
    return Forge(
        kind="gitlab",
        host=host.name,
        domain=cfg.gitlab.domain,
        services=tuple(cfg.forwarding.ports),
        tls=cfg.gitlab.tls,
        certificate_names=(cfg.gitlab.domain, cfg.registry_domain),
        lan_address=host.address,
        public_names=tuple(public),
        url=cfg.gitlab_url,
        registry_endpoints=registry_endpoints(cfg),
    )


def gitea_url(cfg: StackConfig) -> str:
    """https on Gitea's domain and the public https port (omitted when it is 443); Gitea's
    ROOT_URL is this with a slash."""
    https = cfg.forwarding.public_port("https")
    port = "" if https is None or https == 443 else f":{https}"
    return f"https://{cfg.gitea_section.domain}{port}"


def woodpecker_url(cfg: StackConfig) -> str | None:
    """Woodpecker's public URL (WOODPECKER_HOST): https on ``woodpecker.domain`` (default
    Gitea's) and the ``ci`` forwarded port; None without Woodpecker."""
    wp = cfg.woodpecker
    ci = cfg.forwarding.public_port("ci")
    if wp is None or ci is None:
        return None
    port = "" if ci == 443 else f":{ci}"
    return f"https://{wp.domain or cfg.gitea_section.domain}{port}"


def gitea_forge(cfg: StackConfig) -> Forge:
    """Gitea as the forge: the ``gitea`` section, on the host with role gitlab (the forge
    host, docs/gitea.md). Its registry is served on its domain and https port, so the VPS
    forwards no registry port of its own."""
    gitea = cfg.gitea_section
    wp = cfg.woodpecker
    names: tuple[str, ...] = (gitea.domain,)
    if wp is not None and wp.domain is not None and wp.domain != gitea.domain:
        names += (wp.domain,)  # Woodpecker's own name, on the same certificate
    return Forge(
        kind="gitea",
        host=cfg.gitlab_host.name,
        domain=gitea.domain,
        services=tuple(p for p in cfg.forwarding.ports if p.service != "registry"),
        tls=gitea.tls,
        certificate_names=names,
        lan_address=cfg.gitlab_host.address,
        public_names=names,
        url=gitea_url(cfg),
        registry_endpoints=registry_endpoints(cfg),
        tunnel_ports=(wp.grpc_port,) if wp is not None else (),
    )


def stack_forge(cfg: StackConfig) -> Forge:
    """The stack's forge: ``forge`` in the config (default gitlab)."""
    return gitea_forge(cfg) if cfg.forge == "gitea" else gitlab_forge(cfg)
