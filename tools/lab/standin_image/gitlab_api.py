#!/usr/bin/python3
"""GitLab's REST API, the part forgeway uses, in the lab image forgeway-lab/gitlab-standin.

One file, copied into the image under three names (tools/lab/images.py), which pick
what it does:

* ``/opt/gitlab/embedded/service/gitlab-rails/api.py serve``: the backend (omnibus's puma,
  started by the wrapper as service ``puma``) on 127.0.0.1:8080; nginx proxies
  ``/api/v4/`` and ``/-/health`` to it over the container's TLS, as omnibus does.
* ``/opt/gitlab/bin/gitlab-rails`` (and ``/usr/bin/gitlab-rails``, where omnibus links
  it): ``gitlab-rails runner <FILE> create|revoke`` seeds or revokes root's personal
  access token. It does not run Ruby: it reads FILE's marker lines (the issue-17
  contract) ``TOKEN_NAME = '<name>'``, ``TOKEN_SCOPES = %w[<scopes>]``,
  ``TOKEN_DAYS = <n>``, checks FILE reads the token with ``STDIN.read`` and acts on
  ``ARGV[0]``, and takes the token on stdin (stripped). It refuses, as GitLab's model
  validations would (``Validation failed: ...``, exit 1): no or unknown scopes
  (:data:`SCOPES`), an expiry not in 1..365 days (``require_personal_access_token_expiry``
  is on by default, and 365 days is the limit on every 17.x/18.x, 400 only with the
  ``buffered_token_expiration_limit`` flag: the stand-in keeps the stricter), a value
  another token already has. Stricter than GitLab (whose ``set_token`` takes any
  string): at least 20 printable characters without spaces (the length of the random
  part of GitLab's own tokens; a header must carry it). ``create`` and ``revoke`` do
  what the contract's file (components/scripts/gitlab-api-token.rb) does on GitLab, so
  the lab meets what GitLab would: an active token with the same value and scopes is
  left alone; else every active token of that name is revoked and the new one made,
  which GitLab refuses when any token, even a revoked one, has that value (the unique
  index on ``token_digest``: ``PG::UniqueViolation``; the revocations stay); ``revoke``
  revokes every active token of that name. Like rails, which needs PostgreSQL, it fails while the backend is down
  (``PG::ConnectionBad``): wait until the container is healthy. It prints one line,
  never the token.
* ``/opt/gitlab/bin/gitlab-standin-job`` (lab only, no GitLab counterpart; a pipeline
  would make these): ``gitlab-standin-job queue --ref REF [--protected] [--tag T]...
  [--project ID] [--seconds N] [--name NAME]`` queues a pending job and prints its id;
  ``gitlab-standin-job show ID`` prints it as JSON (``status`` pending, running, success
  or failed; ``runner_id``: the runner that took it); ``gitlab-standin-job list``, all.

The API (docs.gitlab.com/api: users, personal_access_tokens, runners; the runner API of
lib/api/ci/runner.rb). A token comes as ``PRIVATE-TOKEN``, ``Authorization: Bearer``,
or the ``private_token``/``access_token`` parameter. Unknown token: 401
``{"message": "401 Unauthorized"}``; revoked or expired: 401 ``invalid_token`` with
GitLab's description; a scope the endpoint does not allow: 403 ``insufficient_scope``
naming the scopes that would do (WWW-Authenticate too). Only user ``root`` (id 1, an
administrator) exists; group 1 ``forgeway-lab`` and its project 1 ``forgeway-lab/app``
are the only namespaces (others: 404), for group and project runners.

* ``GET /user`` (read_user, read_api, api); ``GET /personal_access_tokens/self`` (any);
  ``GET /version`` and ``/metadata`` (those or ai_features): :data:`VERSION`.
* ``POST /user/runners`` (create_runner, api): ``runner_type`` (instance_type,
  group_type + group_id, project_type + project_id), description, paused, locked,
  run_untagged (default true), tag_list, access_level (not_protected default,
  ref_protected), maximum_timeout (>= 600), maintenance_note; 201 ``{id, token:
  glrt-..., token_expires_at: null}``.
* ``GET /runners/all`` (manage_runner, read_api, api): the short form GitLab lists (no
  access_level: ask each ``/runners/:id``), ``type`` and ``paused`` filters, ``page``/``per_page``.
* ``GET/PUT/DELETE /runners/:id`` (GET: manage_runner, read_api, api; PUT and DELETE:
  manage_runner, api): GitLab's runner details (``active`` = not paused, ``is_shared``,
  ``groups``/``projects``); 404 ``Runner Not Found``; DELETE 204.
* ``POST /runners/verify`` and ``POST /jobs/request`` (runner token in the JSON body):
  403 for an unknown token, as GitLab. jobs/request answers 204 when nothing fits, and
  always to a paused runner; else 201 with the oldest pending job the runner may take:
  the job's project in the runner's scope, **no unprotected ref for a ref_protected
  runner**, every tag of the job in the runner's tag_list, an untagged job only to a
  run_untagged runner. ``PUT /jobs/:id`` (the job's token) sets success or failed.

State is one JSON file in the data volume (``/var/opt/gitlab/gitlab-rails/forgeway-
standin.json``, 0600, locked per change), as GitLab's database lives there: a new
container on the same volumes keeps tokens, runners and jobs. Tokens are kept as
SHA-256 digests, as GitLab keeps ``token_digest``. Only the standard library is used
(python3-minimal and libpython3-stdlib).

Over 400 lines (for now): one file copied under three names, each run from its own
directory; a split into state/tokens, runners/jobs and HTTP/CLI needs the sibling
import runner_standin.py uses for runner_gitlab.py, with the image path added.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

LISTEN = ("127.0.0.1", 8080)  # omnibus's puma port; nginx proxies to it
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
VERSION = "18.5.1"  # the GitLab whose rules the stand-in follows (GET /version, /metadata)
MAX_TOKEN_DAYS = 365
MIN_TOKEN_LENGTH = 20
MIN_TIMEOUT = 600  # Ci::Runner validates maximum_timeout >= 10 minutes
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")
RUNNER_TOKEN_PREFIX = "glrt-"  # noqa: S105 (a prefix)
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

    An active token of root with this value, name and scopes: unchanged. Else every
    active token named ``name`` is revoked, then the new one made: refused when it is
    invalid, or when any token, even a revoked one, already has this value (GitLab's
    unique index on ``token_digest``). The revocations stay even then: the file's steps
    are not one transaction.
    """
    current = [t for t in state["tokens"] if t["name"] == name and active(t)]
    if any(t["digest"] == digest(value) and t["scopes"] == sorted(scopes) for t in current):
        return f"personal access token {name!r} of root: unchanged"
    for old in current:
        old["revoked"] = True
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


# --------------------------------------------------------------------------- runners


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise bad_request(f"{name} is invalid")


def _tags(value: object) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return sorted({str(tag).strip() for tag in items if str(tag).strip()})


def runner_settings(params: Json, runner: Json) -> None:  # noqa: PLR0912 (one branch a field)
    """The settable fields of a runner, checked as GitLab's API and model do; into ``runner``."""
    if "description" in params:
        runner["description"] = str(params["description"])
    if "paused" in params:
        runner["paused"] = _bool(params["paused"], "paused")
    elif "active" in params:  # deprecated, still taken
        runner["paused"] = not _bool(params["active"], "active")
    for key in ("locked", "run_untagged"):
        if key in params:
            runner[key] = _bool(params[key], key)
    if "tag_list" in params:
        runner["tag_list"] = _tags(params["tag_list"])
    if "access_level" in params:
        if params["access_level"] not in ACCESS_LEVELS:
            raise bad_request("access_level does not have a valid value")
        runner["access_level"] = params["access_level"]
    if "maximum_timeout" in params:
        try:
            timeout = int(params["maximum_timeout"])
        except (TypeError, ValueError):
            raise bad_request("maximum_timeout is invalid") from None
        if timeout < MIN_TIMEOUT:
            raise bad_request({"maximum_timeout": ["needs to be at least 10 minutes"]})
        runner["maximum_timeout"] = timeout
    if "maintenance_note" in params:
        runner["maintenance_note"] = str(params["maintenance_note"])
    if not runner["run_untagged"] and not runner["tag_list"]:
        raise bad_request({"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]})


def create_runner(state: Json, params: Json) -> Json:
    runner_type = params.get("runner_type")
    if runner_type is None:
        raise bad_request("runner_type is missing")
    if runner_type not in RUNNER_TYPES:
        raise bad_request("runner_type does not have a valid value")
    runner: Json = {
        "id": next_id(state, "runner"), "runner_type": runner_type, "description": "", "paused": False,
        "locked": False, "run_untagged": True, "tag_list": [], "access_level": "not_protected",
        "maximum_timeout": None, "maintenance_note": None, "created_at": now(), "contacted_at": None,
        "group_id": None, "project_id": None,
    }  # fmt: skip
    for kind, table in (("group", GROUPS), ("project", PROJECTS)):
        if runner_type == f"{kind}_type":
            raw = params.get(f"{kind}_id")
            if raw is None:
                raise bad_request(f"{kind}_id is missing")
            if not str(raw).isdigit() or int(raw) not in table:
                raise not_found(kind.capitalize())
            runner[f"{kind}_id"] = int(raw)
    runner_settings(params, runner)
    token = RUNNER_TOKEN_PREFIX + secrets.token_urlsafe(15)
    runner["token_digest"] = digest(token)
    state["runners"][str(runner["id"])] = runner
    return {"id": runner["id"], "token": token, "token_expires_at": None}


def runner_view(runner: Json) -> Json:
    contacted = runner["contacted_at"]
    status = "paused" if runner["paused"] else ("online" if contacted else "never_contacted")
    return {
        "id": runner["id"], "description": runner["description"], "ip_address": None,
        "active": not runner["paused"], "paused": runner["paused"],
        "is_shared": runner["runner_type"] == "instance_type",
        "runner_type": runner["runner_type"], "name": None, "online": contacted is not None, "status": status,
        "created_at": runner["created_at"], "created_by": {k: ROOT[k] for k in ("id", "username", "name")},
        "contacted_at": contacted, "tag_list": runner["tag_list"], "run_untagged": runner["run_untagged"],
        "locked": runner["locked"], "maximum_timeout": runner["maximum_timeout"],
        "access_level": runner["access_level"], "maintenance_note": runner["maintenance_note"],
        "version": None, "revision": None, "platform": None, "architecture": None,
        "groups": [GROUPS[runner["group_id"]]] if runner["group_id"] else [],
        "projects": [{k: v for k, v in PROJECTS[runner["project_id"]].items() if k != "group_id"}]
        if runner["project_id"] else [],
    }  # fmt: skip


SHORT = ("id", "description", "ip_address", "active", "paused", "is_shared", "runner_type", "name", "online",
         "status")  # fmt: skip


def list_runners(state: Json, params: Json) -> list[Json]:
    """``GET /runners/all`` (administrators): the short form, oldest first, ``type``/``paused`` filters, pages of 20."""
    runners = [runner_view(r) for _, r in sorted(state["runners"].items(), key=lambda kv: int(kv[0]))]
    if "type" in params:
        runners = [r for r in runners if r["runner_type"] == params["type"]]
    if "paused" in params:
        runners = [r for r in runners if r["paused"] == _bool(params["paused"], "paused")]
    try:
        page, per_page = max(1, int(params.get("page", 1))), min(100, max(1, int(params.get("per_page", 20))))
    except ValueError:
        raise bad_request("page is invalid") from None
    return [{k: r[k] for k in SHORT} for r in runners[(page - 1) * per_page : page * per_page]]


def find_runner(state: Json, raw_id: str) -> Json:
    runner = state["runners"].get(raw_id) if raw_id.isdigit() else None
    if runner is None:
        raise not_found("Runner")
    found: Json = runner  # the stored dict: callers change it
    return found


def runner_by_token(state: Json, params: Json) -> Json:
    token = params.get("token")
    if not token:
        raise bad_request("token is missing")
    runner = next((r for r in state["runners"].values() if r["token_digest"] == digest(str(token))), None)
    if runner is None:
        raise ApiError(403)
    runner["contacted_at"] = now()
    found: Json = runner
    return found


# --------------------------------------------------------------------------- jobs


def queue_job(
    state: Json, ref: str, *, protected: bool, tags: list[str], project: int = 1, seconds: float = 1.0,
    name: str = "lab-job",
) -> Json:  # fmt: skip
    if project not in PROJECTS:
        raise Invalid(f"no project {project}: the stand-in has {sorted(PROJECTS)}")
    job = {
        "id": next_id(state, "job"), "name": name, "ref": ref, "protected": protected, "tags": sorted(set(tags)),
        "project_id": project, "seconds": seconds, "status": "pending", "runner_id": None,
        "token_digest": None, "created_at": now(), "started_at": None, "finished_at": None,
    }  # fmt: skip
    state["jobs"][str(job["id"])] = job
    return job


def can_pick(runner: Json, job: Json) -> bool:  # noqa: PLR0911 (one return a rule)
    """Whether GitLab's queue (Ci::Queue::BuildQueueService and the runner matcher) gives ``job`` to ``runner``."""
    if runner["paused"] or job["status"] != "pending":
        return False
    if runner["access_level"] == "ref_protected" and not job["protected"]:
        return False  # Ci::Runner#can_pick?: ref_protected runners take protected refs only
    if job["tags"] and not set(job["tags"]) <= set(runner["tag_list"]):
        return False
    if not job["tags"] and not runner["run_untagged"]:
        return False
    if runner["runner_type"] == "group_type":
        return bool(PROJECTS[job["project_id"]]["group_id"] == runner["group_id"])
    if runner["runner_type"] == "project_type":
        return bool(job["project_id"] == runner["project_id"])
    return True


def request_job(state: Json, runner: Json) -> Json | None:
    job = next((j for _, j in sorted(state["jobs"].items(), key=lambda kv: int(kv[0])) if can_pick(runner, j)), None)
    if job is None:
        return None
    job_token = "glcbt-" + secrets.token_urlsafe(15)
    job.update(status="running", runner_id=runner["id"], token_digest=digest(job_token), started_at=now())
    project = PROJECTS[job["project_id"]]
    timeout = min(3600, runner["maximum_timeout"] or 3600)
    variables = {
        "CI_JOB_ID": str(job["id"]), "CI_COMMIT_REF_NAME": job["ref"],
        "CI_COMMIT_REF_PROTECTED": str(job["protected"]).lower(), "FORGEWAY_LAB_JOB_SECONDS": str(job["seconds"]),
    }  # fmt: skip
    return {
        "id": job["id"], "token": job_token, "allow_git_fetch": True,
        "job_info": {"id": job["id"], "name": job["name"], "stage": "test", "project_id": project["id"],
                     "project_name": project["name"]},
        "git_info": {"repo_url": f"/{project['path_with_namespace']}.git", "ref": job["ref"], "sha": "0" * 40,
                     "before_sha": "0" * 40, "ref_type": "branch", "refspecs": [], "depth": 20},
        "runner_info": {"timeout": timeout, "runner_session_url": None},
        "variables": [{"key": k, "value": v, "public": True, "masked": False} for k, v in variables.items()],
        "steps": [{"name": "script", "script": [f"sleep {job['seconds']}"], "timeout": timeout,
                   "when": "on_success", "allow_failure": False}],
        "image": None, "services": [], "artifacts": [], "cache": [], "credentials": [], "dependencies": [],
        "features": {},
    }  # fmt: skip


def update_job(state: Json, raw_id: str, params: Json) -> None:
    job = state["jobs"].get(raw_id) if raw_id.isdigit() else None
    if job is None:
        raise not_found("Job")
    if job["token_digest"] is None or job["token_digest"] != digest(str(params.get("token", ""))):
        raise ApiError(403)
    if params.get("state") in ("success", "failed"):
        job.update(status=params["state"], finished_at=now())


def job_view(job: Json) -> Json:
    return {k: v for k, v in job.items() if k != "token_digest"}


# --------------------------------------------------------------------------- HTTP


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(f"^/api/v4{path}$"), name)
    for method, path, name in (
        ("GET", "/user", "user"),
        ("GET", "/personal_access_tokens/self", "token_self"),
        ("GET", "/version", "version"),
        ("GET", "/metadata", "metadata"),
        ("POST", "/user/runners", "runner_create"),
        ("GET", "/runners/all", "runner_list"),
        ("GET", r"/runners/(?P<id>[^/]+)", "runner_get"),
        ("PUT", r"/runners/(?P<id>[^/]+)", "runner_put"),
        ("DELETE", r"/runners/(?P<id>[^/]+)", "runner_delete"),
        ("POST", "/runners/verify", "verify"),
        ("POST", "/jobs/request", "jobs_request"),
        ("PUT", r"/jobs/(?P<id>\d+)", "job_update"),
    )
]
# The scopes lib/api allows per endpoint (allow_access_with_scope; api always).
READ_USER = ("api", "read_api", "read_user")
ALLOWED = {
    "user": READ_USER, "token_self": (), "version": (*READ_USER, "ai_features"),
    "metadata": (*READ_USER, "ai_features"), "runner_create": ("api", "create_runner"),
    "runner_get": ("api", "manage_runner", "read_api"), "runner_list": ("api", "manage_runner", "read_api"),
    "runner_put": ("api", "manage_runner"),
    "runner_delete": ("api", "manage_runner"),
}  # fmt: skip


def handle(  # noqa: PLR0911 (a dispatcher: one return an endpoint)
    state: Json, name: str, match: re.Match[str], params: Json, token: str | None
) -> tuple[int, Json | list[Json] | None]:
    """One API call on ``state``: (status, JSON body or None for no content)."""
    if name == "verify":
        runner = runner_by_token(state, params)
        return 200, {"id": runner["id"], "token": params["token"], "token_expires_at": None}
    if name == "jobs_request":
        runner = runner_by_token(state, params)
        job = None if runner["paused"] else request_job(state, runner)
        return (201, job) if job is not None else (204, None)
    if name == "job_update":
        update_job(state, match["id"], params)
        return 200, None
    pat = authenticate(state, token, ALLOWED[name])
    if name == "user":
        return 200, {**ROOT, "state": "active", "locked": False, "avatar_url": None, "web_url": "/root",
                     "created_at": "2024-01-01T00:00:00.000Z", "bot": False, "is_admin": True}  # fmt: skip
    if name == "token_self":
        return 200, token_view(pat)
    if name in ("version", "metadata"):
        return 200, {"version": VERSION, "revision": "forgeway-standin", "enterprise": False}
    if name == "runner_create":
        return 201, create_runner(state, params)
    if name == "runner_list":
        return 200, list_runners(state, params)
    runner = find_runner(state, match["id"])
    if name == "runner_get":
        return 200, runner_view(runner)
    if name == "runner_put":
        keys = ("description", "active", "paused", "tag_list", "run_untagged", "locked", "access_level",
                "maximum_timeout", "maintenance_note")  # fmt: skip
        if not any(k in params for k in keys):
            raise bad_request(f"{', '.join(keys)} are missing, at least one parameter must be provided")
        changed = dict(runner)
        runner_settings(params, changed)
        runner.update(changed)
        return 200, runner_view(runner)
    del state["runners"][match["id"]]  # runner_delete
    return 204, None


class Handler(BaseHTTPRequestHandler):
    server_version = "nginx"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        # X-Forwarded-For: the client, as nginx saw it; never a query (a token may be in it)
        client = self.headers.get("X-Forwarded-For", self.client_address[0])
        sys.stdout.write(f"{client} {self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")
        sys.stdout.flush()

    def _answer(self, status: int, body: Json | list[Json] | None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _params(self, query: str) -> Json:
        params: Json = {k: v[-1] for k, v in parse_qs(query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return params
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise bad_request("the body must be a JSON object")
            return {**params, **body}
        form = parse_qs(raw.decode())
        for key, values in form.items():
            params[key.removesuffix("[]")] = values if key.endswith("[]") else values[-1]
        return params

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        if self.command == "GET" and parts.path == "/-/health":
            data = b"GitLab OK\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            route = next(((n, m) for meth, p, n in ROUTES if meth == self.command and (m := p.match(parts.path))), None)
            if route is None:
                raise ApiError(404, {"error": "404 Not Found"})
            params = self._params(parts.query)
            bearer = self.headers.get("Authorization", "")
            token = (self.headers.get("PRIVATE-TOKEN") or (bearer[7:] if bearer.startswith("Bearer ") else None)
                     or params.get("private_token") or params.get("access_token"))  # fmt: skip
            with database() as state:
                status, body = handle(state, route[0], route[1], params, token)
        except ApiError as err:
            self._answer(err.status, err.body, err.headers)
            return
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            self._answer(400, {"error": "the request body is not valid"})
            return
        self._answer(status, body)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


def serve() -> int:
    with database():
        pass  # the file exists (0600) before the first request
    server = ThreadingHTTPServer(LISTEN, Handler)
    server.daemon_threads = True
    print(f"forgeway GitLab API stand-in listening on {LISTEN[0]}:{LISTEN[1]}", flush=True)
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- command lines


def backend_up() -> bool:
    try:
        with socket.create_connection(LISTEN, timeout=2):
            return True
    except OSError:
        return False


def rails(argv: list[str], stdin: str) -> int:
    """``gitlab-rails runner <FILE> create|revoke``: root's token from the contract's file."""
    if len(argv) != 3 or argv[0] != "runner":
        print("usage (stand-in): gitlab-rails runner <FILE> create|revoke, the token on stdin", file=sys.stderr)
        return 1
    path, action = Path(argv[1]), argv[2]
    if not path.is_file():
        print("Please specify a valid ruby command or the path of a script to run.\n"
              f"Run 'bin/rails runner -h' for help.\n\nundefined local variable or method for {argv[1]!r}",
              file=sys.stderr)  # fmt: skip
        return 1
    if not backend_up():
        print('PG::ConnectionBad: connection to server on socket "/var/opt/gitlab/postgresql/.s.PGSQL.5432" '
              "failed: No such file or directory (the stand-in's backend is not up: wait until GitLab is healthy)",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        name, scopes, days = token_spec(path.read_text())
        if action not in ("create", "revoke"):
            raise Invalid(f"ARGV[0] must be create or revoke, not {action!r}")
    except Invalid as err:
        print(f"{path}: {err}", file=sys.stderr)
        return 1
    with database() as state:  # what a failed create revoked stays revoked, as on GitLab
        try:
            line = (
                seed_token(state, name, scopes, days, stdin.strip())
                if action == "create"
                else revoke_token(state, name)
            )
        except Invalid as err:
            print(f"{path}: {err}", file=sys.stderr)
            return 1
    print(line)
    return 0


def job_cli(argv: list[str]) -> int:
    """``gitlab-standin-job queue|show|list``: the lab's stand-in for pipelines."""
    import argparse

    parser = argparse.ArgumentParser(prog="gitlab-standin-job")
    sub = parser.add_subparsers(dest="command", required=True)
    queue = sub.add_parser("queue")
    queue.add_argument("--ref", required=True)
    queue.add_argument("--protected", action="store_true")
    queue.add_argument("--tag", action="append", default=[])
    queue.add_argument("--project", type=int, default=1)
    queue.add_argument("--seconds", type=float, default=1.0)
    queue.add_argument("--name", default="lab-job")
    show = sub.add_parser("show")
    show.add_argument("id")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    with database() as state:
        if args.command == "queue":
            try:
                job = queue_job(state, args.ref, protected=args.protected, tags=args.tag, project=args.project,
                                seconds=args.seconds, name=args.name)  # fmt: skip
            except Invalid as err:
                print(f"gitlab-standin-job: {err}", file=sys.stderr)
                return 1
            print(job["id"])
        elif args.command == "show":
            if args.id not in state["jobs"]:
                print(f"gitlab-standin-job: no job {args.id}", file=sys.stderr)
                return 1
            print(json.dumps(job_view(state["jobs"][args.id])))
        else:
            print(json.dumps([job_view(j) for _, j in sorted(state["jobs"].items(), key=lambda kv: int(kv[0]))]))
    return 0


def main() -> int:
    name = Path(sys.argv[0]).name
    if name == "gitlab-rails":
        return rails(sys.argv[1:], sys.stdin.read())
    if name == "gitlab-standin-job":
        return job_cli(sys.argv[1:])
    if sys.argv[1:] == ["serve"]:
        return serve()
    print(f"{name}: run as gitlab-rails, gitlab-standin-job, or with 'serve'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
