"""The lab applier's pulumi-gitlab emulation (tools/applier/apply.py): the provider and
``gitlab:index/userRunner:UserRunner``, through GitLab's REST API (tools/applier/gitlab_api.py:
the provider's HTTPS client, its inputs, and the lab's resolve map that stands in for DNS).

Checked against pulumi-gitlab 10.4.0 (the installed SDK: ``pulumi_gitlab/provider.py`` and
``user_runner.py``, identical for UserRunner to pulumi/pulumi-gitlab master 3bd7426e, which
bridges terraform-provider-gitlab v19.2.1; 10.4.0 itself was published after that commit, so
it bridges v19.2.1 or a later v19) and terraform-provider-gitlab v19
``internal/provider/resource_gitlab_user_runner.go``:

- ``pulumi:providers:gitlab``: configuring it runs the early auth check (``earlyAuthCheck``,
  default true: ``GET {baseUrl}user``, ``api/config.go``), on create and update, and once per
  run before the first runner request through it. Not emulated: the engine configuring an
  unchanged provider that no changed resource uses.
- ``UserRunner``: create is ``POST {baseUrl}user/runners`` (``runner_type``, ``group_id``,
  ``project_id``, ``description``, ``paused``, ``locked``, ``run_untagged``, ``tag_list``,
  ``access_level``, ``maximum_timeout`` when above 0, ``maintenance_note``; a JSON body as
  client-go sends it), then ``GET runners/:id`` (the provider's ``modelToStateModel``); the id
  is GitLab's runner id as a string and ``token`` (``glrt-…``, only known from create) is a
  secret output. Update is ``PUT runners/:id`` with the same fields (not the type or ids).
  Delete is ``DELETE runners/:id``; ANY error fails the delete, a 404 included (the
  provider's Delete adds "Unable to delete runner" on every error: run ``refresh`` first,
  whose Read drops a runner GitLab no longer has). Replace-forcing inputs: ``runnerType``,
  ``groupId``, ``projectId`` (``RequiresReplace`` plan modifiers in the schema); everything
  else updates in place. A replacement is created before the old runner is deleted (the
  engine's default: pulumi-gitlab's provider/resources.go sets no DeleteBeforeReplace).
  ``ValidateConfig``'s checks (group_type needs groupId and no projectId, project_type the
  other way round, instance_type neither; maximumTimeout not 0 and at least 600; the
  accessLevel and runnerType values) fail before any request. Read (refresh) is
  ``GET runners/:id``: a 404 drops the runner from the state; otherwise description, paused,
  locked, untagged (``run_untagged``), tagLists (a set), accessLevel, maximumTimeout and
  maintenanceNote are read back (not groupId/projectId in v19).

Secrets: the provider's ``token`` and the runner's ``token`` are returned (and so recorded in
the state's outputs) wrapped in Pulumi's secret marker, as the SDKs' ``additional_secret_outputs``
makes the engine hold them (the mock monitor does not); no request, response body or error
that reaches a log carries either: errors are redacted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tools.applier.docker_api import redact
from tools.applier.gitlab_api import GITLAB_PROVIDER, GitLabClient, GitLabError, config_value, plain, secret
from tools.applier.state import ApplyError, Entry

__all__ = ["GITLAB_PROVIDER", "GITLAB_TYPES", "RUNNER_REPLACE_ON", "USER_RUNNER", "GitLab", "read_runner"]

USER_RUNNER = "gitlab:index/userRunner:UserRunner"
GITLAB_TYPES = (GITLAB_PROVIDER, USER_RUNNER)
# pulumi_gitlab 10.4.0 user_runner.py: UserRunnerArgs.
_RUNNER_INPUTS = {
    "runnerType", "groupId", "projectId", "description", "paused", "locked", "untagged", "tagLists",
    "accessLevel", "maximumTimeout", "maintenanceNote",
}  # fmt: skip
# resource_gitlab_user_runner.go: runner_type, group_id, project_id carry RequiresReplace().
RUNNER_REPLACE_ON = {"runnerType", "groupId", "projectId"}
_RUNNER_TYPES = ("instance_type", "group_type", "project_type")
_ACCESS_LEVELS = ("not_protected", "ref_protected")
# Wire name -> the API's field, for create and update (the options structs of client-go).
_API_FIELDS = {
    "description": "description",
    "paused": "paused",
    "locked": "locked",
    "untagged": "run_untagged",
    "tagLists": "tag_list",
    "accessLevel": "access_level",
    "maximumTimeout": "maximum_timeout",
    "maintenanceNote": "maintenance_note",
}


def _runner_options(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The set inputs as the API's fields (client-go's options: nil ones are not sent)."""
    out: dict[str, Any] = {}
    for key, field in _API_FIELDS.items():
        value = inputs.get(key)
        if value is None:
            continue
        if key == "maximumTimeout" and int(value) <= 0:
            continue  # the provider leaves out a timeout of 0
        if key == "maximumTimeout":
            out[field] = int(value)  # protobuf numbers arrive as floats
        elif key == "tagLists":
            out[field] = [str(t) for t in value]
        else:
            out[field] = value
    return out


def _validate_runner(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The set inputs, after the schema's validators and ValidateConfig."""
    given = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(given) - _RUNNER_INPUTS)
    if unknown:
        raise ValueError(f"the lab applier does not emulate {', '.join(unknown)} of {USER_RUNNER}")
    kind = str(given.get("runnerType") or "")
    if kind.lower() not in _RUNNER_TYPES:
        raise ValueError(f"runnerType {kind!r}: expected one of {', '.join(_RUNNER_TYPES)}")
    level = given.get("accessLevel")
    if level is not None and str(level).lower() not in _ACCESS_LEVELS:
        raise ValueError(f"accessLevel {level!r}: expected one of {', '.join(_ACCESS_LEVELS)}")
    timeout = given.get("maximumTimeout")
    if timeout is not None and int(timeout) == 0:
        raise ValueError('"maximum_timeout" cannot have a value of 0 configured')
    if timeout is not None and int(timeout) < 600:
        raise ValueError(f"maximumTimeout {int(timeout)}: must be at least 600 (10 minutes)")
    kind = kind.lower()
    if kind == "group_type" and ("groupId" not in given or "projectId" in given):
        raise ValueError("runnerType group_type needs groupId and no projectId")
    if kind == "project_type" and ("projectId" not in given or "groupId" in given):
        raise ValueError("runnerType project_type needs projectId and no groupId")
    if kind == "instance_type" and ("projectId" in given or "groupId" in given):
        raise ValueError("runnerType instance_type takes neither groupId nor projectId")
    return given


def read_runner(details: Mapping[str, Any]) -> dict[str, Any]:
    """``modelToStateModel``: what the provider keeps from ``GET runners/:id`` (wire names)."""
    return {
        "runnerType": details.get("runner_type") or "",
        "description": details.get("description") or "",
        "paused": bool(details.get("paused")),
        "locked": bool(details.get("locked")),
        "untagged": bool(details.get("run_untagged")),
        "accessLevel": details.get("access_level") or "",
        "maximumTimeout": int(details.get("maximum_timeout") or 0),
        "maintenanceNote": details.get("maintenance_note") or "",
        "tagLists": sorted(str(t) for t in details.get("tag_list") or []),
    }


def _settle(recorded: Mapping[str, Any], read: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded inputs with the read written in where the program set them (every
    read attribute is Optional+Computed: an unset one is never compared); tagLists is a set."""
    out = dict(recorded)
    for key, value in read.items():
        if recorded.get(key) is None:
            continue
        if key == "tagLists" and sorted(map(str, recorded[key])) == value:
            continue
        if key == "maximumTimeout" and int(recorded[key]) == value:
            continue
        out[key] = value
    return out


class GitLab:
    """The emulation for one apply: the lab's resolve map, the log, providers already checked."""

    def __init__(self, resolve: Mapping[str, str] | None, log: Callable[[str], None]) -> None:
        self.resolve = dict(resolve or {})
        self.log = log
        self._checked: set[GitLabClient] = set()
        self._lock = threading.Lock()

    def client(self, what: str, provider_inputs: Mapping[str, Any]) -> GitLabClient:
        try:
            return GitLabClient.from_provider(provider_inputs, self.resolve)
        except ValueError as exc:
            raise ApplyError(f"{what}: {exc}") from None

    def _fail(self, what: str, step: str, exc: GitLabError, secrets: list[str]) -> ApplyError:
        return ApplyError(redact(f"{what}: {step}: {exc}", secrets))

    def _auth_check(self, what: str, client: GitLabClient, provider_inputs: Mapping[str, Any]) -> None:
        """The provider's early auth check (``GET user``), once per client and run."""
        if config_value(plain(provider_inputs.get("earlyAuthCheck"))) is False:
            return
        with self._lock:
            if client in self._checked:
                return
        try:
            client.request("GET", "user")
        except GitLabError as exc:
            raise self._fail(what, "the provider's early auth check failed", exc, [client.token]) from None
        with self._lock:
            self._checked.add(client)

    # -- the applier's steps --

    def create(
        self, typ: str, name: str, inputs: Mapping[str, Any], provider_inputs: Mapping[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        what = f"{typ} {name}"
        if typ == GITLAB_PROVIDER:
            client = self.client(what, inputs)
            self._auth_check(what, client, inputs)
            return None, self._provider_outputs(inputs)
        client = self._runner_client(what, inputs, provider_inputs)
        body: dict[str, Any] = {"runner_type": str(inputs["runnerType"]).lower()}
        for key, field in (("groupId", "group_id"), ("projectId", "project_id")):
            if inputs.get(key) is not None:
                body[field] = int(inputs[key])
        body.update(_runner_options(inputs))
        try:
            made = client.request("POST", "user/runners", body)
        except GitLabError as exc:
            raise self._fail(what, "couldn't create new GitLab Runner", exc, [client.token]) from None
        runner_id, token = str(made["id"]), str(made.get("token") or "")
        try:
            details = client.request("GET", f"runners/{runner_id}")
        except GitLabError as exc:
            raise self._fail(
                what, f"reading new GitLab runner {runner_id} after creation", exc, [client.token, token]
            ) from None
        self.log(f"{'':8} {what}: GitLab runner {runner_id} ({details.get('access_level')})")
        return runner_id, {**inputs, **read_runner(details), "token": secret(token)}

    def update(
        self, typ: str, name: str, inputs: Mapping[str, Any], previous: Entry, provider_inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        what = f"{typ} {name}"
        if typ == GITLAB_PROVIDER:
            client = self.client(what, inputs)
            self._auth_check(what, client, inputs)
            return self._provider_outputs(inputs)
        client = self._runner_client(what, inputs, provider_inputs)
        token = str(plain(previous.outputs.get("token")) or "")
        try:
            details = client.request("PUT", f"runners/{previous.id}", _runner_options(inputs))
        except GitLabError as exc:
            raise self._fail(what, f"Error updating GitLab runner {previous.id}", exc, [client.token, token]) from None
        return {**inputs, **read_runner(details), "token": secret(token)}

    def delete(self, entry: Entry, provider_inputs: Mapping[str, Any]) -> None:
        if entry.type != USER_RUNNER:
            return  # a provider has nothing to delete
        what = f"{entry.type} {entry.name}"
        client = self.client(what, provider_inputs)
        self._auth_check(what, client, provider_inputs)
        try:
            client.request("DELETE", f"runners/{entry.id}")
        except GitLabError as exc:
            gone = exc.status == 404
            hint = " (the provider fails too; `refresh` drops a runner GitLab no longer has)" if gone else ""
            token = str(plain(entry.outputs.get("token")) or "")
            raise self._fail(what, f"Unable to delete runner {entry.id}{hint}", exc, [client.token, token]) from None

    def read(self, entry: Entry, provider_inputs: Mapping[str, Any]) -> Entry | None:
        """The entry after the provider's Read, or None when GitLab no longer has the runner."""
        if entry.type != USER_RUNNER:
            return entry
        what = f"{entry.type} {entry.name}"
        client = self.client(what, provider_inputs)
        self._auth_check(what, client, provider_inputs)
        try:
            details = client.request("GET", f"runners/{entry.id}")
        except GitLabError as exc:
            if exc.status == 404:
                return None
            token = str(plain(entry.outputs.get("token")) or "")
            raise self._fail(what, "couldn't read runner details", exc, [client.token, token]) from None
        read = read_runner(details)
        inputs = _settle(entry.inputs, read)
        return replace(entry, inputs=inputs, outputs={**entry.outputs, **inputs, **read})

    # -- helpers --

    def _runner_client(self, what: str, inputs: Mapping[str, Any], provider_inputs: Mapping[str, Any]) -> GitLabClient:
        try:
            _validate_runner(inputs)
        except ValueError as exc:
            raise ApplyError(f"{what}: {exc}") from None
        client = self.client(what, provider_inputs)
        self._auth_check(what, client, provider_inputs)
        return client

    @staticmethod
    def _provider_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(inputs)
        if out.get("token") is not None:
            out["token"] = secret(plain(out["token"]))
        return out
