"""GitLab's REST API as the pulumi-gitlab provider's client reaches it (tools/applier/gitlab.py):
HTTPS with the provider's trust, Bearer token, headers and retries, through the lab's resolve map.

From terraform-provider-gitlab v19 ``internal/provider/api/config.go`` ``NewGitLabClient``
and ``internal/provider/sdk/provider.go`` (the provider's schema and defaults), and client-go:

- ``token`` goes as ``Authorization: Bearer`` (an OAuth static token source: personal access
  tokens work as Bearer tokens); ``cacertFile`` becomes the ONLY trusted roots (Go: ``RootCAs``
  = a pool of that file), ``insecure`` turns verification off, ``headers`` go on every request.
  Certificates are checked as Go's crypto/x509 does: against the SANs, never the CN.
- ``baseUrl`` gets a trailing ``/`` and ``api/v4/`` when it lacks them (client-go ``setBaseURL``).
- ``retries`` (default 10): client-go's ``retryHTTPCheck`` retries 429 and 5xx answers (not
  connection errors) that many times, waiting 0.1-0.4 s after a 429 and 0.7-0.9 s times the
  attempt after a 5xx.
- Provider config reaches the program's registration JSON-encoded (``"true"``, ``"3"``,
  ``'{"X": "y"}'``), as the SDK sends it. Any other input (``clientCert``, ``configFile``,
  ``context``, …) is refused by name.

Name resolution (the lab's stand-in for DNS): the deployer reaches ``<gitlab.domain>`` the
way a real deployer's DNS would send it, to the VPS's public address. The lab passes that as
the applier request's ``resolve`` map (``{"gitlab.forgeway.test": "203.0.113.10"}``): the
client connects to the mapped address, while TLS still checks the certificate against the
NAME (SNI and hostname check) and ``Host`` carries the name. Names not in the map go to the
system resolver. Nothing touches /etc/hosts.

Not emulated: ``clientCert``/``clientKey``, ``configFile``/``context``/``enableAutoCiSupport``,
the ``GITLAB_TOKEN``/``GITLAB_BASE_URL``/``GITLAB_EARLY_AUTH_CHECK`` environment fallbacks (an
unset ``baseUrl`` or ``token`` fails here), ``HTTPS_PROXY``, and client-go's rate-limit probe
(an unauthenticated ``GET {baseUrl}`` before the first call, whose failure it ignores).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tools.stack.synth import SECRET_SIG, SIG_KEY

__all__ = ["GITLAB_PROVIDER", "GitLabClient", "GitLabError", "config_value", "plain", "secret"]

GITLAB_PROVIDER = "pulumi:providers:gitlab"
_PROVIDER_INPUTS = {"baseUrl", "token", "cacertFile", "insecure", "earlyAuthCheck", "retries", "headers"}
TIMEOUT_S = 30.0
DEFAULT_RETRIES = 10  # provider.go: retries Default 10
_API_PATH = "api/v4/"


def secret(value: Any) -> dict[str, Any]:
    """``value`` in Pulumi's secret marker (the wire format the SDK turns into a secret)."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def plain(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG else value


def config_value(value: Any) -> Any:
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
        given = {k: plain(v) for k, v in inputs.items() if v is not None}
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
        headers = config_value(given.get("headers")) or {}
        if not isinstance(headers, dict):
            raise ValueError(f"headers {headers!r}: expected a map of header names to values")
        retries = config_value(given.get("retries"))
        return cls(
            base_url=base_url,
            token=str(given.get("token") or ""),
            cacert_file=str(given["cacertFile"]) if given.get("cacertFile") else None,
            insecure=config_value(given.get("insecure")) is True,
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
