"""Cross-checks of Woodpecker CI (``woodpecker``, forge gitea only; docs/gitea.md): its
forge, its public port (a ``ci`` entry of forwarding.ports), its images for each host's
arch, and a gRPC port that collides with nothing Gitea publishes."""

from __future__ import annotations

from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT


def check_woodpecker(cfg: StackConfig) -> list[Problem]:
    """Woodpecker only with forge gitea, and then a ``ci`` forwarded port (its public URL);
    no ``ci`` port without it; Gitea's own certificate (Woodpecker serves the same one);
    a pinned server image for the forge host's arch, an agent image for every runner arch."""
    problems: list[Problem] = []
    wp = cfg.woodpecker
    ci = [i for i, p in enumerate(cfg.forwarding.ports) if p.service == "ci"]
    if wp is None:
        problems += [
            Problem(
                f"{PROJECT}:forwarding.ports[{i}].service",
                show("ci"),
                "a ci entry only with a woodpecker section (forge gitea): nothing would serve it",
            )
            for i in ci
        ]
        return problems
    if cfg.forge != "gitea":
        return [
            Problem(
                f"{PROJECT}:woodpecker",
                "a section",
                f"no woodpecker section with forge {cfg.forge}: Woodpecker is Gitea's CI (GitLab has its runners)",
            )
        ]
    if not ci:
        problems.append(
            Problem(
                f"{PROJECT}:forwarding.ports",
                show([p.service for p in cfg.forwarding.ports]),
                "a ci entry with woodpecker (e.g. {service: ci, public: 8443}): Woodpecker's public https port, "
                "which browsers (the OAuth sign-in) and Gitea's webhooks reach",
            )
        )
    if cfg.gitea is not None and cfg.gitea.tls != "own-ca":
        problems.append(
            Problem(
                f"{PROJECT}:gitea.tls",
                show(cfg.gitea.tls),
                "own-ca with woodpecker: Woodpecker serves the forge certificate of forgeway's CA; "
                "Let's Encrypt for Woodpecker is not built yet",
            )
        )
    homes = {p.home_port for p in cfg.forwarding.ports}
    if wp.grpc_port in homes:
        problems.append(
            Problem(
                f"{PROJECT}:woodpecker.grpc_port",
                show(wp.grpc_port),
                f"a port no forwarded service lands on (home ports {sorted(homes)})",
            )
        )
    forge_arch = {h.arch for h in cfg.hosts_with("gitlab")}
    for key, images, arches in (
        ("server_images", wp.server_images, forge_arch),
        ("agent_images", wp.agent_images, {h.arch for h in cfg.hosts_with("runner")}),
    ):
        problems += [
            Problem(
                f"{PROJECT}:woodpecker.{key}.{arch}",
                "nothing",
                f"a pinned image for {arch}, the arch of a host that runs it",
            )
            for arch in sorted(arches - set(images))
        ]
    return problems
