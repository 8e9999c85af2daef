"""RunnerRegistration: each runner created through GitLab's API, with no token written by hand.

What it registers (``<forge>`` is the forge's kind, ``gitlab``), in order:

* ``<forge>-api-token-value``: ``RandomPassword``, 20 letters and digits (GitLab's
  programmatic token: 20 characters), secret. Replacing it rotates the API token.
* ``<forge>-api-token``: a command on the GitLab host (components/scripts/gitlab-api-token.sh):
  waits, up to ``runners.api_ready_timeout_seconds``, for the GitLab container's health
  check to say healthy, then seeds the token with ``gitlab-rails runner`` and
  gitlab-api-token.rb, the value on stdin only; delete revokes it.
* ``<forge>-api-ca`` (own-ca only): a local command writing the stack CA to the file the
  provider's ``cacertFile`` names (:func:`ca_file_path`).
* ``<forge>-api``: the ``pulumi-gitlab`` provider on ``runners.api_url`` (default the
  GitLab URL + ``/api/v4/``), with that token. ``earlyAuthCheck`` is off: its GET /user
  would need the read_user scope and a GitLab already up when the provider is configured.
* per runner host without a ``runner_tokens`` override, ``<host>-runner-registration``: a
  ``gitlab.UserRunner`` (instance runner unless ``runner.scope`` says group or project)
  with the arch tag and ``runner.tags``, untagged off, ``access_level`` ref_protected when
  the runner is protected, privileged or hands jobs the docker socket, ``locked`` and
  ``maximum_timeout`` from config. Its ``token`` (secret) goes into the host's config.toml.
* per runner host with an override, ``<host>-runner-token-check``: a local command
  (components/scripts/gitlab_runner_token_check.py) that asks GitLab for the token's
  runner and its access_level and fails, naming the runner, when the config needs it
  protected and GitLab does not hold it so. The runner container waits for it.

Scopes of the API token: ``create_runner`` (POST /user/runners) and ``manage_runner``
(GET/PUT/DELETE /runners/:id), so GitLab 17.1 or later (docs/runners.md).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_gitlab as gitlab
import pulumi_random as random
from pulumi_command import local

from components.config import Host as HostConfig
from components.config import RunnerSettings, StackConfig
from components.forge import Forge
from components.gitlab import CONTAINER_NAME
from components.hosts import Host
from components.scripts import script, staged_command, unstaged_command

__all__ = [
    "API_TOKEN_LENGTH",
    "RunnerRegistration",
    "RunnerRegistrationArgs",
    "ca_file_path",
    "runner_description",
    "runner_type",
]

API_TOKEN_LENGTH = 20  # GitLab: a token set with set_token must be 20 characters
_STAGE = "gitlab-api-token"


def ca_file_path(stack: str) -> str:
    """Where the deployer keeps the stack CA for the provider (own-ca): in the project, per stack."""
    return str(Path.cwd() / ".forgeway" / stack / "gitlab-ca.pem")


def runner_type(settings: RunnerSettings) -> str:
    """GitLab's runner_type for ``runner.scope``."""
    return f"{settings.scope}_type"


def runner_description(host: HostConfig) -> str:
    """The runner's description in GitLab: it names the host."""
    return f"forgeway runner on {host.name} ({host.arch})"


def _why_protected(settings: RunnerSettings) -> str:
    reasons = [
        what
        for what, on in (
            ("privileged", settings.privileged),
            ("share the docker socket with jobs", settings.insecure_docker_socket_in_jobs),
            ("protected", settings.protected),
        )
        if on
    ]
    return " and ".join(reasons)


@dataclass(frozen=True)
class RunnerRegistrationArgs:
    """The forge and its host, the API the deployer reaches, and the runner hosts."""

    forge: Forge  # its kind names the children; its host runs GitLab
    host: Host  # the forge's host: the token is seeded there
    gitlab: pulumi.Resource  # the GitLab container: the seed waits for it
    container: str  # its docker name (forgeway-gitlab)
    api_url: str  # https://.../api/v4/ (StackConfig.gitlab_api_url)
    ready_timeout_seconds: int  # runners.api_ready_timeout_seconds
    runner_hosts: Sequence[HostConfig]  # the hosts with role runner
    hand_tokens: Mapping[str, pulumi.Output[str]]  # runner_tokens overrides, by host (secret)
    ca_pem: pulumi.Output[str] | None = None  # own-ca: the stack CA
    ca_file: str | None = None  # own-ca: where the provider reads it (ca_file_path)
    # The deployer's way to the API (the VPS's forwarding, after the tunnel): the provider
    # waits for it, so an `up` creates runners only once it exists and a destroy deletes
    # them in GitLab before it goes.
    api_path: Sequence[pulumi.Resource] = ()

    @classmethod
    def from_config(  # noqa: PLR0917 (what __main__ has, in the order it has it)
        cls,
        cfg: StackConfig,
        forge: Forge,
        hosts: Mapping[str, Host],
        gitlab_container: pulumi.Resource,
        hand_tokens: Mapping[str, pulumi.Output[str]],
        ca_pem: pulumi.Output[str] | None,
        api_path: Sequence[pulumi.Resource],
    ) -> RunnerRegistrationArgs:
        """The fields from the config: the forge's host, the API URL, the runner hosts."""
        return cls(
            forge=forge,
            host=hosts[forge.host],
            gitlab=gitlab_container,
            container=CONTAINER_NAME,
            api_url=cfg.gitlab_api_url,
            ready_timeout_seconds=cfg.runners.api_ready_timeout_seconds,
            runner_hosts=cfg.hosts_with("runner"),
            hand_tokens=hand_tokens,
            ca_pem=ca_pem,
            ca_file=ca_file_path(pulumi.get_stack()) if ca_pem is not None else None,
            api_path=api_path,
        )


class RunnerRegistration(pulumi.ComponentResource):
    """The API token, the gitlab provider, and per runner host its UserRunner or token check."""

    provider: gitlab.Provider | None  # None without runner hosts: no API token is made then
    runners: dict[str, gitlab.UserRunner]  # by host, the runners created through the API
    checks: dict[str, local.Command]  # by host, the runner_tokens overrides' checks
    tokens: dict[str, pulumi.Output[str]]  # by host, the runner's authentication token (secret)
    ready: dict[str, list[pulumi.Resource]]  # by host, what its runner container waits for
    names: dict[str, str]  # by host, the logical name of its UserRunner or token check

    def __init__(self, name: str, args: RunnerRegistrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgeway:runner_registration:RunnerRegistration", name, None, opts)
        self.provider, self.runners, self.checks, self.tokens, self.ready, self.names = None, {}, {}, {}, {}, {}
        if not args.runner_hosts:  # nothing to register: no admin token lies in GitLab unused
            self.register_outputs({"api_url": args.api_url, "access_levels": {}, "created": [], "checked": []})
            return
        prefix = args.forge.kind
        child = pulumi.ResourceOptions(parent=self)
        value = random.RandomPassword(
            f"{prefix}-api-token-value",
            length=API_TOKEN_LENGTH,
            special=False,
            min_lower=2,
            min_upper=2,
            min_numeric=2,
            opts=child,
        )
        token: pulumi.Output[str] = pulumi.Output.secret(value.result)
        files = {name: script(name) for name in ("gitlab-api-token.sh", "gitlab-api-token.rb")}
        seed = args.host.command(
            f"{prefix}-api-token",
            parent=self,
            create=staged_command(
                _STAGE, files, "gitlab-api-token.sh", ["create", args.container, str(args.ready_timeout_seconds)]
            ),
            delete=unstaged_command(
                _STAGE, staged_command(_STAGE, files, "gitlab-api-token.sh", ["revoke", args.container, "120"])
            ),
            stdin=token,
            depends_on=[args.gitlab],
            additional_secret_outputs=["stdin"],
        )
        after: list[pulumi.Resource] = [seed, *args.api_path]
        ca_file: pulumi.Output[str] | None = None
        if args.ca_pem is not None and args.ca_file is not None:
            ca = local.Command(
                f"{prefix}-api-ca",
                create='umask 022 && mkdir -p "$(dirname "$FORGEWAY_CA_FILE")" && cat >"$FORGEWAY_CA_FILE"',
                delete='rm -f "$FORGEWAY_CA_FILE"',
                stdin=args.ca_pem,
                environment={"FORGEWAY_CA_FILE": args.ca_file},
                opts=child,
            )
            after.append(ca)
            path = args.ca_file
            ca_file = ca.stdout.apply(lambda _: path)  # known once the file is written
        # The token reaches the provider only once GitLab holds it (the seed's stdout).
        api_token: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(token, seed.stdout).apply(lambda v: str(v[0]))
        )
        self.provider = gitlab.Provider(
            f"{prefix}-api",
            base_url=args.api_url,
            token=api_token,
            cacert_file=ca_file,
            early_auth_check=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=after, additional_secret_outputs=["token"]),
        )
        for host in args.runner_hosts:
            settings = host.effective_runner
            if host.name in args.hand_tokens:
                check = self._check(host, settings, args, token, after)
                self.checks[host.name] = check
                self.tokens[host.name] = pulumi.Output.secret(args.hand_tokens[host.name])
                self.ready[host.name] = [check]
                self.names[host.name] = f"{host.name}-runner-token-check"
                continue
            runner = gitlab.UserRunner(
                f"{host.name}-runner-registration",
                runner_type=runner_type(settings),
                group_id=settings.group_id,
                project_id=settings.project_id,
                description=runner_description(host),
                tag_lists=[host.arch, *settings.tags],
                untagged=False,
                access_level=settings.access_level,
                locked=settings.locked,
                maximum_timeout=settings.maximum_timeout,
                paused=False,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
            self.runners[host.name] = runner
            self.tokens[host.name] = pulumi.Output.secret(runner.token)
            self.ready[host.name] = [runner]
            self.names[host.name] = f"{host.name}-runner-registration"
        self.register_outputs(
            {
                "api_url": args.api_url,
                "access_levels": {h.name: h.effective_runner.access_level for h in args.runner_hosts},
                "created": sorted(self.runners),
                "checked": sorted(self.checks),
            }
        )

    def _check(
        self,
        host: HostConfig,
        settings: RunnerSettings,
        args: RunnerRegistrationArgs,
        admin_token: pulumi.Output[str],
        after: Sequence[pulumi.Resource],
    ) -> local.Command:
        """The override's check: its runner as GitLab holds it, before the runner container."""
        secrets: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.hand_tokens[host.name], admin_token).apply(
                lambda v: json.dumps({"runner_token": v[0], "admin_token": v[1]})
            )
        )
        environment = {
            "FORGEWAY_API_URL": args.api_url,
            "FORGEWAY_REQUIRE_PROTECTED": "true" if settings.needs_protection else "false",
        }
        if args.ca_file is not None:
            environment["FORGEWAY_CA_FILE"] = args.ca_file
        return local.Command(
            f"{host.name}-runner-token-check",
            # The host and the reason as arguments (not secret): a refusal names the runner,
            # and the provider redacts environment values in its errors.
            create=shlex.join(
                ["python3", "-c", script("gitlab_runner_token_check.py"), host.name, _why_protected(settings)]
            ),
            stdin=secrets,
            environment=environment,
            # Checked again whenever what it checks changes (the token, the requirement).
            triggers=[environment["FORGEWAY_REQUIRE_PROTECTED"], settings.scope],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after), additional_secret_outputs=["stdin"]),
        )
