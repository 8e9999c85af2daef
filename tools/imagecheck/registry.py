"""Read one manifest over the registry HTTP API v2, with the registry's own auth flow.

``GET /v2/<name>/manifests/<reference>`` with the Accept headers of indexes and manifests.
On 401 the ``WWW-Authenticate`` challenge decides: ``Bearer realm=...,service=...,scope=...``
(distribution's token auth, GitLab's registry): a token from the realm for
``repository:<name>:pull``, with the credentials as basic auth if any, then the request again
with it; ``Basic`` (the lab's stand-in, nginx in front of docker-registry): the request again
with the credentials. Credentials never appear on a command line (tools.imagecheck reads the
password from stdin or a file).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tools.imagecheck.index import INDEX_TYPES, MANIFEST_TYPES

__all__ = ["Credentials", "ImageRef", "RegistryError", "fetch_blob", "fetch_manifest", "parse_ref"]

ACCEPT = ", ".join([*INDEX_TYPES, *MANIFEST_TYPES])
_REF = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9A-Fa-f:]+\](?::[0-9]+)?)/"
    r"(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """The registry could not be read (network, TLS, auth, not found): not a verdict on the index."""


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port]
    name: str  # repository path
    reference: str  # tag or digest

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.name}{sep}{self.reference}"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never the password, in a traceback or a log
        return f"Credentials(user={self.user!r}, password=[secret])"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


def parse_ref(text: str) -> ImageRef:
    """``registry[:port]/name[:tag][@sha256:...]``; the registry must be named (no Docker Hub default)."""
    m = _REF.fullmatch(text.strip())
    if m is None or ("." not in m["host"] and ":" not in m["host"] and m["host"] != "localhost"):
        raise ValueError(
            f"image reference {text!r}: expected REGISTRY[:PORT]/NAME[:TAG][@sha256:DIGEST], "
            "e.g. gitlab.example.org:5050/group/app:1.0"
        )
    return ImageRef(m["host"], m["name"], m["digest"] or m["tag"] or "latest")


class _Session:
    def __init__(self, ref: ImageRef, ca_file: str | None, credentials: Credentials | None, timeout: float) -> None:
        self.ref, self.credentials, self.timeout = ref, credentials, timeout
        self.context = ssl.create_default_context(cafile=ca_file)
        self.authorization: str | None = None

    def _open(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - https only, built here
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=self.timeout) as r:  # noqa: S310
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
        except (urllib.error.URLError, OSError) as err:
            raise RegistryError(f"{url}: {getattr(err, 'reason', err)}") from err

    def _authorize(self, challenge: str) -> None:
        scheme, _, params = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.ref.registry} asks for basic auth: give --user and the password")
            self.authorization = self.credentials.basic()
            return
        if scheme.lower() != "bearer":
            raise RegistryError(f"{self.ref.registry}: unsupported auth challenge {scheme!r}")
        fields = dict(_CHALLENGE.findall(params))
        if "realm" not in fields or not fields["realm"].startswith("https://"):
            raise RegistryError(f"{self.ref.registry}: bearer challenge without an https realm: {challenge!r}")
        query = {"scope": fields.get("scope") or f"repository:{self.ref.name}:pull"}
        if "service" in fields:
            query["service"] = fields["service"]
        url = fields["realm"] + ("&" if "?" in fields["realm"] else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        status, _, body = self._open(url, headers)
        if status != 200:
            raise RegistryError(f"token realm {fields['realm']} answered {status}: check --user and the password")
        answer = json.loads(body)
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"token realm {fields['realm']} gave no token")
        self.authorization = f"Bearer {token}"

    def get(self, path: str, accept: str) -> tuple[dict[str, str], bytes]:
        url = f"https://{self.ref.registry}/v2/{self.ref.name}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept}
            if self.authorization:
                headers["Authorization"] = self.authorization
            status, response_headers, body = self._open(url, headers)
            if status == 200:
                return response_headers, body
            if status == 401 and attempt == 0 and "www-authenticate" in response_headers:
                self._authorize(response_headers["www-authenticate"])
                continue
            raise RegistryError(f"GET {url} answered {status}: {body[:200].decode(errors='replace').strip()}")
        raise RegistryError(f"GET {url}: still unauthorized after authenticating: check --user and the password")


def fetch_manifest(
    ref: ImageRef, *, ca_file: str | None = None, credentials: Credentials | None = None, timeout: float = 30
) -> tuple[str, dict[str, Any], _Session]:
    """The manifest REF names: its media type, its document, and the session (to read blobs)."""
    session = _Session(ref, ca_file, credentials, timeout)
    headers, body = session.get(f"manifests/{ref.reference}", ACCEPT)
    try:
        document: dict[str, Any] = json.loads(body)
    except json.JSONDecodeError as err:
        raise RegistryError(f"{ref}: the manifest is not JSON ({err})") from err
    media_type = str(document.get("mediaType") or headers.get("content-type", "").split(";")[0])
    return media_type, document, session


def fetch_blob(session: _Session, digest: str) -> dict[str, Any]:
    """A small JSON blob (an image config) of the session's repository."""
    _, body = session.get(f"blobs/{digest}", "application/json, */*")
    blob: dict[str, Any] = json.loads(body)
    return blob
