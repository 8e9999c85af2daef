"""``python -m tools.imagecheck REF --platform linux/amd64,linux/arm64``: does a pushed image
index hold exactly the platforms that were built?

Reads the manifest of REF from the registry over the HTTP API v2 (``registry``), with the
Accept headers of image indexes and manifests and the registry's auth (a bearer token
from its ``realm``, as GitLab's registry asks, or basic auth, as the lab's stand-in asks),
and compares its platforms with those asked for (``index``): a platform not asked for
fails, ``unknown/unknown`` attestation entries (buildx provenance and SBOM) included, and
so does a missing one. It reads, never writes. docs/runners.md, "Clean multi-arch pushes".
"""

from tools.imagecheck.index import Platform, index_problems, parse_platforms
from tools.imagecheck.registry import Credentials, ImageRef, RegistryError, fetch_manifest, parse_ref

__all__ = [
    "Credentials",
    "ImageRef",
    "Platform",
    "RegistryError",
    "fetch_manifest",
    "index_problems",
    "parse_platforms",
    "parse_ref",
]
