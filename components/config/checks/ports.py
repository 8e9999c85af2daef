"""Cross-checks of the forwarded ports: against each other, GitLab's URL and TLS mode,
the tunnel's port and the hosts' own SSH."""

from __future__ import annotations

from urllib.parse import urlsplit

from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT


def check_ports(cfg: StackConfig) -> list[Problem]:
    """Each service and public port once, no two landing on one home port; https, ssh and
    (when enabled) registry forwarded; port 80 for Let's Encrypt; the tunnel's UDP port free."""
    problems = []
    by_service: dict[str, int] = {}
    by_public: dict[int, int] = {}
    by_home: dict[int, int] = {}
    for i, fp in enumerate(cfg.forwarding.ports):
        key = f"{PROJECT}:forwarding.ports[{i}]"
        if fp.service in by_service:
            problems.append(
                Problem(
                    f"{key}.service", show(fp.service), f"each service once (ports[{by_service[fp.service]}] has it)"
                )
            )
        if fp.public in by_public:
            problems.append(
                Problem(
                    f"{key}.public",
                    show(fp.public),
                    f"a public port no other service uses (ports[{by_public[fp.public]}] has it)",
                )
            )
        if fp.home_port in by_home and fp.public not in by_public:  # a public clash says it already
            other = by_home[fp.home_port]
            # Name the entry whose home port was set explicitly: that is the one to change.
            at, seen = (i, other) if fp.home is not None or cfg.forwarding.ports[other].home is None else (other, i)
            field = "home" if cfg.forwarding.ports[at].home is not None else "public"
            problems.append(
                Problem(
                    f"{PROJECT}:forwarding.ports[{at}].{field}",
                    show(fp.home_port),
                    f"a home port no other service lands on (ports[{seen}] lands there too; home defaults to public)",
                )
            )
        by_service.setdefault(fp.service, i)
        by_public.setdefault(fp.public, i)
        by_home.setdefault(fp.home_port, i)
    if "https" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports", show(sorted(by_service)), "an https entry (GitLab is served over HTTPS)"
            )
        )
    if "ssh" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                show(sorted(by_service)),
                "an ssh entry (git over SSH; e.g. {service: ssh, public: 22, home: 2222})",
            )
        )
    if cfg.forge == "gitlab" and cfg.gitlab_section is not None:
        problems += _external_url_problems(cfg, by_service.get("https"))
    # Gitea serves its registry on its https port (checks/forge.py): no entry of its own.
    if cfg.forge == "gitlab" and cfg.registry.enabled and "registry" not in by_service:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                show(sorted(by_service)),
                "a registry entry while registry.enabled is true",
            )
        )
    http = cfg.forwarding.port("http")
    tls_key = f"{cfg.forge}.tls"
    letsencrypt = cfg.forge_settings is not None and cfg.forge_settings.tls == "letsencrypt"
    if letsencrypt and http is not None and http.public != 80:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports[{cfg.forwarding.ports.index(http)}].public",
                show(http.public),
                f"80: {tls_key}=letsencrypt answers the ACME HTTP-01 challenge on public port 80",
            )
        )
    if letsencrypt and http is None:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                show(sorted(by_service)),
                f"an http entry on port 80: {tls_key}=letsencrypt answers its challenge there",
            )
        )
    if cfg.tunnel.listen_port in {fp.public for fp in cfg.forwarding.ports}:
        problems.append(
            Problem(f"{PROJECT}:tunnel.listen_port", show(cfg.tunnel.listen_port), "a UDP port not also forwarded")
        )
    return problems


def _external_url_problems(cfg: StackConfig, https_index: int | None) -> list[Problem]:
    """gitlab.external_url must be what the VPS serves: https, GitLab's domain, the forwarded port."""
    url = cfg.gitlab.external_url
    if url is None or https_index is None:
        return []
    public = cfg.forwarding.ports[https_index].public
    expected = cfg.default_gitlab_url
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        parts, port = None, None
    # As written, not as urlsplit lowercases them: gitlab.rb takes the URL verbatim, and
    # GitLab's host name must be the domain its certificate files are named after.
    host = parts.netloc.rpartition("@")[2].split(":", 1)[0] if parts is not None else ""
    if parts is None or not url.startswith("https://") or host != cfg.gitlab.domain or port != public:
        return [
            Problem(
                f"{PROJECT}:gitlab.external_url",
                show(url),
                f"{expected} (optionally with a path): https on gitlab.domain and on the public https port the VPS "
                f"forwards (forwarding.ports[{https_index}].public={public}); or leave it unset",
            )
        ]
    return []


def check_host_ports(cfg: StackConfig) -> list[Problem]:
    """Ports that must not clash with the hosts' own SSH: the VPS admin, GitLab's host."""
    problems = []
    ssh = cfg.forwarding.port("ssh")
    gitlab = cfg.hosts_with("gitlab")
    if ssh is not None and len(gitlab) == 1 and ssh.home_port == gitlab[0].ssh_port:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports[{cfg.forwarding.ports.index(ssh)}].home",
                show(ssh.home_port),
                f"a port other than the own SSH port of host '{gitlab[0].name}' "
                f"(hosts[{cfg.hosts.index(gitlab[0])}].ssh_port={gitlab[0].ssh_port}); GitLab's SSH must land "
                "elsewhere, e.g. 2222",
            )
        )
    vps = cfg.hosts_with("vps")
    if len(vps) == 1:
        admin = cfg.admin_ssh_port
        for i, fp in enumerate(cfg.forwarding.ports):
            if fp.public == admin:
                problems.append(
                    Problem(
                        f"{PROJECT}:forwarding.ports[{i}].public",
                        show(fp.public),
                        f"a port other than the VPS admin SSH port {admin} (forwarding it would lock the admin out); "
                        "move the VPS's sshd to another port and set its ssh_port, or forward git SSH on another port",
                    )
                )
        if cfg.forwarding.admin_ssh_port not in (None, vps[0].ssh_port) and vps[0].jump_host is None:
            problems.append(
                Problem(
                    f"{PROJECT}:forwarding.admin_ssh_port",
                    show(cfg.forwarding.admin_ssh_port),
                    "the port the deployer reaches the VPS on "
                    f"(hosts[{cfg.hosts.index(vps[0])}].ssh_port={vps[0].ssh_port})",
                )
            )
    return problems
