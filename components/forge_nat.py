"""The forge's own docker network and the forge host's DNAT to it (issue 20).

A forge container publishes each port on the tunnel IPv4 address only (one binding per
port: dockerd reads two back in an order of its own, and the provider then replaces the
container). Where clients also use the tunnel IPv6 address (tunnel.ipv6) or the LAN
address (``publish_on_lan``), the container runs on a network of its own at fixed
addresses (:class:`ForgeNetwork`: ``<subnet>.2`` and ``<subnet6>::2``), and
:class:`ForgeNat` DNATs those addresses to it in ``table ip6/ip forgeway_forge`` on the
forge host (components/render/forge_nat.py, forge-nat-up.sh / forge-nat-down.sh).
Without either, nothing here is created and the container stays on docker's default bridge.

Why not docker's own IPv6 publishing: docker-proxy carries those connections, so the
forge logged docker's bridge gateway instead of the client (docs/lab.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.host_service import HostService, host_service
from components.hosts import Host
from components.render.forge_nat import ForgeNatSettings, PortMap, render_forge_nat

__all__ = [
    "ForgeNat",
    "ForgeNatArgs",
    "ForgeNetwork",
    "ForgeReach",
    "PortMap",
    "forge_reach",
    "lan_ipv4",
    "published_ports",
]


@dataclass(frozen=True)
class ForgeNetwork:
    """A forge container's own docker network: IPv4 always, IPv6 with ``subnet6``."""

    name: str  # the docker network's name, e.g. forgeway-gitlab
    subnet: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network | None = None

    @property
    def container4(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2  # .1 is docker's gateway on the bridge

    @property
    def container6(self) -> ipaddress.IPv6Address | None:
        return None if self.subnet6 is None else self.subnet6.network_address + 2

    def resource(self, name: str, opts: pulumi.ResourceOptions) -> docker.Network:
        """The docker network: a bridge with docker's gateway at .1 (and ::1)."""
        ipam = [docker.NetworkIpamConfigArgs(subnet=str(self.subnet), gateway=str(self.subnet.network_address + 1))]
        if self.subnet6 is not None:
            ipam.append(
                docker.NetworkIpamConfigArgs(subnet=str(self.subnet6), gateway=str(self.subnet6.network_address + 1))
            )
        return docker.Network(
            name,
            name=self.name,
            driver="bridge",
            ipv6=self.subnet6 is not None,
            ipam_configs=ipam,
            labels=[docker.NetworkLabelArgs(label="forgeway.role", value=f"{self.name}-network")],
            opts=opts,
        )

    def attachment(self, network: docker.Network) -> docker.ContainerNetworksAdvancedArgs:
        """The container's place on it, at the fixed addresses the DNAT targets. No
        ``network_mode``: the provider creates the container on "bridge", disconnects it
        and connects it here with these addresses; a network_mode of this network's name
        would attach it first without them, and docker keeps that first attachment."""
        six = self.container6
        return docker.ContainerNetworksAdvancedArgs(
            name=network.name,
            ipv4_address=str(self.container4),
            ipv6_address=None if six is None else str(six),
        )


def lan_ipv4(address: str, key: str) -> ipaddress.IPv4Address:
    """The host's LAN address as an IPv4 address, for ``publish_on_lan``; else a clear error."""
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(
            f"{key}: {address!r} is not an IPv4 address; publish_on_lan needs the forge host's LAN IPv4 "
            "address there (a DNS name cannot be DNATed to)"
        ) from None


@dataclass(frozen=True)
class ForgeNatArgs:
    """The forge host, the ports, and which addresses to DNAT (render/forge_nat.py)."""

    host: Host
    settings: ForgeNatSettings
    depends_on: Sequence[pulumi.Resource] = ()  # the host's preflight (the network comes after: gitlab.py)


class ForgeNat(pulumi.ComponentResource):
    """``table ip6/ip forgeway_forge`` on the forge host."""

    files: dict[str, str]
    command: remote.Command

    def __init__(self, name: str, args: ForgeNatArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:forge_nat:ForgeNat", name, None, opts)
        self.files = render_forge_nat(args.settings)
        families = " ".join(f for f, file in (("ip6", "forge6.nft"), ("ip", "forge4.nft")) if file in self.files)
        service = HostService(
            stage="forge-nat", up="forge-nat-up.sh", down="forge-nat-down.sh", args=(families,), files=self.files
        )
        self.command = host_service(args.host, f"{name}-tables", service, parent=self, depends_on=list(args.depends_on))
        self.register_outputs({"families": families})


def published_ports(ports: Sequence[PortMap], bind: str) -> list[docker.ContainerPortArgs]:
    """The forge's services on ONE host address, sorted by container port (GitLab's, Gitea's).

    terraform-provider-docker's Read (resource_docker_container_structures.go
    flattenContainerPorts) returns ``ports`` sorted by internal port, each port's bindings
    in the daemon's order, and ``ports`` forces a replace. That order is NOT the one asked
    for when a port binds two or more addresses (``publish_on_lan``, or tunnel.ipv6's
    address): dockerd sorts the bindings with go-connections' nat.SortPortMap, whose
    comparator says "less" for any two bindings of one port, so up to 12 bindings in all
    come back reversed per port and more in no fixed order (measured on dockerd 20.10.24).
    No order given here survives the read, and the provider's diff suppress
    (suppressIfPortsDidNotChangeForMigrationV0ToV1) compares each port's first binding:
    such a container is replaced by the next up after a refresh (issue 20, docs/lab.md).
    So one address per port, and the others reach the container through :func:`forge_reach`.
    Every port is tcp: a port on two protocols comes back in no fixed order.
    """
    return [
        docker.ContainerPortArgs(internal=p.container_port, external=p.host_port, ip=bind, protocol="tcp")
        for p in sorted(ports, key=lambda p: p.container_port)
    ]


@dataclass(frozen=True)
class ForgeReach:
    """What :func:`forge_reach` made: nothing without tunnel.ipv6 or publish_on_lan."""

    network: ForgeNetwork | None = None
    nat: ForgeNat | None = None
    networks_advanced: list[docker.ContainerNetworksAdvancedArgs] | None = None  # the container's input


class ForgeSection(Protocol):
    """What :func:`forge_reach` reads of the ``gitlab`` or ``gitea`` section."""

    @property
    def publish_on_lan(self) -> bool: ...
    @property
    def container_subnet(self) -> ipaddress.IPv4Network: ...
    @property
    def container_subnet6(self) -> ipaddress.IPv6Network: ...


def forge_reach(
    prefix: str,
    container: str,
    host: Host,
    section: ForgeSection,
    *,
    ports: Sequence[PortMap],
    tunnel6: ipaddress.IPv6Address | None,
    parent: pulumi.Resource,
) -> ForgeReach:
    """The forge's own network and the forge host's DNAT to it, for the tunnel IPv6 address
    (``tunnel6``) and the LAN address (the host's, with the section's publish_on_lan);
    nothing without either. ``container`` names the network (the container's name)."""
    name = host.settings.name
    lan = lan_ipv4(host.settings.address, f"hosts[{name}].address") if section.publish_on_lan else None
    if tunnel6 is None and lan is None:
        return ForgeReach()
    if host.docker is None:
        raise ValueError(f"host '{name}' runs the forge but has no docker provider")
    network = ForgeNetwork(container, section.container_subnet, section.container_subnet6 if tunnel6 else None)
    settings = ForgeNatSettings(
        ports=tuple(ports),
        tunnel6=tunnel6,
        container6=network.container6,
        lan4=lan,
        container4=network.container4 if lan is not None else None,
    )
    # Before the network: dockerd turns IPv6 forwarding on when it makes an IPv6 network
    # and never off, so forge-nat-up.sh records the host's value first and its delete,
    # after the network's, puts it back.
    nat = ForgeNat(f"{prefix}-nat", ForgeNatArgs(host, settings, depends_on=host.preflight),
                   pulumi.ResourceOptions(parent=parent))  # fmt: skip
    opts = pulumi.ResourceOptions(parent=parent, provider=host.docker, depends_on=[*host.preflight, nat.command])
    return ForgeReach(network, nat, [network.attachment(network.resource(f"{prefix}-network", opts))])
