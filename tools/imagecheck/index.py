"""An image index's platforms against the platforms asked for (pure: document in, problems out)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["INDEX_TYPES", "MANIFEST_TYPES", "Platform", "index_problems", "parse_platforms", "platforms_of"]

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# buildx marks its provenance/SBOM manifests so (docker/buildx, docs "attestation storage").
ATTESTATION = ("vnd.docker.reference.type", "attestation-manifest")
# containerd's platforms.Normalize: the names a platform goes by; arm64/v8 is arm64, arm is arm/v7.
_ARCH_ALIASES = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/arm64`` or ``linux/arm/v7``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r}: expected os/architecture[/variant], e.g. linux/arm64")
        return cls(*parts).normalized()

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture.lower(), self.architecture.lower())
        variant = self.variant.lower()
        if arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        elif arch == "arm" and variant in ("", "7"):
            variant = "v7"
        return Platform(self.os.lower(), arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platforms(texts: Iterable[str]) -> list[Platform]:
    """Comma-separated lists, as ``docker buildx build --platform`` takes them."""
    found = [Platform.parse(t) for text in texts for t in text.split(",") if t.strip()]
    if not found:
        raise ValueError("--platform: at least one platform, e.g. linux/amd64,linux/arm64")
    return sorted(set(found))


@dataclass(frozen=True)
class Entry:
    platform: Platform
    digest: str
    attestation: bool


def platforms_of(index: Mapping[str, Any]) -> list[Entry]:
    """Each manifest an index lists, with its platform (``unknown/unknown`` when it has none)."""
    entries = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        platform = Platform(
            str(p.get("os") or "unknown"), str(p.get("architecture") or "unknown"), str(p.get("variant") or "")
        )
        annotations = m.get("annotations") or {}
        entries.append(
            Entry(platform.normalized(), str(m.get("digest", "")), annotations.get(ATTESTATION[0]) == ATTESTATION[1])
        )
    return entries


def index_problems(index: Mapping[str, Any], wanted: Sequence[Platform]) -> list[str]:
    """Why ``index`` is not exactly ``wanted``: an entry not asked for, a platform missing, a duplicate."""
    problems = []
    entries = platforms_of(index)
    seen: dict[Platform, int] = {}
    for entry in entries:
        seen[entry.platform] = seen.get(entry.platform, 0) + 1
        if entry.platform in wanted:
            continue
        if entry.attestation or entry.platform == Platform("unknown", "unknown"):
            problems.append(
                f"{entry.platform} ({entry.digest}): an attestation manifest (buildx provenance/SBOM), not a platform "
                "that was built: build with --provenance=false --sbom=false"
            )
        else:
            problems.append(f"{entry.platform} ({entry.digest}): a platform that was not asked for")
    for platform in wanted:
        if platform not in seen:
            problems.append(f"{platform}: asked for, but the index has no manifest for it")
        elif seen[platform] > 1:
            problems.append(f"{platform}: {seen[platform]} manifests for one platform")
    return problems
