"""StackBase: what every forge's part of the program builds on (the hosts, the tunnel, the
forwarding, TLS and each docker host), made once in __main__.py before the forge's own part
(components/gitlab_stack.py, components/gitea.py gitea_stack) is chosen by ``forge.kind``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from components.config import StackConfig
from components.docker_host import DockerHost
from components.forge import Forge
from components.forwarding import PortForwarding
from components.hosts import Host
from components.pki import ForgeTls
from components.secrets import StackSecrets
from components.segment import TunnelSegmentation
from components.tunnel import Tunnel

__all__ = ["StackBase"]


@dataclass(frozen=True)
class StackBase:
    config: StackConfig
    forge: Forge
    secrets: StackSecrets
    hosts: Mapping[str, Host]
    addresses: Mapping[str, ipaddress.IPv4Address]
    tls: ForgeTls
    tunnel: Tunnel
    segmentation: TunnelSegmentation
    forwarding: PortForwarding
    docker_hosts: Mapping[str, DockerHost]
    tunnel_first: Mapping[str, Sequence[pulumi.Resource]]  # each runner host's wg0 (its MTU)
