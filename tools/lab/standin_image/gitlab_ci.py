"""Runners and the job queue of the GitLab stand-in (see gitlab_api.py, which serves them).

GitLab's rules for creating and changing runners, and for which runner may take which
job (Ci::Runner#can_pick?): protection, tags, run_untagged, paused, scope. Standard
library only.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.lab.standin_image import gitlab_db as db
else:  # beside this file, in the repository and in the image
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gitlab_db as db

MIN_TIMEOUT = 600  # Ci::Runner validates maximum_timeout >= 10 minutes
RUNNER_TYPES = ("instance_type", "group_type", "project_type")
ACCESS_LEVELS = ("not_protected", "ref_protected")
RUNNER_TOKEN_PREFIX = "glrt-"  # noqa: S105 (a prefix)

# --------------------------------------------------------------------------- runners


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise db.bad_request(f"{name} is invalid")


def _tags(value: object) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return sorted({str(tag).strip() for tag in items if str(tag).strip()})


def runner_settings(params: db.Json, runner: db.Json) -> None:  # noqa: PLR0912 (one branch a field)
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
            raise db.bad_request("access_level does not have a valid value")
        runner["access_level"] = params["access_level"]
    if "maximum_timeout" in params:
        try:
            timeout = int(params["maximum_timeout"])
        except (TypeError, ValueError):
            raise db.bad_request("maximum_timeout is invalid") from None
        if timeout < MIN_TIMEOUT:
            raise db.bad_request({"maximum_timeout": ["needs to be at least 10 minutes"]})
        runner["maximum_timeout"] = timeout
    if "maintenance_note" in params:
        runner["maintenance_note"] = str(params["maintenance_note"])
    if not runner["run_untagged"] and not runner["tag_list"]:
        raise db.bad_request({"tags_list": ["can not be empty when runner is not allowed to pick untagged jobs"]})


def create_runner(state: db.Json, params: db.Json) -> db.Json:
    runner_type = params.get("runner_type")
    if runner_type is None:
        raise db.bad_request("runner_type is missing")
    if runner_type not in RUNNER_TYPES:
        raise db.bad_request("runner_type does not have a valid value")
    runner: db.Json = {
        "id": db.next_id(state, "runner"), "runner_type": runner_type, "description": "", "paused": False,
        "locked": False, "run_untagged": True, "tag_list": [], "access_level": "not_protected",
        "maximum_timeout": None, "maintenance_note": None, "created_at": db.now(), "contacted_at": None,
        "group_id": None, "project_id": None,
    }  # fmt: skip
    for kind, table in (("group", db.GROUPS), ("project", db.PROJECTS)):
        if runner_type == f"{kind}_type":
            raw = params.get(f"{kind}_id")
            if raw is None:
                raise db.bad_request(f"{kind}_id is missing")
            if not str(raw).isdigit() or int(raw) not in table:
                raise db.not_found(kind.capitalize())
            runner[f"{kind}_id"] = int(raw)
    runner_settings(params, runner)
    token = RUNNER_TOKEN_PREFIX + secrets.token_urlsafe(15)
    runner["token_digest"] = db.digest(token)
    state["runners"][str(runner["id"])] = runner
    return {"id": runner["id"], "token": token, "token_expires_at": None}


def runner_view(runner: db.Json) -> db.Json:
    contacted = runner["contacted_at"]
    status = "paused" if runner["paused"] else ("online" if contacted else "never_contacted")
    return {
        "id": runner["id"], "description": runner["description"], "ip_address": None,
        "active": not runner["paused"], "paused": runner["paused"],
        "is_shared": runner["runner_type"] == "instance_type",
        "runner_type": runner["runner_type"], "name": None, "online": contacted is not None, "status": status,
        "created_at": runner["created_at"], "created_by": {k: db.ROOT[k] for k in ("id", "username", "name")},
        "contacted_at": contacted, "tag_list": runner["tag_list"], "run_untagged": runner["run_untagged"],
        "locked": runner["locked"], "maximum_timeout": runner["maximum_timeout"],
        "access_level": runner["access_level"], "maintenance_note": runner["maintenance_note"],
        "version": None, "revision": None, "platform": None, "architecture": None,
        "groups": [db.GROUPS[runner["group_id"]]] if runner["group_id"] else [],
        "projects": [{k: v for k, v in db.PROJECTS[runner["project_id"]].items() if k != "group_id"}]
        if runner["project_id"] else [],
    }  # fmt: skip


SHORT = ("id", "description", "ip_address", "active", "paused", "is_shared", "runner_type", "name", "online",
         "status")  # fmt: skip


def list_runners(state: db.Json, params: db.Json) -> list[db.Json]:
    """``GET /runners/all`` (administrators): the short form, oldest first, ``type``/``paused`` filters, pages of 20."""
    runners = [runner_view(r) for _, r in sorted(state["runners"].items(), key=lambda kv: int(kv[0]))]
    if "type" in params:
        runners = [r for r in runners if r["runner_type"] == params["type"]]
    if "paused" in params:
        runners = [r for r in runners if r["paused"] == _bool(params["paused"], "paused")]
    try:
        page, per_page = max(1, int(params.get("page", 1))), min(100, max(1, int(params.get("per_page", 20))))
    except ValueError:
        raise db.bad_request("page is invalid") from None
    return [{k: r[k] for k in SHORT} for r in runners[(page - 1) * per_page : page * per_page]]


def find_runner(state: db.Json, raw_id: str) -> db.Json:
    runner = state["runners"].get(raw_id) if raw_id.isdigit() else None
    if runner is None:
        raise db.not_found("Runner")
    found: db.Json = runner  # the stored dict: callers change it
    return found


def runner_by_token(state: db.Json, params: db.Json) -> db.Json:
    token = params.get("token")
    if not token:
        raise db.bad_request("token is missing")
    runner = next((r for r in state["runners"].values() if r["token_digest"] == db.digest(str(token))), None)
    if runner is None:
        raise db.ApiError(403)
    runner["contacted_at"] = db.now()
    found: db.Json = runner
    return found


# --------------------------------------------------------------------------- jobs


def queue_job(
    state: db.Json, ref: str, *, protected: bool, tags: list[str], project: int = 1, seconds: float = 1.0,
    name: str = "lab-job",
) -> db.Json:  # fmt: skip
    if project not in db.PROJECTS:
        raise db.Invalid(f"no project {project}: the stand-in has {sorted(db.PROJECTS)}")
    job = {
        "id": db.next_id(state, "job"), "name": name, "ref": ref, "protected": protected, "tags": sorted(set(tags)),
        "project_id": project, "seconds": seconds, "status": "pending", "runner_id": None,
        "token_digest": None, "created_at": db.now(), "started_at": None, "finished_at": None,
    }  # fmt: skip
    state["jobs"][str(job["id"])] = job
    return job


def can_pick(runner: db.Json, job: db.Json) -> bool:  # noqa: PLR0911 (one return a rule)
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
        return bool(db.PROJECTS[job["project_id"]]["group_id"] == runner["group_id"])
    if runner["runner_type"] == "project_type":
        return bool(job["project_id"] == runner["project_id"])
    return True


def request_job(state: db.Json, runner: db.Json) -> db.Json | None:
    job = next((j for _, j in sorted(state["jobs"].items(), key=lambda kv: int(kv[0])) if can_pick(runner, j)), None)
    if job is None:
        return None
    job_token = "glcbt-" + secrets.token_urlsafe(15)
    job.update(status="running", runner_id=runner["id"], token_digest=db.digest(job_token), started_at=db.now())
    project = db.PROJECTS[job["project_id"]]
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


def update_job(state: db.Json, raw_id: str, params: db.Json) -> None:
    job = state["jobs"].get(raw_id) if raw_id.isdigit() else None
    if job is None:
        raise db.not_found("Job")
    if job["token_digest"] is None or job["token_digest"] != db.digest(str(params.get("token", ""))):
        raise db.ApiError(403)
    if params.get("state") in ("success", "failed"):
        job.update(status=params["state"], finished_at=db.now())


def job_view(job: db.Json) -> db.Json:
    return {k: v for k, v in job.items() if k != "token_digest"}
