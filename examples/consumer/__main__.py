"""consumer: another Pulumi project that reads forgeway's stack outputs.

It creates nothing. It reads the outputs contract (forgeway README, "Stack outputs
contract") with a StackReference and turns it into what a laptop and a project's CI
need, exported as this stack's own outputs:

- ``docker_client``: trust and log in to forgeway's registry from a laptop;
- ``ci_variables``: CI/CD variables for a project, the root password kept secret;
- ``gitlab_ci_templates``: hidden ``.gitlab-ci.yml`` jobs that pick a runner architecture.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

# The CI variable that carries forgeway's secret output: a masked, protected variable.
PASSWORD_VARIABLE = "FORGEWAY_GITLAB_ROOT_PASSWORD"  # noqa: S105 (a variable name, not a password)


def certs_d_path(registry: str) -> str:
    """Where dockerd looks for the CA of a registry (host:port)."""
    return f"/etc/docker/certs.d/{registry}/ca.crt"


def docker_login_command(registry: str, user: str) -> str:
    """The login command; the password comes on stdin, never on a command line."""
    return f"docker login {shlex.quote(registry)} --username {shlex.quote(user)} --password-stdin"


def docker_client(registry: str, ca_certificate: str | None, user: str) -> dict[str, str]:
    """A laptop's docker setup: the CA file (own CA only) and the login command."""
    login = docker_login_command(registry, user)
    client = {"registry": registry, "login": login}
    script = ["#!/bin/sh", "# stdin: the registry password (forgeway's gitlab_root_password)", "set -eu"]
    if ca_certificate:
        # A Let's Encrypt registry needs nothing here: its chain is trusted already.
        path = certs_d_path(registry)
        client |= {"ca_crt_path": path, "ca_crt": ca_certificate}
        script += [
            f"sudo install -D -m 0644 /dev/stdin {shlex.quote(path)} <<'PEM'",
            ca_certificate.rstrip("\n"),
            "PEM",
        ]
    script.append(login)
    client["setup_script"] = "\n".join(script) + "\n"
    return client


def runner_tags(runners: Mapping[str, Sequence[str]]) -> list[str]:
    """forgeway tags every runner with its architecture: the arches that have runners."""
    return sorted(arch for arch, hosts in runners.items() if hosts)


def gitlab_ci_templates(runners: Mapping[str, Sequence[str]]) -> str:
    """Hidden jobs to `extends:`, one per architecture that has a runner."""
    lines = ["# generated from forgeway's `runners` output"]
    for arch in runner_tags(runners):
        lines += [f".forgeway-{arch}:", f"  tags: [{arch}]  # {', '.join(runners[arch])}"]
    return "\n".join(lines) + "\n"


config = pulumi.Config()
user = config.get("registry_user") or "root"
forgeway = pulumi.StackReference("forgeway", stack_name=config.require("forgeway_stack"))

# Outputs the contract promises always: require_output fails the run if one is gone.
gitlab_url = forgeway.require_output("gitlab_url")
registry = forgeway.require_output("registry")  # this project needs the registry enabled
runners = forgeway.require_output("runners")
# Secret in the forgeway stack, so secret here: the SDK reads secretOutputNames.
root_password = forgeway.require_output("gitlab_root_password")
# Present only with gitlab.tls=own-ca: get_output gives None otherwise.
ca_certificate = forgeway.get_output("ca_certificate")

pulumi.export(
    "docker_client",
    pulumi.Output.all(registry, ca_certificate).apply(lambda a: docker_client(a[0], a[1], user)),
)
# One Output per variable, not one Output of a map: the password alone is secret (a
# map built in one apply would turn secret as a whole and hide the plain values).
ci_variables: dict[str, Any] = {
    "FORGEWAY_GITLAB_URL": gitlab_url,
    "FORGEWAY_REGISTRY": registry,
    "FORGEWAY_RUNNER_TAGS": runners.apply(lambda r: ",".join(runner_tags(r))),
    "FORGEWAY_CA_CERT": ca_certificate.apply(lambda pem: pem or ""),  # empty: a public CA
    PASSWORD_VARIABLE: root_password,
}
pulumi.export("ci_variables", ci_variables)
pulumi.export("gitlab_ci_templates", runners.apply(gitlab_ci_templates))
