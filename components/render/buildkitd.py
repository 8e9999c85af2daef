"""A ``buildkitd.toml`` that trusts the stack CA for forgeway's registry (pure: no Pulumi, no I/O).

BuildKit does not read ``/etc/docker/certs.d``: a ``docker buildx`` builder of the
``docker-container`` driver pushes with its own TLS settings. Given this file
(``docker buildx create --buildkitd-config FILE``; ``--config`` before buildx 0.13),
buildx copies every ``ca`` it names into the builder container, so ``buildx build
--push`` to the registry verifies the registry's certificate with the stack CA.

The CA paths are where a job finds them. A job's view comes from one host directory,
:data:`JOBS_DIR`, put there by docker-client-up.sh (components/registry.py) and bound
read-only by the runner (components/render/runner_config.py): its ``certs.d`` (each
endpoint's ``<host>:<port>/ca.crt``, only forgeway's CA: never the host's own certs.d,
which may hold client keys) as the job's ``/etc/docker/certs.d``, and this file as
:data:`JOB_PATH`. Directories, not files: a docker volume spec cannot hold the ``:`` of
``<host>:<port>``.

Attestations (provenance, SBOM) are asked for by the buildx client, not by buildkitd: no
setting of this file adds or removes them. The file says so, and names the flags that keep
a pushed index to the platforms built (``--provenance=false --sbom=false``; docs/runners.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from components.render.toml_text import toml_str

__all__ = ["JOBS_DIR", "JOB_CERTS_D", "JOB_PATH", "NO_ATTESTATIONS", "ca_path", "render_buildkitd_toml"]

# On every docker host with own-ca (relative to /, as docker_client.py's manifest paths):
# JOBS_DIR/certs.d/<host>:<port>/ca.crt and JOBS_DIR/buildkitd.toml.
JOBS_DIR = "etc/docker/forgeway-jobs"
# Where jobs (and their services) see them.
JOB_CERTS_D = "/etc/docker/certs.d"
JOB_PATH = "/etc/forgeway/buildkitd.toml"
# buildx build flags for an index of exactly the platforms built: no unknown/unknown entries.
NO_ATTESTATIONS = ("--provenance=false", "--sbom=false")


def ca_path(endpoint: str) -> str:
    """docker's certs.d file for ``host:port``, as a job sees it."""
    return f"{JOB_CERTS_D}/{endpoint}/ca.crt"


def render_buildkitd_toml(endpoints: Sequence[str]) -> str:
    if not endpoints:
        raise ValueError("endpoints: at least one registry endpoint (host:port) is needed")
    lines = [
        "# Rendered by forgeway (components/render/buildkitd.py): BuildKit trusts the stack CA",
        f"# for the registry. In a job: docker buildx create --use --buildkitd-config {JOB_PATH}",
        "# Attestations are the client's choice, not buildkitd's: for an index of exactly the",
        f"# platforms built, docker buildx build {' '.join(NO_ATTESTATIONS)} (docs/runners.md).",
    ]
    for endpoint in sorted(set(endpoints)):
        lines += ["", f"[registry.{toml_str(endpoint)}]", f"  ca = [{toml_str(ca_path(endpoint))}]"]
    return "\n".join(lines) + "\n"
