"""Cross-checks of the hosts: the roles, the links between hosts and the admin peers."""

from __future__ import annotations

import ipaddress

from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT


def check_roles(cfg: StackConfig) -> list[Problem]:
    """One vps and one gitlab host, each host named once with its roles once and apart
    where they clash; runner options that open the host only on protected runners."""
    problems = []
    for role in ("vps", "gitlab"):
        holders = cfg.hosts_with(role)
        if len(holders) != 1:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts",
                    show([h.name for h in holders]),
                    f"exactly one host with role '{role}' (found {len(holders)})",
                )
            )
    seen: dict[str, int] = {}
    for i, host in enumerate(cfg.hosts):
        if host.name in seen:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].name", show(host.name), f"a unique name (hosts[{seen[host.name]}] has it)"
                )
            )
        seen.setdefault(host.name, i)
        if "vps" in host.roles and "gitlab" in host.roles:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].roles",
                    show(host.roles),
                    "vps and gitlab on different hosts (GitLab runs at home, the VPS forwards to it)",
                )
            )
        if "gitlab" in host.roles and "runner" in host.roles:
            # The runner's daemon.json script restarts dockerd on every change of it, and
            # with it the GitLab container (components/runners.py, docker-daemon-up.sh).
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].roles",
                    show(host.roles),
                    "gitlab and runner on different hosts (each daemon.json change of a runner host "
                    "restarts its docker, which would restart GitLab)",
                )
            )
        if len(set(host.roles)) != len(host.roles):
            problems.append(Problem(f"{PROJECT}:hosts[{i}].roles", show(host.roles), "each role once"))
        runner = host.effective_runner
        if runner.privileged and not runner.protected:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].runner.privileged",
                    "true",
                    "privileged only with runner.protected: true (privileged jobs own the host; "
                    "GitLab then hands it only jobs of protected branches and tags)",
                )
            )
        if runner.insecure_docker_socket_in_jobs and not runner.protected:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].runner.insecure_docker_socket_in_jobs",
                    "true",
                    "the docker socket in jobs only with runner.protected: true (a job with the socket "
                    "owns the host); prefer docker-in-docker on a privileged protected runner",
                )
            )
        if "runner" not in host.roles and host.runner is not None:
            problems.append(
                Problem(f"{PROJECT}:hosts[{i}].runner", "{...}", "runner settings only on a host with role 'runner'")
            )
        if "vps" not in host.roles and host.public_address is not None:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].public_address", show(host.public_address), "public_address only on the vps"
                )
            )
    return problems


def check_host_links(cfg: StackConfig) -> list[Problem]:
    """A jump host is another host reached directly; every host key is pinned unless the
    stack opts out loudly."""
    names = {h.name for h in cfg.hosts}
    problems = []
    for i, host in enumerate(cfg.hosts):
        if host.jump_host is not None:
            if host.jump_host == host.name or host.jump_host not in names:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].jump_host",
                        show(host.jump_host),
                        f"the name of another host ({', '.join(sorted(names - {host.name}))})",
                    )
                )
            elif cfg.host(host.jump_host).jump_host is not None:
                problems.append(
                    Problem(
                        f"{PROJECT}:hosts[{i}].jump_host",
                        show(host.jump_host),
                        "a host reached directly (one jump at most)",
                    )
                )
        if host.host_key is None and not cfg.insecure_unpinned_host_keys:
            problems.append(
                Problem(
                    f"{PROJECT}:hosts[{i}].host_key",
                    "nothing",
                    "a pinned SSH host key (`ssh-keyscan -t ed25519 -p PORT ADDRESS`); or set "
                    f"{PROJECT}:insecure_unpinned_host_keys true to connect without checking it",
                )
            )
    return problems


def check_admin_peers(cfg: StackConfig) -> list[Problem]:
    """tunnel.admin_peers names hosts: a typo must not silently open nothing (or, later, the wrong host)."""
    names = [h.name for h in cfg.hosts]
    problems = []
    seen: set[str] = set()
    for i, name in enumerate(cfg.tunnel.admin_peers):
        key = f"{PROJECT}:tunnel.admin_peers[{i}]"
        if name not in names:
            problems.append(Problem(key, show(name), f"the name of a host in hosts ({', '.join(names)})"))
        elif name in seen:
            problems.append(Problem(key, show(name), "each host once"))
        seen.add(name)
    # A host the deployer reaches through the tunnel (by its tunnel address, via a jump
    # host) is reached from the jump host's tunnel address: the segmentation would cut it.
    for i, host in enumerate(cfg.hosts):
        try:
            inside = ipaddress.ip_address(host.address) in cfg.tunnel.subnet
        except ValueError:
            continue  # a DNS name: not checked
        if inside and host.jump_host is not None and host.jump_host not in cfg.tunnel.admin_peers:
            problems.append(
                Problem(
                    f"{PROJECT}:tunnel.admin_peers",
                    show(cfg.tunnel.admin_peers),
                    f"a list naming '{host.jump_host}': hosts[{i}] ({host.name}) is reached through the tunnel "
                    f"from jump host '{host.jump_host}', and only admin peers may SSH through the tunnel",
                )
            )
    return problems
