"""Images are pinned (2), and an image's platform is its host's architecture (3)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

from ._props import COMMAND, CONTAINER, HOST, REMOTE_IMAGE, _is_seq, _kind

# --- 2. images are pinned ----------------------------------------------------------

_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FLOATING_TAGS = frozenset(
    {
        "latest",
        "stable",
        "edge",
        "nightly",
        "rc",
        "main",
        "master",
        "lts",
        "beta",
        "alpha",
        "dev",
        "develop",
        "current",
        "mainline",
        "testing",
        "unstable",
        "canary",
        "next",
    }
)


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it is (digest, image id, version tag)."""
    ref = ref.strip()
    if _IMAGE_ID.fullmatch(ref) or _DIGEST.search(ref):
        return None
    if "@" in ref:
        return "its digest is not a sha256 digest"
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or "/" in tag:
        return "it has no tag, so it floats to 'latest'"
    low = tag.lower()
    checks = (
        (
            low in _FLOATING_TAGS or "latest" in re.split(r"[-_.]", low),
            f"tag '{tag}' is an alias that moves to new releases",
        ),
        (not re.search(r"\d", tag), f"tag '{tag}' names no version"),
        (
            re.fullmatch(r"v?\d+", low) is not None,
            f"tag '{tag}' names only a major version, which moves with every release",
        ),
    )
    return next((problem for failed, problem in checks if failed), None)


def images_pinned(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == REMOTE_IMAGE:
        field, ref = "name", args.props.get("name")
    elif args.resource_type == CONTAINER:
        field, ref = "image", args.props.get("image")
    else:
        return
    if not isinstance(ref, str):
        return
    problem = image_pin_problem(ref)
    if problem:
        report_violation(
            f"{_kind(args.resource_type)} '{args.name}': {field} '{ref}' is not pinned: {problem}; "
            "pin a fixed version tag (e.g. gitlab/gitlab-ce:18.5.1-ce.0) or a digest (name@sha256:...)",
            None,
        )


# --- 3. an image's platform is its host's architecture ----------------------------

_ARCH_ALIASES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64"}


def _arch(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return _ARCH_ALIASES.get(value.strip().lower(), value.strip().lower())


def _platform_arch(platform: str) -> str | None:
    parts = platform.strip().lower().split("/")
    return _arch(parts[1]) if len(parts) >= 2 else _arch(parts[0])


@dataclass(frozen=True)
class _HostArch:
    host: str
    arch: str | None


def _host_arch(provider: Any, resources: Sequence[Any]) -> _HostArch | None:
    """The host behind a docker provider and its architecture.

    First the ``forgeway:hosts:Host`` parent's registered ``arch`` output (what a stack
    policy sees under the engine), then the host's ``<host>-arch`` command, whose
    ``triggers[0]`` is the architecture the host was checked to have.
    """
    by_urn = {r.urn: r for r in resources}
    provider_resource = by_urn.get(provider.urn)
    parent = getattr(provider_resource, "parent", None)
    host_name: str | None = None
    if parent is not None and parent.resource_type == HOST:
        host_name = parent.name
        arch = _arch(parent.props.get("arch"))
        if arch:
            return _HostArch(parent.name, arch)
    elif provider.name.endswith("-docker"):
        host_name = provider.name.removesuffix("-docker")
    if host_name is None:
        return None
    for r in resources:
        if r.resource_type == COMMAND and r.name == f"{host_name}-arch":
            triggers = r.props.get("triggers")
            if _is_seq(triggers) and len(triggers) > 0:
                return _HostArch(host_name, _arch(triggers[0]))
    return _HostArch(host_name, None)


def _check_image_platform(r: Any, resources: Sequence[Any], report_violation: ReportViolation) -> None:
    if r.resource_type not in (REMOTE_IMAGE, CONTAINER):
        return
    platform = r.props.get("platform")
    if r.resource_type == CONTAINER and not platform:
        return  # a container runs what its image is; the RemoteImage is checked
    kind = _kind(r.resource_type)
    found = _host_arch(r.provider, resources) if r.provider is not None else None
    if found is None or found.arch is None:
        via = f"provider '{r.provider.name}'" if r.provider is not None else "the default docker provider"
        report_violation(
            f"{kind} '{r.name}' is pulled through {via}, whose host architecture is unknown: "
            "pull images through a Host's docker provider (`<host>-docker`, child of a forgeway:hosts:Host "
            "that registers `arch` and has a `<host>-arch` check)",
            r.urn,
        )
        return
    want = f"linux/{found.arch}"
    if not isinstance(platform, str) or not platform.strip():
        report_violation(
            f"{kind} '{r.name}' has no platform, so the daemon picks one: "
            f"set platform='{want}' (host '{found.host}' is {found.arch})",
            r.urn,
        )
    elif _platform_arch(platform) != found.arch:
        report_violation(
            f"{kind} '{r.name}' has platform '{platform}' but runs on host '{found.host}', "
            f"which is {found.arch}: set platform='{want}' and choose the {found.arch} image",
            r.urn,
        )


def image_platform_matches_host(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for r in args.resources:
        try:
            _check_image_platform(r, args.resources, report_violation)
        except UnknownValueError:
            continue  # unknown during preview: checked when the update knows it
