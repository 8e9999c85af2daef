"""Cross-checks of the forge choice (``forge: gitlab | gitea``, docs/gitea.md): the chosen
forge's section is there and the other's is not, and what Gitea does otherwise than
GitLab (its registry on its https port, no backups yet) is said before anything runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from components.config.problems import Problem, show
from components.config.secrets import fix_command
from components.config.sections import StackConfig
from components.config.types import PROJECT

_SECTION_OF = {"gitlab": "gitlab_section", "gitea": "gitea"}
_VERSION_TAG = re.compile(r":v?([0-9]+\.[0-9]+\.[0-9]+)(?:-[a-z0-9.-]+)?(?:@sha256:[0-9a-f]{64})?$")


def gitea_image_version(image: str) -> str | None:
    """The Gitea version an image tag says (gitea/gitea:1.22.3, :1.22.3-rootless), else None."""
    match = _VERSION_TAG.search(image)
    return match.group(1) if match else None


def check_forge(cfg: StackConfig) -> list[Problem]:
    """The chosen forge's section set, the other forge's section not (an ignored section
    would look configured); with Gitea, what its deployment does not take."""
    problems = []
    for kind, attr in _SECTION_OF.items():
        section = getattr(cfg, attr)
        if kind == cfg.forge and section is None:
            problems.append(
                Problem(
                    f"{PROJECT}:{kind}", "nothing", f"required key is missing: the {kind} section, with forge {kind}"
                )
            )
        elif kind != cfg.forge and section is not None:
            problems.append(
                Problem(
                    f"{PROJECT}:{kind}",
                    "a section",
                    f"no {kind} section with forge {cfg.forge}: it would be ignored; remove it "
                    f"(pulumi config rm {PROJECT}:{kind}) or set forge: {kind}",
                )
            )
    if cfg.forge == "gitea" and cfg.gitea is not None:
        problems += _gitea_problems(cfg)
    return problems


def _gitea_problems(cfg: StackConfig) -> list[Problem]:
    gitea = cfg.gitea
    assert gitea is not None
    problems = []
    if "ports" in cfg.forwarding.model_fields_set:
        for i, fp in enumerate(cfg.forwarding.ports):
            if fp.service == "registry":
                problems.append(
                    Problem(
                        f"{PROJECT}:forwarding.ports[{i}].service",
                        show(fp.service),
                        "no registry entry with forge gitea: Gitea serves its container registry on its https "
                        "port (docker login <gitea.domain>); remove this entry",
                    )
                )
    if cfg.registry.domain is not None:
        problems.append(
            Problem(
                f"{PROJECT}:registry.domain",
                show(cfg.registry.domain),
                "unset with forge gitea: Gitea serves its registry on gitea.domain",
            )
        )
    if cfg.backup.enabled and "enabled" in cfg.backup.model_fields_set:  # the default is GitLab's
        problems.append(
            Problem(
                f"{PROJECT}:backup.enabled",
                show(True),
                "unset or false with forge gitea: forgeway's backups are GitLab's (gitlab-backup) so far, and "
                "a Gitea stack makes none; back Gitea up with `gitea dump` yourself (docs/gitea.md)",
            )
        )
    if gitea.tls == "letsencrypt" and gitea.acme_email is None:
        problems.append(
            Problem(f"{PROJECT}:gitea.acme_email", "nothing", "an address for Let's Encrypt (gitea.tls=letsencrypt)")
        )
    if gitea.database.type == "postgres" and gitea.database.host is None:
        problems.append(
            Problem(f"{PROJECT}:gitea.database.host", "nothing", "the PostgreSQL server's address with type postgres")
        )
    versions = {arch: gitea_image_version(image) for arch, image in sorted(gitea.images.items())}
    for arch, version in versions.items():
        if gitea.version is None and version is None:
            problems.append(
                Problem(
                    f"{PROJECT}:gitea.images.{arch}",
                    show(gitea.images[arch]),
                    "a tag that says Gitea's version (gitea/gitea:1.22.3), or gitea.version set to it",
                )
            )
        elif gitea.version is not None and version is not None and version != gitea.version:
            problems.append(
                Problem(
                    f"{PROJECT}:gitea.images.{arch}",
                    show(gitea.images[arch]),
                    f"an image of gitea.version {gitea.version} (its tag says {version})",
                )
            )
    if gitea.version is None and len({v for v in versions.values() if v}) > 1:
        problems.append(
            Problem(f"{PROJECT}:gitea.images", show(dict(gitea.images)), "one Gitea version for every arch")
        )
    return problems


def forge_secret_problems(cfg: StackConfig, secrets: Mapping[str, Any]) -> list[Problem]:
    """Each forge's secrets only with that forge; Gitea's database password with postgres."""
    problems = []
    postgres = cfg.forge == "gitea" and cfg.gitea is not None and cfg.gitea.database.type == "postgres"
    if "gitlab_root_password" in secrets and cfg.forge != "gitlab":
        problems.append(Problem(f"{PROJECT}:gitlab_root_password", "[secret]", "only with forge gitlab"))
    if "gitea_db_password" in secrets and not postgres:
        problems.append(
            Problem(
                f"{PROJECT}:gitea_db_password", "[secret]", "only with forge gitea and gitea.database.type postgres"
            )
        )
    if postgres and "gitea_db_password" not in secrets:
        problems.append(
            Problem(
                f"{PROJECT}:gitea_db_password",
                "nothing",
                f"the PostgreSQL user's password with gitea.database.type postgres; set it: "
                f"{fix_command('gitea_db_password')}",
            )
        )
    return problems
