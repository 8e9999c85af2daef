"""The registry as docker clients reach it: GitLab's container registry over TLS.

GitLab serves it (components/gitlab.py) with the server certificate of every name and
address clients use. What a docker client needs to trust it, :class:`RegistryTrust`
(its endpoints, one ``certs.d`` entry each; the stack CA with ``gitlab.tls = own-ca``;
what NO_PROXY must hold), each docker host installs (components/docker_host.py,
``<host>-docker-client``). No resource of its own: the former Registry component's
children are DockerHost's now.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config import StackConfig

__all__ = ["RegistryTrust", "registry_endpoints", "registry_trust"]


@dataclass(frozen=True)
class RegistryTrust:
    """What a docker client needs to reach the registry."""

    endpoints: tuple[str, ...]  # every host:port clients use for it
    ca_pem: pulumi.Output[str] | None  # own-ca: the stack CA; None: public certificates
    gitlab_host: str  # NO_PROXY: the GitLab host's address
    tunnel_subnet: str  # NO_PROXY: the tunnel's subnet


def registry_endpoints(cfg: StackConfig) -> tuple[str, ...]:
    """Every host:port a docker client may use for the registry (certs.d is per endpoint).
    Gitea serves its registry (packages) on its own domain and https port."""
    if cfg.forge == "gitea":
        https = cfg.forwarding.port("https")
        return (f"{cfg.gitea_section.domain}:{https.public}",) if https is not None and cfg.registry.enabled else ()
    port = cfg.forwarding.port("registry")
    if port is None:
        return ()
    names = {cfg.registry_domain, cfg.gitlab.domain}
    return tuple(sorted(f"{name}:{port.public}" for name in names))


def registry_trust(cfg: StackConfig, ca_pem: pulumi.Output[str] | None) -> RegistryTrust | None:
    """The registry's trust for docker clients (None: no registry); ``ca_pem``: the stack CA with own-ca."""
    if not cfg.registry.enabled:
        return None
    return RegistryTrust(registry_endpoints(cfg), ca_pem, cfg.gitlab_host.address, str(cfg.tunnel.subnet))
