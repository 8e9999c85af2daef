"""Registry: GitLab's container registry over TLS, trusted by every docker daemon we manage.

With ``gitlab.tls = own-ca`` it puts our CA, on each docker host, in ``certs.d`` for
every registry endpoint and in the system trust store. On any docker host with a proxy
it adds the daemon's proxy drop-in (NO_PROXY always covers the registry, GitLab and the
tunnel), whatever the TLS mode. The server certificate (``__main__.py``: every name and
address clients use) is served by GitLab's own nginx (components/gitlab.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.config import Host as HostConfig
from components.config import StackConfig
from components.hosts import DOCKER_ROLES, Host
from components.pki import CertificateAuthority
from components.render.docker_client import DockerClientSettings, render_docker_client
from components.scripts import script, script_command, staged_command, unstaged_command

__all__ = ["Registry", "RegistryArgs", "registry_endpoints"]

STAGE = "docker-client"


def registry_endpoints(cfg: StackConfig) -> tuple[str, ...]:
    """Every host:port a docker client may use for the registry (certs.d is per endpoint)."""
    port = cfg.forwarding.port("registry")
    if port is None:
        return ()
    names = {cfg.registry_domain, cfg.gitlab.domain}
    return tuple(sorted(f"{name}:{port.public}" for name in names))


def _client_files(cfg: StackConfig, host: HostConfig, endpoints: tuple[str, ...], ca_pem: str | None) -> dict[str, str]:
    """The files docker-client-up.sh installs on one host (and their manifest)."""
    proxy = host.proxy
    settings = DockerClientSettings(
        registries=endpoints,
        ca_pem=ca_pem,
        gitlab_host=cfg.gitlab_host.address,
        tunnel_subnet=str(cfg.tunnel.subnet),
        http_proxy=proxy.http_proxy if proxy else None,
        https_proxy=proxy.https_proxy if proxy else None,
        no_proxy=tuple(proxy.no_proxy) if proxy else (),
    )
    return render_docker_client(settings).staged()


@dataclass(frozen=True)
class RegistryArgs:
    config: StackConfig
    hosts: Mapping[str, Host]
    ca: CertificateAuthority | None  # None with Let's Encrypt: its certificates are trusted already


class Registry(pulumi.ComponentResource):
    """Every managed docker daemon's trust of the registry (and its proxy settings)."""

    trust: dict[str, remote.Command]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:registry:Registry", name, None, opts)
        cfg = args.config
        self.trust = {}
        endpoints = registry_endpoints(cfg)
        for host_cfg in cfg.hosts:
            if not DOCKER_ROLES & set(host_cfg.roles) or not endpoints:
                continue
            if args.ca is None and host_cfg.proxy is None:
                continue  # public certificates and no proxy: nothing to install
            render = functools.partial(_client_files, cfg, host_cfg, endpoints)
            ca_pem: pulumi.Output[str | None] = args.ca.cert_pem if args.ca else pulumi.Output.from_input(None)
            files = ca_pem.apply(render)
            host = args.hosts[host_cfg.name]
            self.trust[host_cfg.name] = host.command(
                f"{host_cfg.name}-docker-client",
                parent=self,
                create=files.apply(
                    lambda staged: staged_command(
                        STAGE,
                        {**staged, "docker-client-up.sh": script("docker-client-up.sh")},
                        "docker-client-up.sh",
                        [],
                    )
                ),
                delete=unstaged_command(STAGE, script_command("docker-client-down.sh")),
            )
        self.register_outputs({"endpoints": list(endpoints)})
