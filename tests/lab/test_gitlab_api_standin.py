"""The GitLab stand-in's REST API, gitlab-rails and job queue (tools/lab/standin_image/gitlab_*.py) on the wire.

The rules themselves are checked in-process in tests/lab/test_gitlab_api_rules.py. Here the
GitLab stand-in in a real dockerd in a namespace of its own (random name: no shared
lock needed), with its own CA, reached with curl from the namespace over TLS as the
pulumi-gitlab provider and curl users reach GitLab: root's token seeded by
``gitlab-rails runner <FILE> create`` (the token on stdin), 401/403 as GitLab answers,
runners created, read, changed and deleted, ``verify`` and ``jobs/request`` with
protection and tags enforced, all of it kept over a new container on the same volumes;
and the runner stand-in verifying its ``glrt-`` token and taking only the jobs GitLab
may give it.

Needs root, docker.io and debootstrap: fails loudly without them, never skips.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.render.runner_config import CA_PATH, RunnerSettingsView, render_config_toml
from tests.certs import gitlab_ssl
from tests.lab.netns import isolated_netns, require_docker_tools
from tests.lab.test_gitlab_api_rules import _ruby
from tools.lab.docker import DaemonInfo, docker
from tools.lab.dockerd import start_dockerd, stop_dockerd
from tools.lab.images import GITLAB_STANDIN, RUNNER_STANDIN, ensure_image
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

ADDRESS = "203.0.113.81"  # only inside the test's own namespace, which has no link out
DOMAIN = "gitlab.api.test"
PASSWORD = "lab root password " + secrets.token_hex(4)
ADMIN_TOKEN = "fwp-" + secrets.token_urlsafe(24)  # made per run
READER_TOKEN = "fwr-" + secrets.token_urlsafe(24)
TOKEN_FILE = "/etc/gitlab/forgeway/gitlab-api-token.rb"  # noqa: S105 (a path)
VOLUMES = {"ga-config": "/etc/gitlab", "ga-logs": "/var/log/gitlab", "ga-data": "/var/opt/gitlab"}
HEALTHCHECK = ["/opt/gitlab/bin/gitlab-healthcheck", "--fail", "--max-time", "10"]


# --------------------------------------------------------------------------- in a real dockerd


class Lab:
    """The namespace, its dockerd (with both images), the CA, a scratch directory."""

    def __init__(self, netns: str, daemon: DaemonInfo, scratch: Path) -> None:
        self.netns, self.daemon, self.scratch = netns, daemon, scratch
        self.ca = gitlab_ssl(scratch, DOMAIN, ADDRESS, "forgeway api lab CA")

    def docker(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return docker(self.daemon, *args, input=input, check=check, timeout=120)

    def logs(self, name: str) -> str:
        done = self.docker("logs", name, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")

    def api(self, method: str, path: str, *, token: str | None = None, bearer: bool = False,
            body: dict[str, Any] | None = None) -> tuple[int, Any]:  # fmt: skip
        """(status, JSON or None) of ``method /api/v4<path>`` from the namespace; headers and body via stdin."""
        lines = [f'request = "{method}"', f'url = "https://{DOMAIN}/api/v4{path}"']
        if token is not None:
            header = f"Authorization: Bearer {token}" if bearer else f"PRIVATE-TOKEN: {token}"
            lines.append(f'header = "{header}"')
        if body is not None:
            escaped = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
            lines += ['header = "Content-Type: application/json"', f'data = "{escaped}"']
        cmd = ["curl", "-sS", "--max-time", "10", "--cacert", str(self.ca), "--resolve", f"{DOMAIN}:443:{ADDRESS}",
               "-o", "-", "-w", "\n%{http_code}", "-K", "-"]  # fmt: skip
        done = subprocess.run(Machine("host", self.netns).argv(cmd), input="\n".join(lines).encode() + b"\n",
                              capture_output=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, f"curl {method} {path}: {done.stderr.decode()}"
        text, _, code = done.stdout.decode().rpartition("\n")
        return int(code), json.loads(text) if text.strip() else None

    def rails(self, action: str, token: str, path: str = TOKEN_FILE) -> subprocess.CompletedProcess[bytes]:
        return self.docker("exec", "-i", "gitlab", "gitlab-rails", "runner", path, action,
                           input=token.encode() + b"\n", check=False)  # fmt: skip

    def job(self, *args: str) -> Any:
        return json.loads(self.docker("exec", "gitlab", "gitlab-standin-job", *args).stdout)

    def upload(self, container: str, files: dict[str, tuple[bytes, int]]) -> None:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for path, (data, mode) in files.items():
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        self.docker("cp", "-", f"{container}:/", input=out.getvalue())

    def start_gitlab(self) -> float:
        """A new container named gitlab on the three volumes, as the program runs omnibus; seconds to healthy."""
        self.docker("rm", "-f", "gitlab", check=False)
        env = f"external_url 'https://{DOMAIN}'\nletsencrypt['enable'] = false\n"
        env_file = self.scratch / "gitlab.env"  # the password never on a command line
        env_file.write_text(f"GITLAB_ROOT_PASSWORD={PASSWORD}\n")
        env_file.chmod(0o600)
        args = ["-e", f"GITLAB_OMNIBUS_CONFIG={env}", "--env-file", str(env_file)]
        for volume, path in VOLUMES.items():
            args += ["-v", f"{volume}:{path}"]
        self.docker("create", "--name", "gitlab", "--hostname", DOMAIN, "-p", f"{ADDRESS}:443:443", *args,
                    GITLAB_STANDIN)  # fmt: skip
        ssl = self.scratch / "ssl"
        self.upload("gitlab", {
            f"/etc/gitlab/ssl/{DOMAIN}.crt": ((ssl / f"{DOMAIN}.crt").read_bytes(), 0o644),
            f"/etc/gitlab/ssl/{DOMAIN}.key": ((ssl / f"{DOMAIN}.key").read_bytes(), 0o600),
            TOKEN_FILE: (_ruby().encode(), 0o600),
            "/etc/gitlab/forgeway/reader.rb": (_ruby("lab-reader", "read_user").encode(), 0o600),
            "/etc/gitlab/forgeway/long.rb": (_ruby("too-long", "api", "400").encode(), 0o600),
            "/etc/gitlab/forgeway/bogus.rb": (_ruby("bogus", "api bogus_scope").encode(), 0o600),
            "/etc/gitlab/forgeway/short.rb": (_ruby("short").encode(), 0o600),
        })  # fmt: skip
        self.docker("start", "gitlab")
        started = time.monotonic()
        while self.docker("exec", "gitlab", *HEALTHCHECK, check=False).returncode != 0:
            state = json.loads(self.docker("inspect", "--format", "{{json .State}}", "gitlab").stdout)
            assert state["Running"], f"gitlab exited ({state['ExitCode']}):\n{self.logs('gitlab')}"
            assert time.monotonic() - started < 120, self.logs("gitlab")
            time.sleep(0.5)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_docker_tools("curl")
    scratch = Path(tempfile.mkdtemp(prefix="fwga-"))
    try:
        with isolated_netns("fwga", ADDRESS) as netns:
            daemon = None
            try:
                daemon = start_dockerd(netns, scratch / "docker", index=10)
                print(f"\nensure_image: {ensure_image(daemon, GITLAB_STANDIN)} {ensure_image(daemon, RUNNER_STANDIN)}")
                made = Lab(netns, daemon, scratch)
                print(f"healthy after {made.start_gitlab():.1f}s")
                yield made
            finally:
                if daemon is not None:
                    stop_dockerd(daemon)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


RUNNERS: dict[str, int] = {}  # name -> id, shared by the tests below in file order
RUNNER_TOKENS: dict[str, str] = {}


def test_root_token_is_seeded_by_gitlab_rails_and_scopes_are_enforced(lab: Lab) -> None:
    done = lab.rails("create", ADMIN_TOKEN)
    assert done.returncode == 0 and b"created" in done.stdout, done
    again = lab.rails("create", ADMIN_TOKEN)
    assert again.returncode == 0 and b"unchanged" in again.stdout, again
    assert lab.rails("create", READER_TOKEN, "/etc/gitlab/forgeway/reader.rb").returncode == 0
    for output in (done, again):
        assert ADMIN_TOKEN.encode() not in output.stdout + output.stderr
    long = lab.rails("create", ADMIN_TOKEN + "-long", "/etc/gitlab/forgeway/long.rb")
    assert long.returncode == 1 and b"Validation failed: Expiration date must be before" in long.stderr, long
    bogus = lab.rails("create", ADMIN_TOKEN + "-bogus", "/etc/gitlab/forgeway/bogus.rb")
    assert bogus.returncode == 1 and b"Scopes can only contain available scopes" in bogus.stderr, bogus
    short = lab.rails("create", "tooshort", "/etc/gitlab/forgeway/short.rb")
    assert short.returncode == 1 and b"at least 20 printable characters" in short.stderr, short

    for bearer in (False, True):
        status, user = lab.api("GET", "/user", token=ADMIN_TOKEN, bearer=bearer)
        assert status == 200 and (user["username"], user["is_admin"]) == ("root", True), (status, user)
    assert lab.api("GET", "/user") == (401, {"message": "401 Unauthorized"})
    assert lab.api("GET", "/user", token="glpat-" + secrets.token_urlsafe(20)) == (401, {"message": "401 Unauthorized"})
    status, body = lab.api("POST", "/user/runners", token=READER_TOKEN, body={"runner_type": "instance_type"})
    assert status == 403 and body["error"] == "insufficient_scope" and body["scope"] == "api create_runner", body
    assert lab.api("GET", "/version", token=ADMIN_TOKEN)[0] == 200
    status, body = lab.api("GET", "/personal_access_tokens/self", token=ADMIN_TOKEN, bearer=True)
    assert status == 200 and body["scopes"] == ["create_runner", "manage_runner", "read_api"] and body["active"]


def test_runners_are_created_read_changed_and_deleted(lab: Lab) -> None:
    for name, access, tags, untagged in (("privileged", "ref_protected", ["amd64", "docker"], False),
                                         ("plain", "not_protected", ["amd64"], True),
                                         ("doomed", "not_protected", [], True)):  # fmt: skip
        status, made = lab.api("POST", "/user/runners", token=ADMIN_TOKEN, bearer=True, body={
            "runner_type": "instance_type", "description": f"lab {name}", "access_level": access,
            "tag_list": tags, "run_untagged": untagged, "locked": True, "maximum_timeout": 3600, "paused": False,
        })  # fmt: skip
        assert status == 201 and made["token"].startswith("glrt-") and made["token_expires_at"] is None, made
        RUNNERS[name], RUNNER_TOKENS[name] = made["id"], made["token"]
    status, listed = lab.api("GET", "/runners/all?type=instance_type", token=ADMIN_TOKEN)
    assert status == 200 and [r["id"] for r in listed] == list(RUNNERS.values()), listed
    assert "access_level" not in listed[0] and listed[0]["status"] == "never_contacted", listed
    status, got = lab.api("GET", f"/runners/{RUNNERS['privileged']}", token=ADMIN_TOKEN)
    assert status == 200, got
    expected = {"access_level": "ref_protected", "is_shared": True, "runner_type": "instance_type",
                "tag_list": ["amd64", "docker"], "run_untagged": False, "locked": True, "maximum_timeout": 3600,
                "active": True, "paused": False, "description": "lab privileged",
                "groups": [], "projects": []}  # fmt: skip
    assert {k: got[k] for k in expected} == expected, got
    assert "token" not in got

    status, got = lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=ADMIN_TOKEN, body={"paused": True})
    assert status == 200 and (got["paused"], got["active"]) == (True, False), got
    assert lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=ADMIN_TOKEN, body={"maximum_timeout": 60})[0] == 400
    assert lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=READER_TOKEN, body={"paused": False})[0] == 403
    assert lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=ADMIN_TOKEN, body={"paused": False})[0] == 200

    assert lab.api("POST", "/runners/verify", body={"token": RUNNER_TOKENS["doomed"]})[0] == 200
    assert lab.api("DELETE", f"/runners/{RUNNERS['doomed']}", token=ADMIN_TOKEN) == (204, None)
    assert lab.api("GET", f"/runners/{RUNNERS['doomed']}", token=ADMIN_TOKEN) == (
        404,
        {"message": "404 Runner Not Found"},
    )
    assert lab.api("POST", "/runners/verify", body={"token": RUNNER_TOKENS["doomed"]}) == (
        403,
        {"message": "403 Forbidden"},
    )
    status, verified = lab.api("POST", "/runners/verify", body={"token": RUNNER_TOKENS["privileged"]})
    assert status == 200 and verified["id"] == RUNNERS["privileged"], verified


def _request(lab: Lab, name: str) -> int | None:
    status, job = lab.api("POST", "/jobs/request", body={"token": RUNNER_TOKENS[name], "info": {}})
    assert status in (201, 204), (status, job)
    return int(job["id"]) if status == 201 else None


def test_jobs_go_only_where_gitlab_lets_them(lab: Lab) -> None:
    feature = lab.job("queue", "--ref", "feature", "--tag", "amd64")
    assert _request(lab, "privileged") is None  # unprotected ref: never to a ref_protected runner
    assert _request(lab, "plain") == feature
    main = lab.job("queue", "--ref", "main", "--protected", "--tag", "amd64", "--tag", "docker")
    assert _request(lab, "plain") is None  # no docker tag
    assert _request(lab, "privileged") == main
    untagged = lab.job("queue", "--ref", "main", "--protected")
    assert _request(lab, "privileged") is None  # run_untagged false
    lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=ADMIN_TOKEN, body={"paused": True})
    assert _request(lab, "plain") is None  # paused runners get nothing
    lab.api("PUT", f"/runners/{RUNNERS['plain']}", token=ADMIN_TOKEN, body={"paused": False})
    assert _request(lab, "plain") == untagged
    shown = {job["id"]: job for job in lab.job("list")}
    assert shown[feature]["runner_id"] == RUNNERS["plain"] and shown[main]["runner_id"] == RUNNERS["privileged"]
    assert shown[untagged]["runner_id"] == RUNNERS["plain"] and shown[main]["status"] == "running"
    assert lab.api("POST", "/jobs/request", body={"token": "glrt-unknown"})[0] == 403


def test_tokens_runners_and_jobs_survive_a_new_container(lab: Lab) -> None:
    print(f"\nnew container healthy after {lab.start_gitlab():.1f}s")
    status, got = lab.api("GET", f"/runners/{RUNNERS['privileged']}", token=ADMIN_TOKEN, bearer=True)
    assert status == 200 and got["access_level"] == "ref_protected", got
    assert lab.api("POST", "/runners/verify", body={"token": RUNNER_TOKENS["privileged"]})[0] == 200
    assert len(lab.job("list")) == 3
    revoked = lab.rails("revoke", READER_TOKEN, "/etc/gitlab/forgeway/reader.rb")
    assert revoked.returncode == 0 and b"revoked" in revoked.stdout, revoked
    status, body = lab.api("GET", "/user", token=READER_TOKEN)
    assert status == 401 and body["error"] == "invalid_token", body


def test_runner_standin_verifies_and_takes_only_protected_jobs(lab: Lab) -> None:
    view = RunnerSettingsView(
        name="lab-privileged",
        url=f"https://{DOMAIN}",
        token=RUNNER_TOKENS["privileged"],
        arch="amd64",
        concurrent=1,
        default_image="alpine:3.20",
        tags=("docker",),
        ca_registries=(f"{DOMAIN}:5050",),
    )  # the program's config.toml (check_interval 0: gitlab-runner's 3 s), tls-ca-file = CA_PATH
    config = render_config_toml(view)
    assert f'tls-ca-file = "{CA_PATH}"' in config
    lab.docker("rm", "-f", "runner", check=False)
    lab.docker("create", "--name", "runner", "--add-host", f"{DOMAIN}:{ADDRESS}", "-v", "gr-config:/etc/gitlab-runner",
               "-v", f"{lab.daemon.socket}:/var/run/docker.sock", RUNNER_STANDIN)  # fmt: skip
    lab.upload("runner", {"/etc/gitlab-runner/config.toml": (config.encode(), 0o600),
                          CA_PATH: (lab.ca.read_bytes(), 0o644)})  # fmt: skip
    unprotected = lab.job("queue", "--ref", "feature", "--tag", "amd64", "--tag", "docker", "--seconds", "1")
    protected = lab.job("queue", "--ref", "main", "--protected", "--tag", "amd64", "--tag", "docker", "--seconds", "1")
    lab.docker("start", "runner")
    try:
        started = time.monotonic()
        while lab.job("show", str(protected))["status"] != "success":
            assert time.monotonic() - started < 60, lab.logs("runner")
            time.sleep(0.5)
        print(f"\nprotected job done by the runner stand-in after {time.monotonic() - started:.1f}s")
        logs = lab.logs("runner")
        assert "runner-standin: Verifying runner... is valid" in logs, logs
        assert f"Checking for jobs... received job={protected} ref=main" in logs, logs
        time.sleep(7)  # two more polls
        shown = lab.job("show", str(unprotected))
        assert (shown["status"], shown["runner_id"]) == ("pending", None), shown
        assert lab.job("show", str(protected))["runner_id"] == RUNNERS["privileged"]
        record = json.loads(
            lab.docker("exec", "runner", "cat", f"/run/runner-standin/received/{protected}.json").stdout
        )
        assert record == {"id": protected, "ref": "main", "protected": True, "state": "success"}, record
        assert RUNNER_TOKENS["privileged"] not in lab.logs("runner")

        # a token GitLab no longer knows: reported, retried, no job asked for
        lab.api("DELETE", f"/runners/{RUNNERS['privileged']}", token=ADMIN_TOKEN)
        lab.docker("restart", "runner")
        started = time.monotonic()
        while "Verifying runner... is not valid" not in (logs := lab.logs("runner")):
            assert time.monotonic() - started < 30, logs
            time.sleep(0.5)
    finally:
        lab.docker("rm", "-f", "-v", "runner", check=False)
