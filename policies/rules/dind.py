"""docker-in-docker reached over TLS (issue 21): a runner whose jobs can run ``docker:dind``
(privileged) shares dind's client certificates with the job, and nothing in its config
turns dind's TLS off.

docker:dind listens on 2376 with TLS when ``DOCKER_TLS_CERTDIR`` is set (the image's
default, ``/certs``) and writes the client certificates to ``/certs/client``; only a volume
there, shared by the job and its services, lets the job's client use them. Without it,
pipelines turn TLS off (``DOCKER_TLS_CERTDIR: ""``, ``tcp://docker:2375``) and any
container on the job network can drive the privileged daemon. What a job's own
``.gitlab-ci.yml`` sets is outside the stack and unchecked here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs
from pulumi_policy.proxy import UnknownValueError

from ._props import _kind, _true
from .runner_config import _docker_settings, _folded_strings, _values
from .runners import _runner_entries, runner_documents

__all__ = ["CERTS_CLIENT", "dind_tls_problems", "runner_dind_tls"]

CERTS_CLIENT = "/certs/client"  # components/render/runner_config.py DIND_CERTS_CLIENT
_PLAIN_DOCKER_HOST = re.compile(r"^tcp://[^/]*:2375/?$", re.IGNORECASE)


def _destination(spec: str) -> str:
    """A docker volume spec's path in the container: ``DEST``, ``SRC:DEST`` or ``SRC:DEST:MODE``."""
    parts = spec.split(":")
    return posixpath.normpath(parts[1] if len(parts) > 1 else parts[0])


def dind_tls_problems(runner: Mapping[str, Any]) -> list[str]:
    """How a parsed ``[[runners]]`` entry leaves docker-in-docker without TLS, each with its fix."""
    docker = _docker_settings(runner)
    if not any(_true(v) for key in ("privileged", "services_privileged") for v in _values(docker, key)):
        return []  # dind needs privileged: no dind, nothing to expose
    problems = []
    if not any(_destination(v) in (CERTS_CLIENT, "/certs") for v in _values(docker, "volumes")):
        problems.append(
            f"runs privileged jobs (docker-in-docker) without a {CERTS_CLIENT} volume, so jobs cannot reach "
            f"dind over TLS: add {CERTS_CLIENT!r} to [runners.docker] volumes (dind writes its client "
            "certificates there with DOCKER_TLS_CERTDIR=/certs; jobs use DOCKER_HOST=tcp://docker:2376)"
        )
    for env in _folded_strings(runner, "environment"):
        name, _, value = env.partition("=")
        if name.strip() == "DOCKER_TLS_CERTDIR" and not value.strip().strip("\"'"):
            problems.append(
                f"sets {env!r} for every job and service, which starts dind without TLS on 2375: remove it "
                "(docker:dind's default /certs gives TLS on 2376)"
            )
        elif name.strip() == "DOCKER_HOST" and _PLAIN_DOCKER_HOST.match(value.strip()):
            problems.append(
                f"sets {env!r}, dind's plain-text port: use tcp://docker:2376 with DOCKER_TLS_CERTDIR=/certs "
                "and DOCKER_TLS_VERIFY=1"
            )
    return problems


def runner_dind_tls(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every runner config.toml a resource ships: privileged runners share /certs/client and keep TLS on."""
    try:
        for path, document, _ in runner_documents(args):
            for i, runner in enumerate(_runner_entries(document or {})):
                names = _folded_strings(runner, "name")
                name = names[0] if names else f"runners[{i}]"
                for problem in dind_tls_problems(runner):
                    where = f"{_kind(args.resource_type)} '{args.name}' ({path})"
                    report_violation(f"runner '{name}' in {where} {problem}", None)
    except UnknownValueError:
        return  # unknown during preview: checked when the update knows it
