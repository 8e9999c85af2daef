"""The stack outputs contract: what other projects may read with a StackReference.

The README's outputs table is generated from OUTPUTS (``python -m tools.ci.reference``),
a program test checks that the program exports exactly these names, with these secret
flags, and tests/program/outputs_contract.json pins name, type, secret and stable: a
change to any of them fails a test until the snapshot is updated on purpose.

Stability: a *stable* output keeps its name, type, meaning and secret flag; removing or
renaming one, or changing its type or secret flag, is a breaking change for every project
that reads it (say so in the commit and release notes). An output with ``stable=False``
is exported for operators and may change shape or go away in any release: don't build
another project on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.backup import Backup
from components.config import StackConfig
from components.forge import Forge, woodpecker_url
from components.pki import CertificateAuthority
from components.tunnel import Tunnel

__all__ = ["OUTPUTS", "OutputSpec", "export_all", "stack_outputs"]


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: str
    meaning: str
    secret: bool = False
    when: str = "always"
    stable: bool = True  # False: may change shape or go away in any release (see the module docstring)


OUTPUTS: tuple[OutputSpec, ...] = (
    OutputSpec("forge", "string", "Which forge the stack runs: gitlab or gitea"),
    OutputSpec("forge_url", "string", "The forge's URL, e.g. https://gitlab.example.org (either forge)"),
    OutputSpec("gitlab_url", "string", "GitLab's external URL, e.g. https://gitlab.example.org", when="forge gitlab"),
    OutputSpec("ssh_clone_host", "string", "Host name in SSH clone URLs (git@HOST)"),
    OutputSpec("ssh_clone_port", "integer", "Public port of git over SSH", when="an ssh port is forwarded"),
    OutputSpec(
        "registry",
        "string",
        "Container registry as host:port, for docker login and image names (Gitea's on public port 443: "
        "its domain alone, as docker names it)",
        when="registry.enabled",
    ),
    OutputSpec("vps_public_address", "string", "The VPS's public address or DNS name"),
    OutputSpec("tunnel_endpoint", "string", "WireGuard endpoint peers dial, host:port"),
    OutputSpec("tunnel_subnet", "string", "Tunnel subnet in CIDR form"),
    OutputSpec(
        "tunnel_peers",
        "map host -> {address, public_key, role}",
        "Every host's tunnel address and WireGuard public key (the VPS included, role vps); "
        "for operating the tunnel: its fields may change (e.g. IPv6 addresses, more roles)",
        stable=False,
    ),
    OutputSpec(
        "ca_certificate", "string (PEM)", "Our own CA certificate to trust", when="gitlab.tls (gitea.tls) = own-ca"
    ),
    OutputSpec("runners", "map arch -> list of host names", "Runner hosts per architecture (arm64, amd64)"),
    OutputSpec(
        "backup_repository",
        "string",
        "The restic repository GitLab's backups go to, without credentials (docs/backup.md)",
        when="backup.enabled",
    ),
    OutputSpec(
        "backup_schedule",
        "string",
        "When backups run: a systemd OnCalendar expression, UTC (plus the randomized delay)",
        when="backup.enabled",
    ),
    OutputSpec(
        "gitlab_root_password",
        "string",
        "GitLab's initial root password (generated unless set as secret config); "
        "`pulumi stack output gitlab_root_password --show-secrets`",
        secret=True,
        when="forge gitlab",
    ),
    OutputSpec(
        "woodpecker_url",
        "string",
        "Woodpecker CI's URL (sign in with Gitea's admin user; WOODPECKER_HOST)",
        when="forge gitea with a woodpecker section",
    ),
    OutputSpec("gitea_admin_user", "string", "Gitea's admin user (gitea.admin_username)", when="forge gitea"),
    OutputSpec(
        "gitea_admin_password",
        "string",
        "The password of Gitea's admin user (generated); `pulumi stack output gitea_admin_password --show-secrets`",
        secret=True,
        when="forge gitea",
    ),
)


def stack_outputs(
    cfg: StackConfig,
    forge: Forge,
    tunnel: Tunnel,
    ca: CertificateAuthority | None,
    admin_password: pulumi.Output[str],
    *,
    backup: Backup | None = None,
) -> dict[str, Any]:
    """The values of OUTPUTS for this stack (names not in this dict are not exported).
    ``admin_password``: GitLab's root password or Gitea's admin user's, by ``forge.kind``."""
    ssh = forge.service("ssh")
    public = cfg.vps.internet_address
    out: dict[str, Any] = {
        "forge": forge.kind,
        "forge_url": forge.url,
        "ssh_clone_host": forge.domain,
        "ssh_clone_port": ssh.public if ssh else None,
        "vps_public_address": public,
        "tunnel_endpoint": f"{cfg.tunnel_endpoint_host}:{cfg.tunnel.listen_port}",
        "tunnel_subnet": str(cfg.tunnel.subnet),
        "tunnel_peers": {
            h.name: {
                "address": str(tunnel.addresses[h.name]),
                "public_key": tunnel.keys[h.name].public_key,
                "role": "vps" if "vps" in h.roles else "peer",
            }
            for h in cfg.hosts
        },
        "runners": {arch: [h.name for h in cfg.hosts_with("runner") if h.arch == arch] for arch in ("arm64", "amd64")},
    }
    if forge.kind == "gitea":
        out["gitea_admin_user"] = cfg.gitea_section.admin_username
        out["gitea_admin_password"] = pulumi.Output.secret(admin_password)
        out["woodpecker_url"] = woodpecker_url(cfg)
        if forge.registry_endpoints:
            out["registry"] = forge.registry_endpoints[0].removesuffix(":443")
    else:
        out["gitlab_url"] = forge.url
        out["gitlab_root_password"] = pulumi.Output.secret(admin_password)
    registry = forge.service("registry")
    if forge.kind == "gitlab" and cfg.registry.enabled and registry is not None:
        out["registry"] = f"{cfg.registry_domain}:{registry.public}"
    if ca is not None:
        out["ca_certificate"] = ca.cert_pem
    if backup is not None:
        out["backup_repository"] = backup.repository
        out["backup_schedule"] = cfg.backup.schedule
    return {k: v for k, v in out.items() if v is not None}


def export_all(outputs: dict[str, Any]) -> None:
    for name, value in outputs.items():
        pulumi.export(name, value)
