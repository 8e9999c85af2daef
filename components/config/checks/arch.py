"""Cross-checks of the CPU architecture: each host's images and runner tags are for its arch."""

from __future__ import annotations

import re
from collections.abc import Mapping

from components.config.problems import Problem, show
from components.config.sections import StackConfig
from components.config.types import PROJECT, Arch

# An architecture named in an image reference (yrzr/gitlab-ce-arm64v8, ...-amd64): such an
# image under the other architecture's key would be pulled for, and fail on, the wrong CPU.
_ARCH_HINTS: dict[str, re.Pattern[str]] = {
    "arm64": re.compile(r"(?<![a-z0-9])(arm64(v8)?|aarch64)(?![a-z0-9])"),
    "amd64": re.compile(r"(?<![a-z0-9])(amd64|x86[_-]64)(?![a-z0-9])"),
}


def _image_arch_problems(section: str, images: Mapping[Arch, str]) -> list[Problem]:
    problems = []
    for arch, ref in sorted(images.items()):
        named = ref.split("@", 1)[0].lower()
        for other, hint in _ARCH_HINTS.items():
            if other != arch and hint.search(named):
                problems.append(
                    Problem(
                        f"{PROJECT}:{section}.images.{arch}",
                        show(ref),
                        f"an image built for {arch}: this reference names {other}; "
                        f"put it under {section}.images.{other} and give {arch} hosts an {arch} image",
                    )
                )
    return problems


def check_images(cfg: StackConfig) -> list[Problem]:
    """A pinned image for the arch of the forge host (the forge's section: gitlab or gitea)
    and of every runner host (gitlab-runner: forge gitlab), and none filed under the other arch."""
    section = cfg.forge_settings
    if section is None:
        return []  # checks/forge.py: the section is missing
    problems = _image_arch_problems(cfg.forge, section.images)
    forge_host = cfg.hosts_with("gitlab")
    product = {"gitlab": "GitLab", "gitea": "Gitea"}[cfg.forge]
    if len(forge_host) == 1 and forge_host[0].arch not in section.images:
        problems.append(
            Problem(
                f"{PROJECT}:{cfg.forge}.images.{forge_host[0].arch}",
                "nothing",
                f"a pinned {product} image for {forge_host[0].arch}, the arch of host '{forge_host[0].name}'",
            )
        )
    if cfg.forge != "gitlab":
        return problems  # gitlab-runner runs only beside GitLab
    problems += _image_arch_problems("runners", cfg.runners.images)
    for arch in sorted({h.arch for h in cfg.hosts_with("runner")} - set(cfg.runners.images)):
        problems.append(
            Problem(
                f"{PROJECT}:runners.images.{arch}",
                "nothing",
                f"a pinned gitlab-runner image for the {arch} runner hosts",
            )
        )
    return problems


def check_runner_tags(cfg: StackConfig) -> list[Problem]:
    """A tag naming the other architecture would send that arch's jobs to this host."""
    problems = []
    for i, host in enumerate(cfg.hosts):
        runner = host.effective_runner
        seen: set[str] = {host.arch}
        for j, tag in enumerate(runner.tags):
            key = f"{PROJECT}:hosts[{i}].runner.tags[{j}]"
            named = [arch for arch, hint in _ARCH_HINTS.items() if hint.search(tag) and arch != host.arch]
            if named and not runner.multiarch:
                problems.append(
                    Problem(
                        key,
                        show(tag),
                        f"a tag that names no other architecture: this host is {host.arch}, and jobs tagged "
                        f"{named[0]} would run here on the wrong CPU (the {host.arch} tag is added by itself; "
                        "runner.multiarch: true runs the other arch's jobs under QEMU and allows it)",
                    )
                )
            elif tag in seen:
                problems.append(
                    Problem(key, show(tag), f"each tag once (the architecture tag {host.arch} is added by itself)")
                )
            seen.add(tag)
    return problems
