"""The lab applier's pulumi-gitlab emulation (tools/applier/apply.py): the provider and
``gitlab:index/userRunner:UserRunner``, through GitLab's REST API over TLS.

Checked against pulumi-gitlab 10.4.0 (the installed SDK: ``pulumi_gitlab/provider.py`` and
``user_runner.py``, identical for UserRunner to pulumi/pulumi-gitlab master 3bd7426e, which
bridges terraform-provider-gitlab v19.2.1; 10.4.0 itself was published after that commit, so
it bridges v19.2.1 or a later v19) and, in terraform-provider-gitlab,
``internal/provider/resource_gitlab_user_runner.go`` and ``internal/provider/api/config.go``
(v19, client-go v2):

- ``pulumi:providers:gitlab`` (``api/config.go`` ``NewGitLabClient``): ``token`` goes as
  ``Authorization: Bearer`` (an OAuth static token source: personal access tokens work as
  Bearer tokens); ``cacertFile`` becomes the ONLY trusted roots (Go: ``RootCAs`` = a pool of
  that file), ``insecure`` turns verification off, ``headers`` go on every request; with
  ``earlyAuthCheck`` (default true) configuring the provider does ``GET {baseUrl}user`` and
  fails on an error. ``baseUrl`` gets a trailing ``/`` and ``api/v4/`` when it lacks them
  (client-go ``setBaseURL``). ``retries`` (default 10, ``internal/provider/sdk/provider.go``):
  client-go's ``retryHTTPCheck`` retries 429 and 5xx answers (not connection errors) that many
  times, waiting 0.1-0.4 s after a 429 and 0.7-0.9 s times the attempt after a 5xx. Provider
  config reaches the program's registration JSON-encoded (``"true"``, ``"3"``, ``'{"X": "y"}'``),
  as the SDK sends it. Any other input (``clientCert``, ``configFile``, ``context``, …) is
  refused by name.
- ``UserRunner``: create is ``POST {baseUrl}user/runners`` (``runner_type``, ``group_id``,
  ``project_id``, ``description``, ``paused``, ``locked``, ``run_untagged``, ``tag_list``,
  ``access_level``, ``maximum_timeout`` when above 0, ``maintenance_note``; JSON body as
  client-go sends it), then ``GET runners/:id`` (the provider's ``modelToStateModel``);
  the id is GitLab's runner id as a string and ``token`` (``glrt-…``, only known from create)
  is a secret output. Update is ``PUT runners/:id`` with the same fields (not the type or
  ids). Delete is ``DELETE runners/:id``; ANY error fails the delete, a 404 included (the
  provider's Delete adds "Unable to delete runner" on every error: run ``refresh`` first,
  whose Read drops a runner GitLab no longer has). Replace-forcing inputs: ``runnerType``,
  ``groupId``, ``projectId`` (``RequiresReplace`` plan modifiers in the schema); everything
  else updates in place. A replacement is created before the old runner is deleted (the
  engine's default: pulumi-gitlab's provider/resources.go sets no DeleteBeforeReplace). ``ValidateConfig``'s checks (group_type needs groupId and no
  projectId, project_type the other way round, instance_type neither; maximumTimeout not 0
  and at least 600; the accessLevel and runnerType values) fail before any request.
  Read (refresh) is ``GET runners/:id``: a 404 drops the runner from the state; otherwise
  description, paused, locked, untagged (``run_untagged``), tagLists (a set), accessLevel,
  maximumTimeout and maintenanceNote are read back (not groupId/projectId in v19).

Name resolution (the lab's stand-in for DNS): the deployer reaches ``<gitlab.domain>``
the way a real deployer's DNS would send it, to the VPS's public address. The lab passes
that as the applier request's ``resolve`` map (``{"gitlab.forgeway.test": "203.0.113.10"}``):
the HTTP client connects to the mapped address, while TLS still checks the certificate
against the NAME (SNI and hostname check) and ``Host`` carries the name. Names not in the
map go to the system resolver. Nothing touches /etc/hosts.

Secrets: the provider's ``token`` and the runner's ``token`` are returned (and so recorded in
the state's outputs) wrapped in Pulumi's secret marker, as the SDKs' ``additional_secret_outputs``
makes the engine hold them (the mock monitor does not); no request, response body or error
that reaches a log carries either: errors are redacted.

Not emulated: ``clientCert``/``clientKey``, ``configFile``/``context``/``enableAutoCiSupport``,
the ``GITLAB_TOKEN``/``GITLAB_BASE_URL``/``GITLAB_EARLY_AUTH_CHECK`` environment fallbacks
(an unset ``baseUrl`` or ``token`` fails here), ``HTTPS_PROXY``, client-go's rate-limit probe
(an unauthenticated ``GET {baseUrl}`` before the first call, whose failure it ignores), and
the engine configuring an unchanged provider that no changed resource uses (the early auth
check runs when the provider is created or updated, and once per run before the first
runner request through it).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tools.applier.docker_api import redact
from tools.applier.state import ApplyError, Entry
from tools.stack.synth import SECRET_SIG, SIG_KEY

__all__ = [
    "GITLAB_PROVIDER",
    "GITLAB_TYPES",
    "RUNNER_REPLACE_ON",
    "USER_RUNNER",
    "GitLab",
    "GitLabClient",
    "read_runner",
]

GITLAB_PROVIDER = "pulumi:providers:gitlab"
USER_RUNNER = "gitlab:index/userRunner:UserRunner"
GITLAB_TYPES = (GITLAB_PROVIDER, USER_RUNNER)

_PROVIDER_INPUTS = {"baseUrl", "token", "cacertFile", "insecure", "earlyAuthCheck", "retries", "headers"}
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
TIMEOUT_S = 30.0
DEFAULT_RETRIES = 10
_API_PATH = "api/v4/"


def secret(value: Any) -> dict[str, Any]:
    """``value`` in Pulumi's secret marker (the wire format the SDK turns into a secret)."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def _plain(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG else value


def _config(value: Any) -> Any:
    """A provider input as given: the SDK JSON-encodes non-string provider config."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class GitLabError(Exception):
    """An API call that did not answer as asked (status, or a connection/TLS failure)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _ResolvedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` while TLS (SNI, hostname check) and ``Host`` use the URL's name."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


@dataclass(frozen=True)
class GitLabClient:
    """The provider's HTTP client: base URL, Bearer token, trust, headers, retries, resolve map."""

    base_url: str
    token: str
    cacert_file: str | None = None
    insecure: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    retries: int = 0
    resolve: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_provider(cls, inputs: Mapping[str, Any], resolve: Mapping[str, str] | None = None) -> GitLabClient:
        given = {k: _plain(v) for k, v in inputs.items() if v is not None}
        unknown = sorted(set(given) - _PROVIDER_INPUTS)
        if unknown:
            raise ValueError(f"the lab applier does not emulate {', '.join(unknown)} of {GITLAB_PROVIDER}")
        base_url = str(given.get("baseUrl") or "")
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"baseUrl {base_url!r}: the lab's GitLab is reached over https://<name>/api/v4/ only")
        if not given.get("token"):
            raise ValueError("token is not set (the lab applier reads no GITLAB_TOKEN)")
        base_url += "" if base_url.endswith("/") else "/"
        if not urllib.parse.urlsplit(base_url).path.endswith(_API_PATH):
            base_url += _API_PATH  # client-go setBaseURL
        headers = _config(given.get("headers")) or {}
        if not isinstance(headers, dict):
            raise ValueError(f"headers {headers!r}: expected a map of header names to values")
        retries = _config(given.get("retries"))
        return cls(
            base_url=base_url,
            token=str(given.get("token") or ""),
            cacert_file=str(given["cacertFile"]) if given.get("cacertFile") else None,
            insecure=_config(given.get("insecure")) is True,
            headers=tuple(sorted((str(k), str(v)) for k, v in headers.items())),
            retries=int(retries) if retries is not None else DEFAULT_RETRIES,
            resolve=tuple(sorted((k.lower(), v) for k, v in (resolve or {}).items())),
        )

    @property
    def label(self) -> str:
        return self.base_url

    def context(self) -> ssl.SSLContext:
        """Go's tls.Config of the provider: the CA file alone as roots, else the system's."""
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            context = ssl.create_default_context(cafile=self.cacert_file)
        except (OSError, ssl.SSLError) as exc:
            raise GitLabError(f"cacertFile {self.cacert_file!r}: {exc}") from None
        context.hostname_checks_common_name = False  # Go's crypto/x509 reads SANs only
        return context

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One API call (``path`` relative to baseUrl); the decoded JSON answer, or None."""
        url = urllib.parse.urlsplit(self.base_url)
        host, port = str(url.hostname), url.port or 443
        address = dict(self.resolve).get(host.lower(), host)
        target = url.path + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": "forgeway-lab-applier"}
        headers.update(dict(self.headers))
        if data is not None:
            headers["Content-Type"] = "application/json"
        headers["Authorization"] = f"Bearer {self.token}"
        where = f"{method} {self.base_url}{path}"
        for attempt in range(self.retries + 1):
            connection = _ResolvedHTTPSConnection(host, port, address, self.context(), TIMEOUT_S)
            try:
                connection.request(method, target, body=data, headers=headers)
                response = connection.getresponse()
                status, raw = response.status, response.read()
            except ssl.SSLCertVerificationError as exc:
                trust = f"cacertFile {self.cacert_file}" if self.cacert_file else "the system's CAs"
                raise GitLabError(
                    f"{where}: TLS to {host}:{port} (at {address}) failed: certificate verify failed: "
                    f"{exc.verify_message} (trusting {trust})"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise GitLabError(f"{where}: cannot reach {host}:{port} (at {address}): {exc}") from None
            finally:
                connection.close()
            if (status == 429 or status >= 500) and attempt < self.retries:
                wait = random.uniform(0.1, 0.4) if status == 429 else (attempt + 1) * random.uniform(0.7, 0.9)  # noqa: S311
                time.sleep(wait)
                continue
            break
        text = raw.decode(errors="replace")
        if status >= 300:
            raise GitLabError(f"{where}: {status} {text.strip()[:500]}", status)
        return json.loads(text) if text.strip() else None


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
        if _config(_plain(provider_inputs.get("earlyAuthCheck"))) is False:
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
        token = str(_plain(previous.outputs.get("token")) or "")
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
            token = str(_plain(entry.outputs.get("token")) or "")
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
            token = str(_plain(entry.outputs.get("token")) or "")
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
            out["token"] = secret(_plain(out["token"]))
        return out
