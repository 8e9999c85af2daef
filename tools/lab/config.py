"""The lab stack's config: Pulumi.lab.yaml with what this lab made (host keys, deployer key) filled in."""

from __future__ import annotations

from typing import Any

from tools.lab.hosts import docker_work
from tools.lab.layout import LAB_DIR, ROOT, RUNNER_HOSTS


def _set(config: dict[str, Any], assignment: str) -> None:
    """``section.key.sub=value`` (as `pulumi config set --path forgeway:section.key.sub value`),
    or a top-level ``key=value`` (``allow_forge_change=true``: a string, as the CLI hands it)."""
    path, sep, value = assignment.partition("=")
    section, *keys = path.split(".")
    if not sep or not section:
        raise ValueError(f"--set {assignment!r}: expected [SECTION.]KEY[.SUB...]=VALUE, e.g. gitlab.images.amd64=...")
    if not keys:
        config[f"forgeway:{section}"] = value
        return
    target = config.setdefault(f"forgeway:{section}", {})
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def _dual_stack(config: dict[str, Any], vps_address6: str) -> None:
    """tunnel.ipv6 and forwarding.ipv6 on, the VPS's public IPv6 address from the topology
    (as its host key): the public names have AAAA too (tools/lab/hosts.py)."""
    config.setdefault("forgeway:tunnel", {})["ipv6"] = True
    config.setdefault("forgeway:forwarding", {})["ipv6"] = True
    vps = next(h for h in config["forgeway:hosts"] if "vps" in h["roles"])
    vps["public_address6"] = vps_address6


GITEA_DOMAIN = "gitea.forgeway.test"  # tools/lab/layout.py PUBLIC_NAMES: the VPS, as gitlab.forgeway.test
CI_PORT = 8443  # Woodpecker's public https port (forwarding.ports ci), on Gitea's name
FORGES = ("gitlab", "gitea")


def _gitea(config: dict[str, Any]) -> None:
    """The lab stack with ``forge: gitea`` (docs/lab-gitea.md): the gitlab section out, a
    gitea and a woodpecker section in, each image the lab's stand-in (tools/lab/images.py),
    and Woodpecker's ci port forwarded. The rest (hosts, tunnel, forwarding mode, CA, the
    runners section whose binfmt image serves runner-amd's multiarch) is the GitLab lab's."""
    from tools.lab.images import GITEA_STANDIN, WOODPECKER_AGENT_STANDIN, WOODPECKER_SERVER_STANDIN

    del config["forgeway:gitlab"]
    config["forgeway:forge"] = "gitea"
    both = ("arm64", "amd64")
    config["forgeway:gitea"] = {
        "domain": GITEA_DOMAIN,
        "images": dict.fromkeys(both, GITEA_STANDIN),
        "version": "1.22.6",  # the stand-in's (docs/lab-gitea.md); its tag does not say it
    }
    config["forgeway:woodpecker"] = {
        "server_images": dict.fromkeys(both, WOODPECKER_SERVER_STANDIN),
        "agent_images": dict.fromkeys(both, WOODPECKER_AGENT_STANDIN),
    }
    config.setdefault("forgeway:forwarding", {})["ports"] = [
        {"service": "http", "public": 80},
        {"service": "https", "public": 443},
        {"service": "ssh", "public": 22, "home": 2222},
        {"service": "ci", "public": CI_PORT},
    ]


def lab_config(
    topology: dict[str, Any],
    mode: str | None = None,
    overrides: list[str] | None = None,
    forge: str = "gitlab",
) -> tuple[dict[str, Any], list[str]]:
    """Pulumi.lab.yaml with this lab's host keys and deployer key; ``forge="gitea"``: its
    Gitea variant (:func:`_gitea`)."""
    if forge not in FORGES:
        raise ValueError(f"forge {forge!r}: expected one of {', '.join(FORGES)}")
    from tools.stack.configs import LAB_BACKUP_PASSWORD
    from tools.stack.file import load_stack_file

    config, secret_keys = load_stack_file(ROOT / "Pulumi.lab.yaml", None)
    by_name = {h["name"]: h for h in topology["hosts"]}
    for host in config["forgeway:hosts"]:
        host["host_key"] = by_name[host["name"]]["host_key"]
    config["forgeway:ssh_private_key"] = (LAB_DIR / "deployer").read_text()
    if "vps_public_address6" in topology:  # a dual-stack lab (issue 20): the forge over both families
        _dual_stack(config, topology["vps_public_address6"])
        for host in config["forgeway:hosts"]:
            if by_name[host["name"]].get("ipv6_only"):  # it has no IPv4 way to the VPS's public_address
                host["tunnel_endpoint_family"] = "ipv6"
    config["forgeway:backup_password"] = LAB_BACKUP_PASSWORD  # backups are on by default (issue 18)
    # No runner_tokens: the program creates both runners through GitLab's API (issue 17).
    booting = {h["name"] for h in topology["hosts"] if h.get("boots")}
    for host in config["forgeway:hosts"]:
        if host["name"] in RUNNER_HOSTS and host["name"] not in booting:
            host["docker_socket"] = str(docker_work(host["name"]) / "docker.sock")  # bound into the runner
    if forge == "gitea":
        _gitea(config)
    if mode is not None:
        config["forgeway:forwarding"]["mode"] = mode
    for assignment in overrides or []:
        _set(config, assignment)
    return config, [*secret_keys, "forgeway:ssh_private_key", "forgeway:backup_password"]
