"""The GitLab stand-in's rules in-process (tools/lab/standin_image/gitlab_db.py, gitlab_ci.py, gitlab_api.py).

Token seeding as the contract's file does it on GitLab, 401/403 as GitLab answers,
the job queue's protection, tag, untagged and paused rules, gitlab-rails refusing while
the backend is down, and the image's recipe key following these files. No container:
tests/lab/test_gitlab_api_standin.py checks the same on the wire.
"""

from __future__ import annotations

import datetime
import importlib.util
import re
import secrets
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tools.lab import images as lab_images
from tools.lab.images import GITLAB_STANDIN, RUNNER_STANDIN

pytestmark = pytest.mark.lab

ADMIN_TOKEN = "fwp-" + secrets.token_urlsafe(24)  # made per run
READER_TOKEN = "fwr-" + secrets.token_urlsafe(24)
SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "gitlab_api.py"


def _ruby(
    name: str = "forgeway-provisioner", scopes: str = "create_runner manage_runner read_api", days: str = "30"
) -> str:
    """A file in the shape of the issue-17 contract (components/scripts/gitlab-api-token.rb)."""
    return f"""# frozen_string_literal: true
TOKEN_NAME = '{name}'
TOKEN_SCOPES = %w[{scopes}]
TOKEN_DAYS = {days}
value = STDIN.read.strip
user = User.find_by_username('root')
case ARGV[0]
when 'create' then puts 'created'  # the stand-in reads the lines above; GitLab runs this
when 'revoke' then puts 'revoked'
end
"""


def _api_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gitlab_api", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- in-process


def test_token_rules_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    api = _api_module()
    state = api.db._empty()
    name, scopes, days = api.db.token_spec(_ruby())
    assert (name, scopes, days) == ("forgeway-provisioner", ["create_runner", "manage_runner", "read_api"], 30)
    assert "created" in api.db.seed_token(state, name, scopes, days, ADMIN_TOKEN)
    assert "unchanged" in api.db.seed_token(state, name, scopes, days, ADMIN_TOKEN)
    assert "replaced" in api.db.seed_token(state, name, scopes, days, READER_TOKEN)
    assert [t["revoked"] for t in state["tokens"]] == [True, False]
    for bad_scopes, bad_days, value, message in (
        (["api", "bogus"], 30, ADMIN_TOKEN + "x", "Scopes can only contain available scopes (unknown: bogus)"),
        ([], 30, ADMIN_TOKEN + "x", "Scopes can't be blank"),
        (["api"], 366, ADMIN_TOKEN + "x", "Expiration date must be before"),
        (["api"], 0, ADMIN_TOKEN + "x", "Expiration date can't be blank"),
        (["api"], 30, "short-token", "at least 20 printable characters"),
        (["api"], 30, ADMIN_TOKEN, "another personal access token has this value"),
    ):  # the last: the revoked token's value, under another name
        with pytest.raises(api.db.Invalid, match=re.escape(message)):
            api.db.seed_token(state, "other", bad_scopes, bad_days, value)
    # the same value with other scopes (a new forgeway): the same token renewed in place, still the only active one
    assert "renewed" in api.db.seed_token(state, name, ["api"], days, READER_TOKEN)
    assert [(api.db.active(t), t["scopes"]) for t in state["tokens"]] == [(False, scopes), (True, ["api"])]
    # an expired one: renewed with a new expiry, not created again (GitLab would refuse its value)
    state["tokens"][1]["expires_at"] = "2000-01-01"
    assert "renewed" in api.db.seed_token(state, name, scopes, days, READER_TOKEN)
    assert api.db.active(state["tokens"][1])
    # a value GitLab holds revoked (the first one) is refused, naming the way out
    with pytest.raises(api.db.Invalid, match="was revoked in GitLab; rotate it"):
        api.db.seed_token(state, name, scopes, days, ADMIN_TOKEN)
    assert "replaced" in api.db.seed_token(state, name, scopes, days, READER_TOKEN + "-new")
    with pytest.raises(api.db.Invalid, match="TOKEN_DAYS once"):
        api.db.token_spec(_ruby().replace("TOKEN_DAYS = 30\n", ""))
    with pytest.raises(api.db.Invalid, match=r"STDIN\.read"):
        api.db.token_spec(_ruby().replace("STDIN.read.strip", "ARGV[1]"))

    # 401 unknown, revoked, expired; 403 a scope the endpoint does not take
    for token, status, body in (
        ("nope", 401, {"message": "401 Unauthorized"}),
        (ADMIN_TOKEN, 401, {"error": "invalid_token",
                            "error_description": "Token was revoked. You have to re-authorize from the user."}),
    ):  # fmt: skip
        with pytest.raises(api.db.ApiError) as err:
            api.db.authenticate(state, token, api.ALLOWED["user"])
        assert (err.value.status, err.value.body) == (status, body)
    assert api.db.authenticate(state, READER_TOKEN + "-new", api.ALLOWED["user"])["name"] == name
    api.db.seed_token(state, "reader", ["read_user"], 30, ADMIN_TOKEN + "-reader")
    with pytest.raises(api.db.ApiError) as err:
        api.db.authenticate(state, ADMIN_TOKEN + "-reader", api.ALLOWED["runner_create"])
    assert err.value.status == 403 and err.value.body["scope"] == "api create_runner", err.value.body
    later = api.db.today() + datetime.timedelta(days=31)
    monkeypatch.setattr(api.db, "today", lambda: later)
    with pytest.raises(api.db.ApiError) as err:
        api.db.authenticate(state, READER_TOKEN + "-new", api.ALLOWED["user"])
    assert err.value.body == {"error": "invalid_token", "error_description": "Token has expired."}

    # gitlab-rails: seeds through the contract's file; refuses while the backend (GitLab's database) is down
    monkeypatch.setattr(api.db, "DB", tmp_path / "db.json")
    (tmp_path / "token.rb").write_text(_ruby())
    monkeypatch.setattr(api, "backend_up", lambda: True)
    assert api.rails(["runner", str(tmp_path / "token.rb"), "create"], ADMIN_TOKEN) == 0
    assert (tmp_path / "db.json").stat().st_mode & 0o777 == 0o600
    monkeypatch.setattr(api, "backend_up", lambda: False)
    assert api.rails(["runner", str(tmp_path / "token.rb"), "revoke"], ADMIN_TOKEN) == 1
    with api.db.database() as after:
        assert [t["revoked"] for t in after["tokens"]] == [False]


def test_image_cache_key_follows_the_standin_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A changed stand-in file changes its image's recipe key: the cached tarball is not reused."""
    shutil.copytree(SCRIPT.parent, tmp_path / "tools" / "lab" / "standin_image")
    monkeypatch.setattr(lab_images, "REPO_ROOT", tmp_path)
    for image, name in ((GITLAB_STANDIN, "gitlab_api.py"), (GITLAB_STANDIN, "gitlab_ci.py"),
                        (GITLAB_STANDIN, "gitlab_db.py"), (RUNNER_STANDIN, "runner_gitlab.py")):  # fmt: skip
        before = lab_images.RECIPES[image].key()
        script = tmp_path / "tools" / "lab" / "standin_image" / name
        script.write_text(script.read_text() + "\n# changed\n")
        assert lab_images.RECIPES[image].key() != before, image


def test_queue_rules_in_process() -> None:
    api = _api_module()
    state = api.db._empty()
    protected = api.ci.create_runner(state, {"runner_type": "instance_type", "access_level": "ref_protected",
                                          "tag_list": "amd64,docker", "run_untagged": False})  # fmt: skip
    open_runner = api.ci.create_runner(state, {"runner_type": "instance_type", "tag_list": ["amd64"]})
    assert protected["token"].startswith("glrt-") and protected["id"] != open_runner["id"]
    p, u = state["runners"][str(protected["id"])], state["runners"][str(open_runner["id"])]
    feature = api.ci.queue_job(state, "feature", protected=False, tags=["amd64"])
    main = api.ci.queue_job(state, "main", protected=True, tags=["amd64", "docker"])
    untagged = api.ci.queue_job(state, "main", protected=True, tags=[])
    arm = api.ci.queue_job(state, "main", protected=True, tags=["arm64"])
    assert not api.ci.can_pick(p, feature)  # the rule: no unprotected ref for a ref_protected runner
    assert api.ci.can_pick(p, main) and not api.ci.can_pick(u, main)  # u lacks the docker tag
    assert not api.ci.can_pick(p, untagged) and api.ci.can_pick(u, untagged)
    assert not api.ci.can_pick(p, arm) and not api.ci.can_pick(u, arm)
    p["paused"] = True  # paused runners get nothing
    assert not api.ci.can_pick(p, main) and api.ci.request_job(state, p) is None
    p["paused"] = False
    assert api.ci.request_job(state, p)["id"] == main["id"]
    assert api.ci.request_job(state, p) is None
    with pytest.raises(api.db.ApiError) as err:
        api.ci.create_runner(state, {"runner_type": "group_type", "group_id": 7})
    assert err.value.status == 404
    with pytest.raises(api.db.ApiError) as err:
        api.ci.create_runner(state, {"runner_type": "instance_type", "maximum_timeout": 60})
    assert err.value.body == {"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}
