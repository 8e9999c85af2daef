"""DockerHost: how forgeway configures one host's docker daemon (roles gitlab and runner).

Its host services (components/host_service.py), children named ``<host>-...``:

* ``<host>-docker-client``: the registry's trust (our CA in ``certs.d`` for every
  registry endpoint and in the system store, with ``gitlab.tls = own-ca``) and the
  daemon's proxy drop-in (a host with ``hosts[].proxy``; NO_PROXY always covers the
  registry, GitLab and the tunnel): docker-client-up.sh, files from
  components/render/docker_client.py. Only with the registry, and only where there is
  something to install.
* ``<host>-docker-daemon`` (runner hosts): forgeway's keys merged into
  ``/etc/docker/daemon.json`` (components/render/docker_daemon.py; the host keeps every
  key forgeway does not own, and its original file comes back on delete); docker
  restarts only when the file changed.
* ``<host>-ipv6-ra`` (runner hosts with ``runners.ipv6``): before docker forwards IPv6,
  accept_ra=2 on the uplink that takes router advertisements (the device of the IPv6
  default route), now and at boot, so the host keeps its RA default route; delete puts
  accept_ra and the forwarding sysctls back as found (ipv6-ra-up.sh, and with --restore on delete).
* ``<host>-docker-prune`` (runner hosts): a timer (cron without systemd) that prunes
  unused images and build cache when docker's disk is fuller than
  ``runners.prune.threshold_percent``.
* ``<host>-binfmt-image``, ``<host>-binfmt`` (``runner.multiarch``): the pinned
  ``runners.binfmt_image`` pulled, then binfmt-up.sh registers QEMU for the other arch
  now and at every boot; delete unregisters only what it registered.

These were children of RunnerHost and of the Registry component before: each carries an
alias to its old parent, so a stack deployed before keeps them (no delete and create on
the host).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.config import Arch, Prune, StackConfig
from components.config import Host as HostConfig
from components.host_service import HostService, host_service
from components.hosts import DOCKER_ROLES, Host
from components.registry import RegistryTrust
from components.render.docker_client import DockerClientSettings, render_docker_client
from components.render.docker_daemon import DaemonSettings, host_ipv6_prefixes, render_daemon_json
from components.scripts import script

__all__ = [
    "DockerHost",
    "DockerHostArgs",
    "client_files",
    "daemon_json_for",
    "docker_changes",
    "docker_host_args",
]

# The components these children had before (their names in __main__.py then): aliases.
_OLD_RUNNER_FLEET = ("runners", "forgeway:runners:RunnerFleet")
_OLD_REGISTRY = ("registry", "forgeway:registry:Registry")


@dataclass(frozen=True)
class DockerHostArgs:
    """One docker host: its settings and the values derived for it from the stack config."""

    host: Host  # the machine: SSH connection and docker provider
    settings: HostConfig  # its hosts[] entry (name, arch, proxy, runner)
    registry: RegistryTrust | None = None  # None: no registry, no client files
    daemon_json: Mapping[str, object] | None = None  # forgeway's daemon.json keys; None: left alone
    prune: Prune | None = None  # runners.prune (runner hosts); None: no prune timer
    binfmt_image: str | None = None  # runners.binfmt_image, for hosts with runner.multiarch
    ipv6_forwarding: bool = False  # docker forwards IPv6 here (runners.ipv6): keep the RA route
    after: Sequence[pulumi.Resource] = ()  # what daemon.json, prune and binfmt wait for (its tunnel)

    @property
    def needs_client(self) -> bool:
        """Registry trust or a proxy to install (public certificates and no proxy: nothing)."""
        trust = self.registry
        return (
            trust is not None
            and bool(trust.endpoints)
            and (trust.ca_pem is not None or self.settings.proxy is not None)
        )


def daemon_json_for(cfg: StackConfig, host: HostConfig) -> dict[str, object]:
    """forgeway's daemon.json keys for one runner host.

    The bridges get the tunnel MTU: jobs reach GitLab and the registry through the VPS and
    the tunnel (TCP is clamped there; UDP and nested docker are not)."""
    runners = cfg.runners
    index = [h.name for h in cfg.hosts_with("runner")].index(host.name)
    bridge, pool = host_ipv6_prefixes(runners.ipv6_prefix, index) if runners.ipv6 else (None, None)
    return render_daemon_json(
        DaemonSettings(
            address_pools=[(str(p.base), p.size) for p in runners.address_pools],
            mtu=cfg.tunnel.effective_mtu,
            ipv6_bridge=bridge,
            ipv6_pool=pool,
            registry_mirrors=runners.registry_mirrors,
            log_max_size_mb=runners.log_max_size_mb,
            log_max_files=runners.log_max_files,
        )
    )


def client_files(trust: RegistryTrust, host: HostConfig, ca_pem: str | None) -> dict[str, str]:
    """The files docker-client-up.sh installs on one host (and their manifest)."""
    proxy = host.proxy
    settings = DockerClientSettings(
        registries=trust.endpoints,
        ca_pem=ca_pem,
        gitlab_host=trust.gitlab_host,
        tunnel_subnet=trust.tunnel_subnet,
        http_proxy=proxy.http_proxy if proxy else None,
        https_proxy=proxy.https_proxy if proxy else None,
        no_proxy=tuple(proxy.no_proxy) if proxy else (),
    )
    return render_docker_client(settings).staged()


def docker_host_args(
    cfg: StackConfig,
    hosts: Mapping[str, Host],
    registry: RegistryTrust | None,
    after: Mapping[str, Sequence[pulumi.Resource]],
) -> dict[str, DockerHostArgs]:
    """DockerHostArgs for every docker host with something to configure, by host name."""
    args = {}
    for h in cfg.hosts:
        if not DOCKER_ROLES & set(h.roles):
            continue
        runner = "runner" in h.roles
        one = DockerHostArgs(
            host=hosts[h.name],
            settings=h,
            registry=registry,
            daemon_json=daemon_json_for(cfg, h) if runner else None,
            prune=cfg.runners.prune if runner else None,
            binfmt_image=cfg.runners.binfmt_image if runner else None,
            ipv6_forwarding=runner and cfg.runners.ipv6,
            after=after.get(h.name, ()),
        )
        if runner or one.needs_client:
            args[h.name] = one
    return args


def docker_changes(docker_hosts: Mapping[str, DockerHost]) -> dict[str, pulumi.Resource]:
    """What changes each host's docker daemon (and restarts it): its client files, by host name."""
    return {name: d.client for name, d in docker_hosts.items() if d.client is not None}


def _aliased(old_parents: Mapping[str, pulumi.Input[str]]) -> pulumi.ResourceTransformation:
    """A transformation giving the named children an alias to their old parent's URN."""

    def add_alias(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        old = old_parents.get(args.name)
        if old is None:
            return None
        alias = pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=old)])
        return pulumi.ResourceTransformationResult(args.props, pulumi.ResourceOptions.merge(args.opts, alias))

    return add_alias


class DockerHost(pulumi.ComponentResource):
    """One host's docker: registry trust and proxy, daemon.json, prune timer, binfmt."""

    client: remote.Command | None  # the registry trust and proxy drop-in (restarts docker when it changes)
    daemon: remote.Command | None
    ipv6_ra: remote.Command | None  # accept_ra=2 on the uplink, before docker forwards IPv6
    prune: remote.Command | None
    binfmt: remote.Command | None

    def __init__(self, name: str, args: DockerHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        h = args.settings.name
        runner_host = pulumi.create_urn(
            f"{h}-runner-host", "forgeway:runners:RunnerHost", parent=pulumi.create_urn(*_OLD_RUNNER_FLEET)
        )
        registry = pulumi.create_urn(*_OLD_REGISTRY)
        moved = {f"{h}-{n}": runner_host for n in ("docker-daemon", "docker-prune", "binfmt-image", "binfmt")}
        moved[f"{h}-docker-client"] = registry
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(transformations=[_aliased(moved)]))
        super().__init__("forgeway:docker_host:DockerHost", name, None, opts)
        host = args.host

        self.client = self._client(args)
        after = [*args.after, *([self.client] if self.client else [])]
        self.daemon = self.prune = self.binfmt = self.ipv6_ra = None
        if args.ipv6_forwarding:
            # Before the daemon: enabling forwarding drops RA routes except where accept_ra is 2.
            ra = HostService(
                stage="ipv6-ra", up="ipv6-ra-up.sh", down="ipv6-ra-up.sh", down_args=["--restore"], pass_dir=False
            )
            self.ipv6_ra = host_service(host, f"{h}-ipv6-ra", ra, parent=self, depends_on=after)
        if args.daemon_json is not None:
            ours = json.dumps(args.daemon_json, indent=2, sort_keys=True) + "\n"
            daemon = HostService(
                stage="docker-daemon",
                up="docker-daemon-up.sh",
                down="docker-daemon-up.sh",
                down_args=["--restore"],
                files={"forgeway.json": ours, "daemon_merge.py": script("daemon_merge.py")},
            )
            ra_first = [self.ipv6_ra] if self.ipv6_ra is not None else []
            self.daemon = host_service(host, f"{h}-docker-daemon", daemon, parent=self, depends_on=[*after, *ra_first])
        if args.prune is not None:
            p = args.prune
            prune = HostService(
                stage="docker-prune",
                up="docker-prune-up.sh",
                down="docker-prune-down.sh",
                args=[str(p.threshold_percent), str(p.keep_hours), p.on_calendar],
                files={"docker-prune.sh": script("docker-prune.sh")},
            )
            self.prune = host_service(host, f"{h}-docker-prune", prune, parent=self, depends_on=after)
        runner = args.settings.runner
        if runner is not None and runner.multiarch:
            self.binfmt = self._binfmt(args, [*host.preflight, *after, *([self.daemon] if self.daemon else [])])
        self.register_outputs({"daemon_json": dict(args.daemon_json or {})})

    def _client(self, args: DockerHostArgs) -> remote.Command | None:
        trust, settings = args.registry, args.settings
        if trust is None or not args.needs_client:
            return None
        ca_pem: pulumi.Output[str | None] = trust.ca_pem if trust.ca_pem is not None else pulumi.Output.from_input(None)
        client = HostService(
            stage="docker-client",
            up="docker-client-up.sh",
            down="docker-client-down.sh",
            files=ca_pem.apply(lambda pem: client_files(trust, settings, pem)),
        )
        return host_service(args.host, f"{settings.name}-docker-client", client, parent=self)

    def _binfmt(self, args: DockerHostArgs, before: list[pulumi.Resource]) -> remote.Command:
        """QEMU for the other arch: the pinned binfmt image pulled, then binfmt-up.sh with its ID."""
        h, arch = args.settings.name, args.settings.arch
        if args.binfmt_image is None:  # config refuses multiarch without it
            raise ValueError(f"runner host '{h}' has runner.multiarch but runners.binfmt_image is unset")
        image = docker.RemoteImage(
            f"{h}-binfmt-image",
            name=args.binfmt_image,
            platform=f"linux/{arch}",
            keep_locally=True,
            opts=pulumi.ResourceOptions(parent=self, provider=args.host.docker, depends_on=before),
        )
        others = ",".join(a for a in get_args(Arch) if a != arch)
        binfmt = HostService(
            stage="binfmt", up="binfmt-up.sh", down="binfmt-down.sh", args=[image.image_id, others], pass_dir=False
        )
        return host_service(args.host, f"{h}-binfmt", binfmt, parent=self, depends_on=[*before, image])
