"""The backup drill of issue 18 on the `make lab` topology: a dead GitLab device, restored.

One backup and one wipe serve every case (the lab tier's time budget): the stages run once,
in order, the first test that needs one running it and those before it (:class:`Drill`), so
any test runs alone too.

1. markers: a project pushed over SSH through the VPS, a registry image, an upload, an
   instance CI variable (tools/lab/standin_image/gitlab_api.py names the calls);
2. backup: the host's own unit (forgeway-backup.service), while another project takes a
   stream of pushes (a backup during a push);
3. the device dies: ``tools.lab wipe home`` (a new disk and SSH host key), its resources
   forgotten (``tools.applier state-delete``, as `pulumi state delete --force`);
4. `up` with a GitLab of another version: the restore is refused naming both, nothing touched;
5. `up` as configured; a wrong repository password: a clear error, nothing touched;
6. the negative control: a restore without the snapshot's secrets fails visibly (the CI
   variable answers 500, gitlab:doctor:secrets says so);
7. the restore (python -m tools.restore's steps over tools/hostssh.py): every marker is back,
   and a client with the old known_hosts sees GitLab's old SSH host key; the project pushed
   to during the backup is as one push left it;
8. the runners, as docs/operations.md says: no runner's token is valid right after the
   restore; the API token rotated, a refresh, the registrations replaced: all valid again.

Everything runs on the session's `make lab` (FIXED names: under ``flock /tmp/fwl.lock``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.lab.make_lab import REGISTRY, VPS, MakeLab, client_trusts_the_stack_ca, login
from tests.lab.test_gitlab_api_rules import _ruby
from tests.stacks import ROOT
from tools.hostssh import HostRunner, connection_from_config
from tools.restore import Restore, RestoreFailed

NAME = "gitlab.forgeway.test"
CONTAINER = "forgeway-gitlab"
VARIABLE = "DRILL_MARKER"
IMAGE = f"{REGISTRY}/root/drill:marker"
OTHER_VERSION = "17.10.0"
STATUS = "/var/lib/forgeway/backup/status.json"
TOKEN_FILE = "/etc/gitlab/forgeway/drill-token.rb"  # noqa: S105 - a path
RUNNERS = ("runner-arm", "runner-amd")
API_TOKEN_VALUE_URN = "urn:pulumi:lab::forgeway::random:index/randomPassword:RandomPassword::gitlab-api-token-value"  # noqa: S105
USER_RUNNER = "gitlab:index/userRunner:UserRunner"
_PROBE = f"""
import base64, http.client, json, socket, ssl, sys, uuid
r = json.load(sys.stdin)
ctx = ssl.create_default_context(cafile=r["ca"])
c = http.client.HTTPSConnection({VPS!r}, 443, timeout=20, context=ctx)
c.sock = ctx.wrap_socket(socket.create_connection(({VPS!r}, 443), 20), server_hostname={NAME!r})
headers = {{"Host": {NAME!r}}}
if r["token"]:
    headers["PRIVATE-TOKEN"] = r["token"]
body = None
if r.get("file"):
    boundary = uuid.uuid4().hex
    name, data = r["file"]["name"], base64.b64decode(r["file"]["data"])
    head = (f"--{{boundary}}\\r\\nContent-Disposition: form-data; name=\\"file\\"; filename=\\"{{name}}\\"\\r\\n"
            f"Content-Type: application/octet-stream\\r\\n\\r\\n")
    body = head.encode() + data + f"\\r\\n--{{boundary}}--\\r\\n".encode()
    headers["Content-Type"] = f"multipart/form-data; boundary={{boundary}}"
elif r["body"] is not None:
    body = json.dumps(r["body"])
    headers["Content-Type"] = "application/json"
c.request(r["method"], r["path"], body=body, headers=headers)
answer = c.getresponse()
print(json.dumps({{"status": answer.status, "body": base64.b64encode(answer.read()).decode()}}))
"""


def _lab_runner(lab: MakeLab) -> HostRunner:
    """The GitLab host over the program's own SSH connection, as tools.restore reaches it."""
    from tools.lab.config import lab_config

    config, secret_keys = lab_config(lab.topology)
    return HostRunner(connection_from_config(config, secret_keys, host="home"))


@dataclass
class Drill:
    lab: MakeLab
    work: Path
    done: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- plumbing

    # An api-scoped token of root's (the program's own has only runner scopes), seeded with
    # gitlab-rails as the stand-in documents; in GitLab's database, so the restore brings it back.
    api_token: str = field(default_factory=lambda: "fwd-" + secrets.token_urlsafe(24))
    failed: str = ""  # the stage that failed: no later one runs (the cases after it fail at once)

    def reach(self, stage: str) -> None:
        """Run every stage up to ``stage`` that has not run yet, in order."""
        for name, action in STAGES:
            if name not in self.done:
                if self.failed:
                    pytest.fail(f"the drill stopped at stage {self.failed!r} (see the first failing case)")
                started = time.monotonic()
                try:
                    action(self)
                except BaseException:
                    self.failed = name
                    raise
                print(f"drill stage {name}: {time.monotonic() - started:.1f} s")
                self.done.append(name)
            if name == stage:
                return

    def token(self) -> str:
        return self.api_token

    def api(self, method: str, path: str, body: Any = None, file: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = {"ca": self.lab.ca_certificate(), "method": method, "path": path, "token": self.token(),
                   "body": body, "file": file}  # fmt: skip
        out = self.lab.machine("client").succeed(["python3", "-c", _PROBE], stdin=json.dumps(request), timeout=60)
        answer = json.loads(out)
        return int(answer["status"]), base64.b64decode(answer["body"])

    def api_json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = self.api(method, f"/api/v4/{path}", body, **kw)
        assert status in (200, 201), f"{method} {path}: {status} {data[:300]!r}"
        return json.loads(data)

    def git(self, *args: str, cwd: Path | None = None, known_hosts: Path | None = None) -> str:
        """git on the client, over SSH to GitLab through the VPS with the given known_hosts (strict)."""
        ssh = (f"ssh -i {self.work / 'id_ed25519'} -o IdentitiesOnly=yes -o BatchMode=yes "
               f"-o UserKnownHostsFile={known_hosts or self.work / 'known_hosts'} -o GlobalKnownHostsFile=/dev/null "
               "-o StrictHostKeyChecking=yes")  # fmt: skip
        env = {"GIT_SSH_COMMAND": ssh, "GIT_AUTHOR_NAME": "drill", "GIT_AUTHOR_EMAIL": "drill@example.test",
               "GIT_COMMITTER_NAME": "drill", "GIT_COMMITTER_EMAIL": "drill@example.test"}  # fmt: skip
        command = ["git", *(["-C", str(cwd)] if cwd else []), *args]
        return self.lab.machine("client").succeed(command, env=env, timeout=120)

    def url(self, project: str) -> str:
        return f"git@{VPS}:root/{project}.git"

    def container_state(self) -> dict[str, str]:
        """What must not change when a restore is refused: /etc/gitlab's secrets and keys, no
        backup tar, the container not restarted."""
        home = self.lab.machine("home")
        digest = (
            "sha256sum /etc/gitlab/gitlab-secrets.json /etc/gitlab/ssh_host_*_key; ls -A /var/opt/gitlab/backups; true"
        )
        return {
            "files": home.docker("exec", CONTAINER, "sh", "-c", digest),
            "started": home.docker("inspect", "-f", "{{.State.StartedAt}}", CONTAINER),
        }

    def restore(self, **kwargs: Any) -> list[str]:
        lines: list[str] = []
        with _lab_runner(self.lab) as runner:
            kwargs.setdefault("healthy_timeout_s", 300)
            # The drill's own backup, by id: the new device's backups (a pre-upgrade backup of
            # its empty GitLab when the next up upgrades it) are newer (docs/operations.md).
            if "status" in self.facts:
                kwargs.setdefault("snapshot", self.facts["status"]["snapshot"])
            Restore(runner, log=lines.append, **kwargs).run()
        return lines

    def up(self, *args: str) -> None:
        self.lab.up("--seed", "1", *args)


# --------------------------------------------------------------------- the stages


def _markers(d: Drill) -> None:
    lab, client, home = d.lab, d.lab.machine("client"), d.lab.machine("home")
    d.work.mkdir(parents=True, exist_ok=True)
    ruby = _ruby("drill", "api", "30").encode()
    put = f"umask 077; mkdir -p /etc/gitlab/forgeway; cat > {TOKEN_FILE}"
    home.docker("exec", "-i", CONTAINER, "sh", "-c", put, stdin=ruby)
    home.docker("exec", "-i", CONTAINER, "gitlab-rails", "runner", TOKEN_FILE, "create", stdin=d.api_token.encode())
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drill", "-f", str(d.work / "id_ed25519")],
                   check=True)  # fmt: skip
    scan = client.succeed(["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", "22", VPS])
    (d.work / "known_hosts").write_text(scan)  # the client's known_hosts, kept from before the device died
    d.facts["host_key"] = scan.split()[-1]
    d.api_json("POST", "user/keys", {"title": "drill", "key": (d.work / "id_ed25519.pub").read_text().strip()})
    for project in ("drill", "pushes"):
        d.facts[f"project-{project}"] = d.api_json("POST", "projects", {"name": project})["id"]
    repo = d.work / "drill"
    client.succeed(["git", "init", "-q", "-b", "main", str(repo)])
    (repo / "README").write_text("the drill's marker\n")
    d.git("add", "README", cwd=repo)
    d.git("commit", "-q", "-m", "marker", cwd=repo)
    d.git("push", "-q", d.url("drill"), "main", cwd=repo)
    d.facts["commit"] = d.git("rev-parse", "HEAD", cwd=repo).strip()
    # A registry image (a random layer), pushed from the client.
    client_trusts_the_stack_ca(lab)
    assert login(lab, "client").returncode == 0
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = 1 << 20
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    config = lab.docker_config("client")
    client.docker("import", "-", IMAGE, stdin=layer.getvalue(), config=config)
    client.docker("push", IMAGE, config=config)
    d.facts["image"] = client.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", IMAGE, config=config)
    # An upload, and an instance CI variable stored under gitlab-secrets.json's db_key_base.
    data = os.urandom(4096)
    upload = d.api_json("POST", f"projects/{d.facts['project-drill']}/uploads",
                        file={"name": "marker.bin", "data": base64.b64encode(data).decode()})  # fmt: skip
    d.facts["upload"] = (upload["full_path"], hashlib.sha256(data).hexdigest())
    d.facts["variable"] = base64.b16encode(os.urandom(8)).decode()
    d.api_json("POST", "admin/ci/variables", {"key": VARIABLE, "value": d.facts["variable"]})


def _backup(d: Drill) -> None:
    """One backup by the host's own unit, while the second project takes a stream of pushes."""
    pushes = d.work / "pushes"
    d.lab.machine("client").succeed(["git", "init", "-q", "-b", "main", str(pushes)])
    pushed: list[str] = []
    ssh = d.git  # the same client and keys
    stop_at = time.monotonic() + 600

    def push_once(i: int) -> None:
        (pushes / f"blob{i}").write_bytes(os.urandom(256 * 1024))
        ssh("add", ".", cwd=pushes)
        ssh("commit", "-q", "-m", f"push {i}", cwd=pushes)
        ssh("push", "-q", d.url("pushes"), "main", cwd=pushes)
        pushed.append(ssh("rev-parse", "HEAD", cwd=pushes).strip())

    push_once(0)
    running = threading.Event()
    running.set()
    failures: list[str] = []

    def loop() -> None:
        i = 1
        while running.is_set() and time.monotonic() < stop_at:
            try:
                push_once(i)
            except Exception as exc:
                failures.append(str(exc))
                return
            i += 1

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while len(pushed) < 2 and not failures:  # the stream is under way before the backup starts
            assert thread.is_alive() and time.monotonic() < stop_at, "the pushes did not start"
            time.sleep(0.2)
        home = d.lab.machine("home").inside
        started = len(pushed)
        done = home.execute(["systemctl", "start", "forgeway-backup.service"], timeout=900)
        ended = len(pushed)
    finally:
        running.clear()
        thread.join()
    assert not failures, f"a push failed during the backup: {failures[0][-500:]}"
    journal = "" if done.returncode == 0 else home.execute(["journalctl", "-u", "forgeway-backup", "-n", "40"]).stdout
    assert done.returncode == 0, f"forgeway-backup.service failed: {done.stderr}\n{journal}"
    status = json.loads(home.succeed(["cat", STATUS]))
    assert status["result"] == "ok" and status["snapshot"], status
    d.facts["status"] = status
    d.facts["pushed"] = pushed
    d.facts["pushes_during_backup"] = (started, ended)  # pushes landed before the unit started, and before it ended


def _wipe(d: Drill) -> None:
    """The device dies; the user forgets its resources (`pulumi state delete --force`)."""
    from tools.lab.layout import STATE
    from tools.lab.wipe import dead_host_resources

    old_key = d.lab.host("home")["host_key"]
    done = d.lab.run("wipe", "home")
    assert done.returncode == 0, done.stderr[-3000:]
    assert d.lab.host("home")["host_key"] != old_key, "the new device has the dead one's SSH host key"
    before = d.lab.state()
    keys = dead_host_resources(before, "home", d.lab.host("home")["address"])
    forget = subprocess.run(
        [sys.executable, "-m", "tools.applier", "state-delete", "--state", str(STATE), "--force",
         "--target-dependents", *keys], capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert forget.returncode == 0, forget.stderr
    d.facts["forgotten"] = [json.loads(line)["name"] for line in forget.stdout.splitlines()]
    # --target-dependents forgets the runners too (their tokens come from GitLab's API), whose
    # containers still run on their hosts: the user removes them, `up` makes them again.
    for line in forget.stdout.splitlines():
        change = json.loads(line)
        entry = before[f"{change['type']}::{change['name']}"]
        if change["type"] == "docker:index/container:Container" and change["name"] != "home-gitlab":
            host = str(entry["provider"]).split("::")[3].removesuffix("-docker")
            d.lab.machine(host).docker("rm", "-f", entry["inputs"]["name"])


def _other_version(d: Drill) -> None:
    """`up` puts a GitLab of another version on the new device; the restore is refused."""
    from tools.lab.images import ensure_image, standin_image

    tag = standin_image(OTHER_VERSION)
    ensure_image(d.lab.machine("home").dockerd(), tag)
    d.up("--set", f"gitlab.images.amd64={tag}", "--set", f"gitlab.version={OTHER_VERSION}")
    before = d.container_state()
    with pytest.raises(RestoreFailed) as refused:
        d.restore()
    d.facts["cross_version"] = (str(refused.value), before, d.container_state())


def _up(d: Drill) -> None:
    d.up()


def _wrong_password(d: Drill) -> None:
    before = d.container_state()
    with pytest.raises(RestoreFailed) as refused:
        d.restore(password="not-the-repository-password")  # noqa: S106 - the wrong one on purpose
    d.facts["wrong_password"] = (str(refused.value), before, d.container_state())


class _WithoutSecrets(Restore):
    """The negative control: everything but the snapshot's gitlab-secrets.json and host keys."""

    def _secrets(self) -> None:
        return None


def _without_secrets(d: Drill) -> None:
    lines: list[str] = []
    with _lab_runner(d.lab) as runner, pytest.raises(RestoreFailed) as failed:
        _WithoutSecrets(runner, log=lines.append, healthy_timeout_s=300, snapshot=d.facts["status"]["snapshot"]).run()
    status, _ = d.api("GET", f"/api/v4/admin/ci/variables/{VARIABLE}")
    d.facts["without_secrets"] = (str(failed.value), status)


def _restored(d: Drill) -> None:
    d.facts["restore_log"] = d.restore(overwrite=True)  # over the negative control's data


def _verified(d: Drill) -> dict[str, int]:
    """Per runner host, GitLab's answer to the token in its runner's config.toml (POST /runners/verify)."""
    answers = {}
    for host in RUNNERS:
        toml = d.lab.machine(host).docker("exec", "forgeway-runner", "cat", "/etc/gitlab-runner/config.toml")
        token = tomllib.loads(toml)["runners"][0]["token"]
        answers[host] = d.api("POST", "/api/v4/runners/verify", {"token": token})[0]
    return answers


def _apply(d: Drill, replace: tuple[str, ...] = ()) -> None:
    """`pulumi up [--replace URN...]` of the lab stack as configured (`tools.lab up` has no --replace)."""
    from tools.lab.config import lab_config
    from tools.lab.layout import STATE
    from tools.lab.topology import _applier_run
    from tools.stack.synth import stack_config_strings

    config, secret_keys = lab_config(d.lab.topology)
    request = {"action": "apply", "stack": "lab", "config": stack_config_strings(config), "secret_keys": secret_keys,
               "state": str(STATE), "seed": 1, "replace": list(replace)}  # fmt: skip
    done = _applier_run(request)
    d.lab.applied = None if done.returncode else True
    assert done.returncode == 0, f"up --replace {' '.join(replace)}: {done.stderr[-3000:]}"


def _runners(d: Drill) -> None:
    """docs/operations.md's steps for the runners after the restore, with what GitLab says of
    each runner's token before and after them. The restored GitLab has the runners of the
    backup's time, under the ids the new device's empty GitLab gave its own (1, 2 here), so a
    refresh keeps the registrations `up` made there: they must be replaced."""
    before = _verified(d)
    _apply(d, replace=(API_TOKEN_VALUE_URN,))  # the program's API token, seeded into the restored GitLab
    refreshed = d.lab.run("refresh")
    assert refreshed.returncode == 0, refreshed.stderr[-3000:]
    state = d.lab.state()
    kept = [f"urn:pulumi:lab::forgeway::{key}" for key in sorted(state) if key.startswith(f"{USER_RUNNER}::")]
    _apply(d, replace=tuple(kept))
    d.facts["runners"] = (before, len(kept), _verified(d))


STAGES: list[tuple[str, Callable[[Drill], None]]] = [
    ("markers", _markers),
    ("backup", _backup),
    ("wiped", _wipe),
    ("other_version", _other_version),
    ("up", _up),
    ("wrong_password", _wrong_password),
    ("without_secrets", _without_secrets),
    ("restored", _restored),
    ("runners", _runners),
]


@pytest.fixture(scope="module")
def _drill(_session_make_lab: MakeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    _session_make_lab.ensure_up()
    work = tmp_path_factory.mktemp("drill")
    yield Drill(_session_make_lab, work)
    # A restored GitLab knows the runners of the backup's time, not those `up` made on the new
    # device: the lab goes down, and the next test that needs it brings up a fresh one.
    _session_make_lab.run("down")


@pytest.fixture
def drill(_drill: Drill, lab_to_take_down: MakeLab) -> Drill:
    """The module's drill; ``lab_to_take_down``: its cases run after the lab's other tests."""
    return _drill


# --------------------------------------------------------------------- the cases


def test_a_restore_across_versions_is_refused_naming_both_with_nothing_touched(drill: Drill) -> None:
    drill.reach("other_version")
    message, before, after = drill.facts["cross_version"]
    version = drill.facts["status"]["gitlab_version"]
    assert "stopped at step 'version'" in message, message
    assert f"GitLab {version}" in message and f"running GitLab is {OTHER_VERSION}" in message, message
    assert "nothing on the host was changed" in message
    assert after == before


def test_a_wrong_repository_password_is_a_clear_error_with_nothing_touched(drill: Drill) -> None:
    drill.reach("wrong_password")
    message, before, after = drill.facts["wrong_password"]
    assert "stopped at step 'repository'" in message and "password is wrong" in message, message
    assert "nothing on the host was changed" in message
    assert after == before


def test_without_the_secrets_the_restore_fails_visibly(drill: Drill) -> None:
    drill.reach("without_secrets")
    message, status = drill.facts["without_secrets"]
    assert status == 500, f"the CI variable answered {status} without the snapshot's gitlab-secrets.json"
    assert "stopped at step 'checks'" in message and "gitlab:doctor:secrets" in message, message


def test_the_dead_device_is_restored_with_every_marker(drill: Drill) -> None:
    drill.reach("restored")
    log = drill.facts["restore_log"]
    assert any(line.startswith("restored snapshot ") for line in log), log
    for step in ("repository", "version", "secrets", "stop", "restore", "restart", "checks"):
        assert any(line.startswith(step + " ") and " s " in line for line in log), f"no time for {step}: {log}"
    # The repository, over SSH through the VPS, with the client's known_hosts from before: the
    # host key is the dead device's GitLab's (StrictHostKeyChecking=yes would refuse another).
    clone = drill.work / "clone"
    drill.git("clone", "-q", drill.url("drill"), str(clone))
    assert drill.git("rev-parse", "HEAD", cwd=clone).strip() == drill.facts["commit"]
    assert (clone / "README").read_text() == "the drill's marker\n"
    # The registry image.
    client, config = drill.lab.machine("client"), drill.lab.docker_config("client")
    client.docker("rmi", IMAGE, config=config)
    assert login(drill.lab, "client").returncode == 0
    client.docker("pull", IMAGE, config=config)
    assert (
        client.docker("image", "inspect", "--format", "{{.RootFS.Layers}}", IMAGE, config=config)
        == (drill.facts["image"])
    )
    # The upload, by its URL over HTTPS; the CI variable, readable (decrypted with the restored secrets).
    path, digest = drill.facts["upload"]
    status, data = drill.api("GET", path)
    assert status == 200 and hashlib.sha256(data).hexdigest() == digest, status
    variable = drill.api_json("GET", f"admin/ci/variables/{VARIABLE}")
    assert variable["value"] == drill.facts["variable"]


def test_a_backup_taken_during_pushes_restores_a_consistent_repository(drill: Drill) -> None:
    """The project pushed to throughout the backup comes back as one push left it: HEAD on its
    branch, the branch at a pushed commit, with its whole history. The pushes are a stream
    under way before the unit starts and going on after the repository was bundled (checked
    below); whether a ref update meets the milliseconds in which the bundle reads the refs is
    luck here: tests/lab/test_gitlab_backup_refs.py meets them on purpose."""
    drill.reach("restored")
    pushed, (started, ended) = drill.facts["pushed"], drill.facts["pushes_during_backup"]
    symref = drill.git("ls-remote", "--symref", drill.url("pushes"), "HEAD")
    assert symref.startswith("ref: refs/heads/main\tHEAD\n"), f"the restored project's HEAD: {symref!r}"
    clone = drill.work / "pushes-clone"
    drill.git("clone", "-q", drill.url("pushes"), str(clone))
    drill.git("fsck", "--full", "--strict", cwd=clone)
    head = drill.git("rev-parse", "--verify", "HEAD", cwd=clone).strip()
    assert head in pushed, "the restored branch points at a commit no push made"
    count = int(drill.git("rev-list", "--count", "HEAD", cwd=clone))
    assert count == pushed.index(head) + 1, "history is missing commits before its head"
    # The backup bundled the project between the pushes that had landed when the unit started
    # and those that landed before it ended, and a push landed after it: the stream ran through it.
    assert started <= pushed.index(head) + 1 < ended, (
        f"the backup holds push {pushed.index(head)}; {started} had landed when it started, {ended} when it "
        "ended: no push landed after the repository was bundled, so none ran while it was"
    )


def test_the_runners_work_again_after_the_documented_steps(drill: Drill) -> None:
    """Right after the restore no runner's token is known to GitLab (jobs would wait forever);
    docs/operations.md's steps (rotate the API token, refresh, replace the registrations the
    refresh kept) make every runner's token valid again."""
    drill.reach("runners")
    before, kept, after = drill.facts["runners"]
    assert before == dict.fromkeys(RUNNERS, 403), f"right after the restore, runners/verify answered {before}"
    assert after == dict.fromkeys(RUNNERS, 200), (
        f"after the documented steps ({kept} replaced), runners/verify: {after}"
    )
