"""The GitLab stand-in's state and token rules (see gitlab_api.py, which serves them).

One JSON file in the data volume, locked per change; root's personal access tokens as
SHA-256 digests; the errors the API answers with. Standard library only.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

DB = Path("/var/opt/gitlab/gitlab-rails/forgeway-standin.json")
ROOT = {"id": 1, "username": "root", "name": "Administrator", "email": "admin@example.com"}
GROUPS = {1: {"id": 1, "name": "forgeway-lab", "web_url": "/groups/forgeway-lab"}}
PROJECTS = {1: {"id": 1, "name": "app", "name_with_namespace": "forgeway-lab / app",
                "path": "app", "path_with_namespace": "forgeway-lab/app", "group_id": 1}}  # fmt: skip
# lib/gitlab/auth.rb: the scopes a personal access token may have (17.x/18.x).
SCOPES = frozenset({
    "api", "read_api", "read_user", "create_runner", "manage_runner", "k8s_proxy", "self_rotate",
    "read_repository", "write_repository", "read_registry", "write_registry", "read_virtual_registry",
    "write_virtual_registry", "sudo", "admin_mode", "read_service_ping", "ai_features",
})  # fmt: skip
VERSION = "18.5.1"  # the GitLab whose token rules the stand-in follows (GET /version says the image's VERSION)
MAX_TOKEN_DAYS = 365
MIN_TOKEN_LENGTH = 20
INSUFFICIENT = "The request requires higher privileges than provided by the access token."
TOKEN_LINES = {
    "name": re.compile(r"^\s*TOKEN_NAME\s*=\s*'(?P<v>[^'\\]+)'\s*$", re.M),
    "scopes": re.compile(r"^\s*TOKEN_SCOPES\s*=\s*%w\[(?P<v>[^\]]*)\]\s*$", re.M),
    "days": re.compile(r"^\s*TOKEN_DAYS\s*=\s*(?P<v>-?\d+)\s*$", re.M),
}

Json = dict[str, Any]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


# --------------------------------------------------------------------------- the database


def _empty() -> Json:
    return {"next_id": {"token": 1, "runner": 1, "job": 1}, "tokens": [], "runners": {}, "jobs": {}}


@contextlib.contextmanager
def database(path: Path | None = None) -> Iterator[Json]:
    """The state (default :data:`DB`), locked; written back (atomically) when the block ends without error."""
    path = DB if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else _empty()
        before = json.dumps(state, sort_keys=True)
        yield state
        text = json.dumps(state, sort_keys=True)
        if text != before or not path.exists():
            fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".db-")
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(partial, path)  # mkstemp made it 0600


def next_id(state: Json, kind: str) -> int:
    value = int(state["next_id"][kind])
    state["next_id"][kind] = value + 1
    return value


def next_id_of(state: Json, kind: str) -> int:
    """:func:`next_id` for kinds a state file from an older stand-in may lack (keys, uploads)."""
    state["next_id"].setdefault(kind, 1)
    return next_id(state, kind)


class ApiError(Exception):
    """An HTTP answer other than success: status, JSON body, extra headers."""

    def __init__(self, status: int, body: Json | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body if body is not None else {"message": f"{status} {HTTPStatus(status).phrase}"}
        self.headers = headers or {}


def not_found(what: str) -> ApiError:
    return ApiError(404, {"message": f"404 {what} Not Found"})


def bad_request(message: object) -> ApiError:
    return ApiError(400, {"error": message} if isinstance(message, str) else {"message": message})


# --------------------------------------------------------------------------- tokens


def authenticate(state: Json, token: str | None, allowed: tuple[str, ...]) -> Json:
    """The personal access token ``token``; ApiError 401/403 as lib/api/api_guard.rb answers."""
    if not token:
        raise ApiError(401)
    found = next((t for t in state["tokens"] if t["digest"] == digest(token)), None)
    if found is None:
        raise ApiError(401)
    if found["revoked"]:
        revoked = "Token was revoked. You have to re-authorize from the user."
        raise ApiError(401, {"error": "invalid_token", "error_description": revoked})
    if found["expires_at"] is not None and datetime.date.fromisoformat(found["expires_at"]) <= today():
        raise ApiError(401, {"error": "invalid_token", "error_description": "Token has expired."})
    if allowed and not set(allowed) & set(found["scopes"]):
        scope = " ".join(sorted(allowed))
        challenge = f'Bearer realm="GitLab", error="insufficient_scope", error_description="{INSUFFICIENT}", '
        challenge += f'scope="{scope}"'
        raise ApiError(403, {"error": "insufficient_scope", "error_description": INSUFFICIENT, "scope": scope},
                       {"WWW-Authenticate": challenge})  # fmt: skip
    found["last_used_at"] = now()
    return dict(found)


def token_view(token: Json) -> Json:
    return {
        "id": token["id"], "name": token["name"], "revoked": token["revoked"], "created_at": token["created_at"],
        "scopes": token["scopes"], "user_id": 1, "last_used_at": token.get("last_used_at"), "active": active(token),
        "expires_at": token["expires_at"],
    }  # fmt: skip


class Invalid(Exception):
    """A model validation failure, worded as ActiveRecord::RecordInvalid."""


def token_spec(text: str) -> tuple[str, list[str], int]:
    """TOKEN_NAME, TOKEN_SCOPES and TOKEN_DAYS of a contract ruby file; Invalid naming what is missing."""
    found = {}
    for key, pattern in TOKEN_LINES.items():
        matches = pattern.findall(text)
        if len(matches) != 1:
            raise Invalid(f"the file must set TOKEN_{key.upper()} once on a line of its own, found {len(matches)}")
        found[key] = matches[0]
    for needed in ("STDIN.read", "ARGV[0]"):
        if needed not in text:
            raise Invalid(f"the file must read the token with STDIN.read.strip and act on ARGV[0]: no {needed}")
    return found["name"], found["scopes"].split(), int(found["days"])


def check_token(state: Json, value: str, scopes: list[str], days: int) -> str:
    """Validation of a new personal access token; its expiry date (ISO)."""
    problems = []
    if not scopes:
        problems.append("Scopes can't be blank")
    elif not set(scopes) <= SCOPES:
        unknown = ", ".join(sorted(set(scopes) - SCOPES))
        problems.append(f"Scopes can only contain available scopes (unknown: {unknown})")
    limit = today() + datetime.timedelta(days=MAX_TOKEN_DAYS)
    if days < 1:
        problems.append("Expiration date cannot be in the past" if days < 0 else "Expiration date can't be blank")
    elif days > MAX_TOKEN_DAYS:
        problems.append(f"Expiration date must be before {limit.isoformat()}")
    if len(value) < MIN_TOKEN_LENGTH or not value.isprintable() or any(c.isspace() for c in value):
        problems.append(f"Token must be at least {MIN_TOKEN_LENGTH} printable characters without spaces "
                        "(a stand-in rule: see gitlab_api.py)")  # fmt: skip
    if problems:
        raise Invalid("ActiveRecord::RecordInvalid: Validation failed: " + ", ".join(problems))
    if any(t["digest"] == digest(value) for t in state["tokens"]):
        raise Invalid(
            "ActiveRecord::RecordNotUnique: PG::UniqueViolation: ERROR:  duplicate key value violates unique "
            'constraint "index_personal_access_tokens_on_token_digest" (a token, even a revoked one, has this value)'
        )
    return (today() + datetime.timedelta(days=days)).isoformat()


def active(token: Json) -> bool:
    """GitLab's ``PersonalAccessToken.active``: not revoked, not expired."""
    return not token["revoked"] and (
        token["expires_at"] is None or datetime.date.fromisoformat(token["expires_at"]) > today()
    )


def seed_token(state: Json, name: str, scopes: list[str], days: int, value: str) -> str:
    """``create``, as the contract's file (components/scripts/gitlab-api-token.rb) does it on GitLab.

    GitLab keeps one token per value, revoked ones too (the unique index on
    ``token_digest``), so the file looks the value up first: another user's or name's
    token, or a revoked one, is refused; an active one with these scopes is unchanged; an
    expired one or one with other scopes is renewed in place (scopes and expiry). Any
    other active token named ``name`` is revoked. A new value makes a new token, refused
    when invalid (the revocations stay then: the file's steps are not one transaction).
    """
    found = next((t for t in state["tokens"] if t["digest"] == digest(value)), None)
    if found is not None and found["name"] != name:
        raise Invalid("gitlab-api-token: another personal access token has this value")
    if found is not None and found["revoked"]:
        raise Invalid(f"gitlab-api-token: {name} was revoked in GitLab; rotate it")
    current = [t for t in state["tokens"] if t["name"] == name and active(t) and t is not found]
    for old in current:
        old["revoked"] = True
    if found is not None and active(found) and found["scopes"] == sorted(scopes):
        return f"personal access token {name!r} of root: unchanged"
    if found is not None:
        probe = {**state, "tokens": [t for t in state["tokens"] if t is not found]}
        found.update(scopes=sorted(scopes), days=days, expires_at=check_token(probe, value, scopes, days))
        return f"personal access token {name!r} of root: renewed (scopes {' '.join(sorted(scopes))}, {days} days)"
    expires_at = check_token(state, value, scopes, days)
    state["tokens"].append({
        "id": next_id(state, "token"), "name": name, "scopes": sorted(scopes), "days": days,
        "digest": digest(value), "expires_at": expires_at, "revoked": False, "created_at": now(),
    })  # fmt: skip
    verb = "replaced" if current else "created"
    return f"personal access token {name!r} of root: {verb} (scopes {' '.join(sorted(scopes))}, {days} days)"


def revoke_token(state: Json, name: str) -> str:
    """``revoke``, as the contract's file does it: every active token of root named ``name``."""
    hits = [t for t in state["tokens"] if t["name"] == name and active(t)]
    for token in hits:
        token["revoked"] = True
    return f"personal access token {name!r} of root: " + (f"{len(hits)} revoked" if hits else "none active")
