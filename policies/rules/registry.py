"""The container registry is served and reached over TLS (7)."""

from __future__ import annotations

import json
import re

from pulumi_policy import ReportViolation, ResourceValidationArgs

from ._props import CONTAINER, DOCKER_PROVIDER, REMOTE_TYPES, _is_map, _is_seq, _kind, _texts

# --- 7. the registry is served over TLS ---------------------------------------------

_PLAIN_REGISTRY_URL = re.compile(r"registry_external_url\b[\s(]*['\"]http://")
_INSECURE_REGISTRIES = re.compile(r"[\"']insecure-registries[\"']\s*:\s*\[\s*[\"']")
_INSECURE_FLAG = re.compile(r"--insecure-registry\b")


def registry_tls_only(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_PROVIDER:
        auths = args.props.get("registryAuth")
        if isinstance(auths, str):
            try:
                auths = json.loads(auths)
            except ValueError:
                auths = []
        for auth in auths if _is_seq(auths) else []:
            address = auth.get("address") if _is_map(auth) else None
            if isinstance(address, str) and address.lower().startswith("http://"):
                report_violation(
                    f"docker provider '{args.name}' logs in to registry {address} over plain HTTP: "
                    "use the registry's https:// address (GitLab's registry is served over TLS)",
                    None,
                )
        return
    if args.resource_type not in REMOTE_TYPES and args.resource_type != CONTAINER:
        return
    where = _kind(args.resource_type)
    for path, text in _texts(args.resource_type, args.props):
        if _PLAIN_REGISTRY_URL.search(text):
            report_violation(
                f"{where} '{args.name}' ({path}) sets registry_external_url to an http:// URL, serving the "
                "registry in plain text: use https:// (gitlab.tls own-ca or letsencrypt)",
                None,
            )
        if _INSECURE_REGISTRIES.search(text) or _INSECURE_FLAG.search(text):
            report_violation(
                f"{where} '{args.name}' ({path}) configures a docker daemon with insecure-registries, which "
                "pulls and pushes without TLS: remove it and trust the stack CA in /etc/docker/certs.d instead",
                None,
            )
