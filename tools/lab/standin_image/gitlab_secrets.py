"""The GitLab stand-in's version and secrets (see gitlab_api.py, gitlab_backup.py, wrapper.py).

* The version the image says it is: ``/opt/gitlab/embedded/service/gitlab-rails/VERSION``
  (``17.11.3``, ``17.11.3-ee`` for EE) and ``/opt/gitlab/version-manifest.txt`` (first line
  ``gitlab-ce 17.11.3``), as the omnibus image has them; the wrapper records it at each start
  in the data volume, ``/var/opt/gitlab/gitlab-rails/VERSION``, as omnibus's reconfigure does.
* ``/etc/gitlab/gitlab-secrets.json`` (the config volume; made by the wrapper at first start,
  root 0600, in omnibus's shape). ``gitlab_rails.db_key_base`` is the key GitLab encrypts
  database values under (attr_encrypted, aes-256-gcm on the first 32 bytes): the stand-in
  encrypts its instance CI variables under those same 32 bytes with a **stand-in
  construction** from the standard library (a SHAKE-256 key stream and an HMAC-SHA256 tag:
  authenticated, not GitLab's cipher, not for real secrets). Another db_key_base cannot
  decrypt them, as GitLab cannot after a restore without the original secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

VERSION_FILE = Path("/opt/gitlab/embedded/service/gitlab-rails/VERSION")
MANIFEST_FILE = Path("/opt/gitlab/version-manifest.txt")
RUNNING_VERSION_FILE = Path("/var/opt/gitlab/gitlab-rails/VERSION")  # the data volume's record
SECRETS_JSON = Path("/etc/gitlab/gitlab-secrets.json")
DEFAULT_VERSION = "17.11.3"
_NONCE = 16
_TAG = 16


class DecryptError(Exception):
    """A value encrypted under another key (GitLab: OpenSSL::Cipher::CipherError)."""


def version() -> str:
    """The image's GitLab version (``17.11.3`` or ``17.11.3-ee``)."""
    try:
        return VERSION_FILE.read_text().strip() or DEFAULT_VERSION
    except OSError:
        return DEFAULT_VERSION


def edition(of: str | None = None) -> str:
    return "ee" if (of or version()).endswith("-ee") else "ce"


def load_secrets(path: Path = SECRETS_JSON) -> dict[str, Any]:
    """gitlab-secrets.json; {} when missing or unreadable (callers say what it lacks)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def db_key(secrets: dict[str, Any]) -> bytes | None:
    """The first 32 bytes of gitlab_rails.db_key_base, as GitLab's attr_encrypted key; None without one."""
    base = (secrets.get("gitlab_rails") or {}).get("db_key_base")
    return base.encode()[:32] if isinstance(base, str) and base else None


def _stream(key: bytes, nonce: bytes, length: int) -> bytes:
    return hashlib.shake_256(b"forgeway-standin-v1\0" + key + nonce).digest(length)


def encrypt(key: bytes, plaintext: str) -> str:
    nonce = os.urandom(_NONCE)
    data = plaintext.encode()
    body = bytes(a ^ b for a, b in zip(data, _stream(key, nonce, len(data)), strict=True))
    tag = hmac.new(key, nonce + body, hashlib.sha256).digest()[:_TAG]
    return base64.b64encode(nonce + body + tag).decode()


def decrypt(key: bytes | None, token: str) -> str:
    raw = base64.b64decode(token)
    nonce, body, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    if key is None or not hmac.compare_digest(hmac.new(key, nonce + body, hashlib.sha256).digest()[:_TAG], tag):
        raise DecryptError("bad decrypt")
    return bytes(a ^ b for a, b in zip(body, _stream(key, nonce, len(body)), strict=True)).decode()
