"""Registry: GitLab's container registry as docker clients reach it.

The registry itself is served by GitLab (components/gitlab.py), over TLS with the server
certificate of every name and address clients use. This component says what a docker
client needs to trust it: its endpoints (``host:port``, one ``certs.d`` entry each), the
stack CA with ``gitlab.tls = own-ca``, and what NO_PROXY must hold. Each docker host
installs that (components/docker_host.py, ``<host>-docker-client``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.config import StackConfig
from components.docker_host import RegistryTrust
from components.pki import CertificateAuthority

__all__ = ["Registry", "RegistryArgs", "registry_endpoints"]


def registry_endpoints(cfg: StackConfig) -> tuple[str, ...]:
    """Every host:port a docker client may use for the registry (certs.d is per endpoint)."""
    port = cfg.forwarding.port("registry")
    if port is None:
        return ()
    names = {cfg.registry_domain, cfg.gitlab.domain}
    return tuple(sorted(f"{name}:{port.public}" for name in names))


@dataclass(frozen=True)
class RegistryArgs:
    """The registry as clients see it (derived from the config: :meth:`of`)."""

    endpoints: tuple[str, ...]  # registry_endpoints(): every host:port clients use
    ca: CertificateAuthority | None  # own-ca; None with Let's Encrypt (trusted already)
    gitlab_host: str  # the GitLab host's address (NO_PROXY)
    tunnel_subnet: str  # the tunnel's subnet (NO_PROXY)

    @classmethod
    def of(cls, cfg: StackConfig, ca: CertificateAuthority | None) -> RegistryArgs:
        return cls(registry_endpoints(cfg), ca, cfg.gitlab_host.address, str(cfg.tunnel.subnet))

    def trust(self) -> RegistryTrust:
        """What a docker client installs to trust the registry."""
        ca_pem = self.ca.cert_pem if self.ca is not None else None
        return RegistryTrust(self.endpoints, ca_pem, self.gitlab_host, self.tunnel_subnet)


class Registry(pulumi.ComponentResource):
    """What every managed docker daemon needs to trust the registry (``trust``)."""

    trust: RegistryTrust

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:registry:Registry", name, None, opts)
        self.trust = args.trust()
        self.register_outputs({"endpoints": list(args.endpoints)})
