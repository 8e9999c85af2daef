"""Cross-checks of the networks: the tunnel subnet and addresses, the LANs, docker's
bridge and address pools."""

from __future__ import annotations

import ipaddress

from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT


def check_mtu(cfg: StackConfig) -> list[Problem]:
    """A tunnel MTU that leaves room for WireGuard's header on the uplink."""
    problems = []
    if cfg.tunnel.mtu is not None and cfg.tunnel.mtu > cfg.tunnel.uplink_mtu - 60:
        problems.append(
            Problem(
                f"{PROJECT}:tunnel.mtu",
                show(cfg.tunnel.mtu),
                f"at most uplink_mtu - 60 = {cfg.tunnel.uplink_mtu - 60} (WireGuard adds 60-80 bytes)",
            )
        )
    return problems


def check_networks(cfg: StackConfig) -> list[Problem]:
    """An IPv4 tunnel subnet with room for every host, pinned tunnel addresses inside it
    and each once, and no LAN or docker network of a host overlapping it."""
    problems = []
    subnet = cfg.tunnel.subnet
    problems += check_mtu(cfg)
    if subnet.version != 4:
        return [*problems, Problem(f"{PROJECT}:tunnel.subnet", show(str(subnet)), "an IPv4 subnet")]
    if subnet.num_addresses < len(cfg.hosts) + 2:
        problems.append(Problem(f"{PROJECT}:tunnel.subnet", show(str(subnet)), f"room for {len(cfg.hosts)} hosts"))
    pinned: dict[ipaddress.IPv4Address, int] = {}
    for i, host in enumerate(cfg.hosts):
        address = host.tunnel_address
        if address is not None and address in subnet:
            if address in (subnet.network_address, subnet.broadcast_address):
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].tunnel_address",
                        show(str(address)),
                        "a host address, not the network or broadcast address",
                    )
                )
            elif address in pinned:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].tunnel_address",
                        show(str(address)),
                        f"an address no other host has (hosts[{pinned[address]}] has it)",
                    )
                )
            pinned.setdefault(address, i)
        for field in ("lan_networks", "docker_networks"):
            for j, net in enumerate(getattr(host, field)):
                if net.version == subnet.version and net.overlaps(subnet):
                    problems.append(
                        Problem(
                            f"{PROJECT}:hosts[{i}].{field}[{j}]",
                            show(str(net)),
                            f"a network that does not overlap the tunnel subnet {subnet} (tunnel.subnet)",
                        )
                    )
        if host.tunnel_address is not None and host.tunnel_address not in subnet:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].tunnel_address",
                    show(str(host.tunnel_address)),
                    f"an address inside tunnel.subnet {subnet}",
                )
            )
    return problems


def check_runner_networks(cfg: StackConfig) -> list[Problem]:
    """docker's address pools must not take the tunnel's or any LAN's addresses; multiarch needs binfmt."""
    problems = []
    taken: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [("tunnel.subnet", cfg.tunnel.subnet)]
    for i, host in enumerate(cfg.hosts):
        taken += [(f"hosts[{i}].lan_networks", net) for net in host.lan_networks]
        taken += [(f"hosts[{i}].docker_networks", net) for net in host.docker_networks]
    for i, pool in enumerate(cfg.runners.address_pools):
        key = f"{PROJECT}:runners.address_pools[{i}].base"
        if pool.size < pool.base.prefixlen:
            problems.append(
                Problem(
                    f"{PROJECT}:runners.address_pools[{i}].size",
                    show(pool.size),
                    f"a prefix length of at least {pool.base.prefixlen} (the base's own)",
                )
            )
        for where, net in taken:
            if net.version == 4 and pool.base.overlaps(net):
                problems.append(
                    Problem(key, show(str(pool.base)), f"a pool that does not overlap {where} ({net}): pick another")
                )
    multiarch = [h.name for h in cfg.hosts_with("runner") if h.effective_runner.multiarch]
    if multiarch and cfg.runners.binfmt_image is None:
        problems.append(
            Problem(
                f"{PROJECT}:runners.binfmt_image",
                "nothing",
                f"a pinned binfmt image (e.g. tonistiigi/binfmt:qemu-v8.1.5) for the multiarch hosts "
                f"{', '.join(multiarch)}",
            )
        )
    return problems


# docker's default bridge (docker0) when daemon.json sets no "bip", as forgeway's does not.
DOCKER_DEFAULT_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")


def check_docker_overlaps(cfg: StackConfig) -> list[Problem]:
    """On a host running docker, docker0 and the host's docker networks take routes: a LAN
    or the tunnel in the same addresses becomes unreachable from that host."""
    problems = []
    subnet = cfg.tunnel.subnet
    docker_hosts = [(i, h) for i, h in enumerate(cfg.hosts) if {"gitlab", "runner"} & set(h.roles)]
    if docker_hosts and subnet.version == 4 and subnet.overlaps(DOCKER_DEFAULT_BRIDGE):
        problems.append(
            Problem(
                f"{PROJECT}:tunnel.subnet",
                show(str(subnet)),
                f"a subnet outside docker's default bridge {DOCKER_DEFAULT_BRIDGE} (docker0 on the gitlab and "
                "runner hosts), e.g. 10.8.0.0/24",
            )
        )
    for i, host in docker_hosts:
        for j, lan in enumerate(host.lan_networks):
            clashes = [(str(DOCKER_DEFAULT_BRIDGE), "docker's default bridge docker0")]
            clashes += [(str(net), f"hosts[{i}].docker_networks[{k}]") for k, net in enumerate(host.docker_networks)]
            for net, what in clashes:
                if lan.version == 4 and lan.overlaps(ipaddress.ip_network(net)):
                    problems.append(
                        Problem(
                            f"{PROJECT}:hosts[{i}].lan_networks[{j}]",
                            show(str(lan)),
                            f"a LAN that does not overlap {what} ({net}) on this docker host: its routes would "
                            "take the LAN's addresses",
                        )
                    )
    return problems


def _tunnel_addresses6(cfg: StackConfig) -> dict[str, ipaddress.IPv6Address]:
    from components.render.wireguard import assign_tunnel_addresses, assign_tunnel_addresses6

    subnet = cfg.tunnel.subnet
    assert isinstance(subnet, ipaddress.IPv4Network)  # check_ipv6 runs only on an IPv4 subnet
    v4 = assign_tunnel_addresses(subnet, [(h.name, "vps" in h.roles, h.tunnel_address) for h in cfg.hosts])
    pinned = {h.name: h.tunnel_address6 for h in cfg.hosts}
    return assign_tunnel_addresses6(subnet, cfg.tunnel.ipv6_subnet, v4, pinned)


def _check_tunnel_ipv6(cfg: StackConfig) -> list[Problem]:
    """With tunnel.ipv6: every host's tunnel IPv6 address inside the prefix, a host address
    and its own; the prefix clear of the runners' prefix and every IPv6 LAN/docker network."""
    problems = []
    prefix = cfg.tunnel.ipv6_subnet
    addresses = _tunnel_addresses6(cfg)
    owner: dict[ipaddress.IPv6Address, int] = {}
    for i, host in enumerate(cfg.hosts):
        address = addresses[host.name]
        key = f"{PROJECT}:hosts[{i}].tunnel_address6"
        given = show(str(address)) if host.tunnel_address6 is not None else f"{address} (derived from the IPv4 one)"
        if address not in prefix:
            problems.append(
                Problem(
                    key,
                    given,
                    f"an address inside tunnel.ipv6_subnet {prefix} (a longer IPv4 "
                    "host part needs a shorter prefix, or pin tunnel_address6)",
                )
            )
        elif address == prefix.network_address:
            problems.append(Problem(key, given, "a host address, not the prefix's subnet-router anycast address"))
        elif address in owner:
            problems.append(Problem(key, given, f"an address no other host has (hosts[{owner[address]}] has it)"))
        owner.setdefault(address, i)
        for field in ("lan_networks", "docker_networks"):
            for j, net in enumerate(getattr(host, field)):
                if net.version == 6 and net.overlaps(prefix):
                    problems.append(
                        Problem(
                            f"{PROJECT}:hosts[{i}].{field}[{j}]",
                            show(str(net)),
                            f"a network that does not overlap the tunnel prefix {prefix} (tunnel.ipv6_subnet)",
                        )
                    )
    if cfg.runners.ipv6 and prefix.overlaps(cfg.runners.ipv6_prefix):
        problems.append(
            Problem(
                f"{PROJECT}:tunnel.ipv6_subnet",
                show(str(prefix)),
                f"a prefix outside runners.ipv6_prefix {cfg.runners.ipv6_prefix} (the job networks')",
            )
        )
    return problems


def check_ipv6(cfg: StackConfig) -> list[Problem]:
    """IPv6 settings that fit together: forwarding.ipv6 and tunnel_address6 need tunnel.ipv6;
    public_address6 is the VPS's and tunnel_endpoint_family a peer's; a peer told to dial over
    one family has an address of that family to dial; the tunnel prefix (check above)."""
    problems: list[Problem] = []
    if cfg.tunnel.subnet.version != 4:
        return problems  # check_networks reports it; addresses cannot be derived
    if cfg.forwarding.ipv6 and not cfg.tunnel.ipv6:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ipv6",
                "true",
                "tunnel.ipv6: true as well (IPv6 is forwarded to the forge's tunnel IPv6 address)",
            )
        )
    for i, host in enumerate(cfg.hosts):
        is_vps = "vps" in host.roles
        if host.tunnel_address6 is not None and not cfg.tunnel.ipv6:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].tunnel_address6",
                    show(str(host.tunnel_address6)),
                    "nothing while tunnel.ipv6 is false (set tunnel.ipv6: true to use it)",
                )
            )
        if host.public_address6 != "auto" and not is_vps:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].public_address6",
                    show(host.public_address6),
                    "auto: only the VPS has a public_address6",
                )
            )
        family = host.tunnel_endpoint_family
        if family == "auto":
            continue
        if is_vps:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].tunnel_endpoint_family",
                    show(family),
                    "auto: the VPS is the endpoint and dials no one",
                )
            )
        elif cfg.hosts_with("vps") and cfg.tunnel_endpoint_for(host) is None:
            where = (
                "hosts[vps].public_address6 (the VPS's IPv6 address) or tunnel.endpoint as an IPv6 address"
                if family == "ipv6"
                else "an IPv4 address in tunnel.endpoint, the VPS's public_address or address"
            )
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].tunnel_endpoint_family",
                    show(family),
                    f"auto, or set {where}: a DNS name is resolved as the host's resolver orders it (auto)",
                )
            )
    if cfg.tunnel.ipv6:
        problems += _check_tunnel_ipv6(cfg)
    return problems


def check_forge_network(cfg: StackConfig) -> list[Problem]:
    """The forge's own docker network (tunnel.ipv6 or <forge>.publish_on_lan, GitLab's or
    Gitea's, components/forge_nat.py): its subnets clash with no tunnel subnet, LAN or docker
    network of the forge host, and publish_on_lan's DNAT needs the forge host's address as an
    IPv4 address."""
    section, forge = cfg.forge_settings, cfg.forge
    if section is None or not cfg.hosts_with("gitlab"):  # the forge host has role gitlab, whichever forge
        return []
    problems: list[Problem] = []
    i, host = next((i, h) for i, h in enumerate(cfg.hosts) if "gitlab" in h.roles)
    if not (cfg.tunnel.ipv6 or section.publish_on_lan):
        return []
    name = "GitLab" if forge == "gitlab" else "Gitea"
    if section.publish_on_lan:
        try:
            ipaddress.IPv4Address(host.address)
        except ValueError:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].address",
                    show(host.address),
                    f"the {name} host's LAN IPv4 address with {forge}.publish_on_lan (forgeway DNATs it to {name})",
                )
            )
    clashes = [(cfg.tunnel.subnet, "tunnel.subnet"), (DOCKER_DEFAULT_BRIDGE, "docker's default bridge docker0")]
    clashes += [(net, f"hosts[{i}].lan_networks[{j}]") for j, net in enumerate(host.lan_networks)]
    clashes += [(net, f"hosts[{i}].docker_networks[{j}]") for j, net in enumerate(host.docker_networks)]
    for net, what in clashes:
        if net.version == 4 and section.container_subnet.overlaps(ipaddress.ip_network(str(net))):
            problems.append(
                Problem(
                    f"{PROJECT}:{forge}.container_subnet",
                    show(str(section.container_subnet)),
                    f"a subnet that does not overlap {what} ({net}), e.g. 172.31.254.0/29",
                )
            )
    if cfg.tunnel.ipv6 and section.container_subnet6.overlaps(cfg.tunnel.ipv6_subnet):
        problems.append(
            Problem(
                f"{PROJECT}:{forge}.container_subnet6",
                show(str(section.container_subnet6)),
                f"a ULA prefix that does not overlap tunnel.ipv6_subnet ({cfg.tunnel.ipv6_subnet}), "
                "e.g. fd77:6179:7762::/64",
            )
        )
    return problems
