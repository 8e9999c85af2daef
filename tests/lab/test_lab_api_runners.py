"""Runners created through GitLab's API on the session lab (issue 17).

`make lab` brings the runners up with no token written by hand: the program seeds its API
token with gitlab-rails, the applier's pulumi-gitlab emulation creates one UserRunner per
runner host, and each runner stand-in verifies its token and asks the GitLab stand-in for
jobs (POST /runners/verify, POST /jobs/request), which hands a job of an unprotected ref
to no ref_protected runner, as GitLab does. Here, against that lab:

* both runners are registered and verified from nothing in one up;
* a privileged runner (created ref_protected) never receives an unprotected job, and does
  receive a protected one;
* a rotated token (the UserRunner replaced) keeps the runner working, and the old token
  is gone from GitLab;
* a hand token (runner_tokens) of a runner GitLab holds not_protected, on a runner host
  configured privileged, is refused before deploy, naming the runner, and its container
  is not touched;
* destroy removes the runners from GitLab (checked by tests/lab/test_lab_destroy.py, which
  destroys this lab anyway at the end of the tier).

GitLab's API is asked the way the deployer reaches it: the public name, at the VPS's
public address, TLS checked against the stack's CA and that name.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.lab.make_lab import SEEDS, VPS, MakeLab
from tools.stack.synth import unwrap

NAME = "gitlab.forgeway.test"
ARCH = {"runner-arm": "arm64", "runner-amd": "amd64"}
RUNNERS = tuple(ARCH)
_PROBE = f"""
import http.client, json, socket, ssl, sys
r = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=r["ca"])
c = http.client.HTTPSConnection({VPS!r}, 443, timeout=15, context=ctx)
c.sock = ctx.wrap_socket(socket.create_connection(({VPS!r}, 443), 15), server_hostname={NAME!r})
headers = {{"Content-Type": "application/json", "Host": {NAME!r}}}
if r["token"]:
    headers["PRIVATE-TOKEN"] = r["token"]
body = json.dumps(r["body"]) if r["body"] is not None else None
c.request(r["method"], "/api/v4/" + r["path"], body=body, headers=headers)
answer = c.getresponse()
print(answer.status)
print(answer.read().decode())
"""


def _plain(value: Any) -> Any:
    """A state value with Pulumi's secret marker taken off."""
    return unwrap(value)


def _entry(lab: MakeLab, type_: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = lab.state().get(f"{type_}::{name}")
    return found


def _admin_token(lab: MakeLab) -> str:
    entry = _entry(lab, "random:index/randomPassword:RandomPassword", "gitlab-api-token-value")
    assert entry is not None, "no API token in the lab's state"
    return str(_plain(entry["outputs"]["result"]))


def _api(lab: MakeLab, method: str, path: str, *, token: str = "", body: Any = None) -> tuple[int, Any]:
    """One request to GitLab's API from the internet side (the client namespace): (status, JSON or text)."""
    request = {"ca": lab.ca_certificate(), "method": method, "path": path, "token": token, "body": body}
    out = lab.machine("client").succeed(["python3", "-c", _PROBE], stdin=json.dumps(request))
    status, _, text = out.partition("\n")
    try:
        return int(status), json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return int(status), text


def _runner(lab: MakeLab, host: str) -> dict[str, Any]:
    entry = _entry(lab, "gitlab:index/userRunner:UserRunner", f"{host}-runner-registration")
    assert entry is not None, f"{host}: no UserRunner in the lab's state"
    return entry


def _config_token(lab: MakeLab, host: str) -> str:
    text = lab.machine(host).docker("exec", "forgeway-runner", "cat", "/etc/gitlab-runner/config.toml")
    token: str = tomllib.loads(text)["runners"][0]["token"]
    return token


def _apply(lab: MakeLab, edit: Callable[[dict[str, Any]], None]) -> tuple[int, str]:
    """Apply the lab stack with ``edit`` made to its config: (exit status, the applier's log)."""
    from tools.lab.config import lab_config
    from tools.lab.layout import STATE
    from tools.lab.topology import _applier_run
    from tools.stack.synth import stack_config_strings

    config, secret_keys = lab_config(lab.topology)
    edit(config)
    secret_keys = [k for k in secret_keys if k in config]
    if "forgeway:runner_tokens" in config:  # set as `pulumi config set --secret` would
        secret_keys.append("forgeway:runner_tokens")
    done = _applier_run(
        {"action": "apply", "stack": "lab", "config": stack_config_strings(config), "secret_keys": secret_keys,
         "state": str(STATE), "seed": SEEDS[0], "resolve": {NAME: VPS}}
    )  # fmt: skip
    # The lab as this apply left it: as `make lab` has it only after a put-back that went through.
    lab.applied = None
    return done.returncode, done.stderr


def _runner_settings(host: str, **settings: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        entry = next(h for h in config["forgeway:hosts"] if h["name"] == host)
        entry["runner"] = {**entry.get("runner", {}), **settings}

    return edit


def _put_back(lab: MakeLab) -> None:
    """The lab applied as `make lab` has it."""
    code, log = _apply(lab, lambda _: None)
    assert code == 0, f"could not put the lab back: {log[-3000:]}"
    lab.applied = True


@dataclass(frozen=True)
class Edited:
    """The lab applied with both edits of this module's last two tests, which touch different
    runner hosts: runner-amd privileged and protected, runner-arm's runner project-scoped (a
    replace). ``arm_before`` is runner-arm's UserRunner as `make lab` had it."""

    lab: MakeLab
    arm_before: dict[str, Any]


def _both_edits(config: dict[str, Any]) -> None:
    _runner_settings("runner-amd", privileged=True, protected=True)(config)
    # runner.scope forces a replace (runnerType: RequiresReplace); project 1 is the stand-in's.
    _runner_settings("runner-arm", scope="project", project_id=1)(config)


@pytest.fixture(scope="module")
def edited(_session_make_lab: MakeLab) -> Iterator[Edited]:
    """One apply with both edits for the two tests that need them, and one put-back after
    both (each edit alone was an apply and a put-back of its own: twice the applies)."""
    lab = _session_make_lab
    lab.ensure_up()
    arm_before = _runner(lab, "runner-arm")
    code, log = _apply(lab, _both_edits)
    try:
        assert code == 0, log[-3000:]
        yield Edited(lab, arm_before)
    finally:
        _put_back(lab)


def _job(lab: MakeLab, *args: str) -> str:
    return lab.machine("home").docker("exec", "forgeway-gitlab", "/opt/gitlab/bin/gitlab-standin-job", *args).strip()


def _job_state(lab: MakeLab, job: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(_job(lab, "show", job))
    return shown


def _runner_log(lab: MakeLab, host: str, wanted: str = "", timeout: float = 0) -> str:
    """The runner stand-in's log, once it holds ``wanted`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        log = lab.machine(host).docker_execute("logs", "forgeway-runner").stdout
        if wanted in log or time.monotonic() >= deadline:
            return log
        time.sleep(1)


def _wait_job(lab: MakeLab, job: str, timeout: float) -> dict[str, Any]:
    """The job once a runner took it, or as it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (shown := _job_state(lab, job))["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(1)
    return shown


def test_both_runners_are_registered_and_verified_from_nothing_in_one_up(make_lab: MakeLab) -> None:
    admin = _admin_token(make_lab)
    for host in RUNNERS:
        assert _entry(make_lab, "command:local:Command", f"{host}-runner-token-check") is None, "a hand token"
        runner = _runner(make_lab, host)
        status, details = _api(make_lab, "GET", f"runners/{runner['id']}", token=admin)
        assert status == 200, details
        assert host in details["description"] and ARCH[host] in details["tag_list"], details
        assert details["run_untagged"] is False and details["access_level"] == "not_protected", details
        token = _config_token(make_lab, host)
        assert token == _plain(runner["outputs"]["token"]), f"{host}: config.toml holds another token"
        status, verified = _api(make_lab, "POST", "runners/verify", body={"token": token})
        assert (status, str(verified["id"])) == (200, str(runner["id"])), verified
        log = _runner_log(make_lab, host, "Verifying runner... is valid", timeout=60)
        assert "Verifying runner... is valid" in log, f"{host} did not verify its token:\n{log[-1500:]}"


def test_a_hand_token_of_an_unprotected_runner_configured_privileged_is_refused(make_lab: MakeLab) -> None:
    admin = _admin_token(make_lab)
    status, made = _api(
        make_lab, "POST", "user/runners", token=admin,
        body={"runner_type": "instance_type", "description": "made by hand", "tag_list": ["amd64"],
              "run_untagged": False, "access_level": "not_protected"},
    )  # fmt: skip
    assert status == 201, made
    container = make_lab.machine("runner-amd").docker("inspect", "-f", "{{.Id}}", "forgeway-runner").strip()

    def hand_token(config: dict[str, Any]) -> None:
        _runner_settings("runner-amd", privileged=True, protected=True)(config)
        config["forgeway:runner_tokens"] = {"runner-amd": made["token"]}
        # The check runs on the deployer with its own resolver; the lab has no DNS, so it
        # asks the VPS's public address, which the certificate names too.
        config["forgeway:runners"]["api_url"] = f"https://{VPS}/api/v4/"

    try:
        code, log = _apply(make_lab, hand_token)
        assert code != 0, "a hand token GitLab holds not_protected was deployed on a privileged runner"
        assert "runner 'runner-amd' is refused" in log and "not_protected" in log, log[-2000:]
        assert made["token"] not in log, "the hand token leaked into the log"
        now = make_lab.machine("runner-amd").docker("inspect", "-f", "{{.Id}}", "forgeway-runner").strip()
        assert now == container, "the runner container was touched before the check"
    finally:
        _api(make_lab, "DELETE", f"runners/{made['id']}", token=admin)
        _put_back(make_lab)


# The last two tests run on the lab with both their edits applied at once (fixture `edited`),
# after the tests above, which want it as `make lab` has it: a module fixture is set up at its
# first use and put back after the module's last test.


def test_a_privileged_runner_never_receives_an_unprotected_job(edited: Edited) -> None:
    lab = edited.lab  # runner-amd privileged and protected
    admin = _admin_token(lab)
    runner = _runner(lab, "runner-amd")
    status, details = _api(lab, "GET", f"runners/{runner['id']}", token=admin)
    assert (status, details["access_level"]) == (200, "ref_protected"), details
    # Only runner-amd has the amd64 tag: an unprotected job waits, a protected one runs there.
    unprotected = _job(lab, "queue", "--ref", "feature/x", "--tag", "amd64", "--seconds", "1")
    protected = _job(lab, "queue", "--ref", "main", "--protected", "--tag", "amd64", "--seconds", "1")
    taken = _wait_job(lab, protected, timeout=60)
    log = _runner_log(lab, "runner-amd")[-1500:]
    assert taken["status"] != "pending" and str(taken["runner_id"]) == str(runner["id"]), f"{taken}\n{log}"
    waiting = _wait_job(lab, unprotected, timeout=10)
    assert waiting["status"] == "pending" and not waiting.get("runner_id"), waiting


def test_a_rotated_token_keeps_the_runner_working(edited: Edited) -> None:
    lab, before = edited.lab, edited.arm_before  # runner-arm's runner replaced (project-scoped)
    old_token = str(_plain(before["outputs"]["token"]))
    after = _runner(lab, "runner-arm")
    new_token = _config_token(lab, "runner-arm")
    assert after["id"] != before["id"] and new_token != old_token
    assert new_token == _plain(after["outputs"]["token"]), "config.toml has the new runner's token"
    assert _api(lab, "POST", "runners/verify", body={"token": new_token})[0] == 200
    assert _api(lab, "POST", "runners/verify", body={"token": old_token})[0] == 403, "old runner left"
    job = _job(lab, "queue", "--ref", "main", "--tag", "arm64", "--project", "1", "--seconds", "1")
    taken = _wait_job(lab, job, timeout=60)
    log = _runner_log(lab, "runner-arm")[-1500:]
    assert str(taken["runner_id"]) == str(after["id"]), f"{taken}\n{log}"
