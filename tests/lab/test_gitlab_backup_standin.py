"""The GitLab stand-in's backup and restore (tools/lab/standin_image/gitlab_backup.py, gitlab_ctl.py) on the wire.

One container on the program's volumes in a real dockerd of its own namespace
(tests/lab/standin_host.py), shared by the module's tests in file order (one start, as the
lab tier's budget wants): marker data put in as the issue-18 drill does (a project, a push over
SSH as ``git``, a registry image, an upload, an instance CI variable), ``gitlab-backup create``,
the data volume wiped (the backup and the secrets kept aside, as the host's backup keeps
them), ``gitlab-backup restore`` in GitLab's documented order, everything back; a restore on
another GitLab version refused; a restore without the right gitlab-secrets.json leaving the CI
variable undecryptable (500, and gitlab:doctor:secrets says so); ``gitlab-ctl stop puma``
taking the API down while the container runs.

Needs root, docker.io, git, ssh and debootstrap: fails loudly without them, never skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.standin_host import (
    ADDRESS,
    DOMAIN,
    PASSWORD,
    REGISTRY,
    Host,
    certificates,
    create,
    host_key,
    program_files,
    standin_host,
    tiny_image,
    upload,
    wait_healthy,
)
from tests.lab.test_gitlab_api_rules import _ruby
from tools.lab.images import GITLAB_STANDIN, STANDIN_VERSION, ensure_image, standin_image

pytestmark = pytest.mark.lab

TOKEN = "fwb-" + secrets.token_urlsafe(24)
TOKEN_FILE = "/etc/gitlab/forgeway/drill-token.rb"  # noqa: S105 (a path)
MARKER = "marker " + secrets.token_hex(8)
VARIABLE = "DRILL_SECRET"
BACKUP = "drill_" + STANDIN_VERSION
SSH_URL = f"ssh://git@{ADDRESS}/root/drill.git"


class Drill:
    """The host, the CA, a client key and what the tests found along the way."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ca = certificates(host.scratch)
        self.key = host.scratch / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drill", "-f", str(self.key)], check=True)
        self.known_hosts = host.scratch / "known_hosts"
        self.found: dict[str, Any] = {}

    def exec(self, *cmd: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.host.docker("exec", "-i", "gitlab", *cmd, input=input, check=check)

    def api(self, method: str, path: str, *, body: dict[str, str] | None = None, form: str | None = None,
            token: str | None = TOKEN, url: str | None = None) -> tuple[int, Any]:  # fmt: skip
        """(status, JSON or text) of ``method`` on the API (or ``url``); token and body in curl's config on stdin."""
        lines = [f'request = "{method}"', f'url = "{url or f"https://{DOMAIN}/api/v4{path}"}"']
        if token is not None:
            lines.append(f'header = "PRIVATE-TOKEN: {token}"')
        if body is not None:
            escaped = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
            lines += ['header = "Content-Type: application/json"', f'data = "{escaped}"']
        if form is not None:
            lines.append(f'form = "{form}"')
        cmd = ["curl", "-sS", "--max-time", "15", "--cacert", str(self.ca), "--resolve", f"{DOMAIN}:443:{ADDRESS}",
               "-o", "-", "-w", "\n%{http_code}", "-K", "-"]  # fmt: skip
        done = self.host.in_ns(*cmd, input="\n".join(lines).encode() + b"\n")
        assert done.returncode == 0, f"curl {method} {path}: {done.stderr.decode()}"
        text, _, code = done.stdout.decode().rpartition("\n")
        try:
            return int(code), json.loads(text)
        except ValueError:
            return int(code), text

    def git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        ssh = f"ssh -F /dev/null -i {self.key} -o IdentitiesOnly=yes -o UserKnownHostsFile={self.known_hosts}"
        cmd = ["git", "-c", f"core.sshCommand={ssh} -o StrictHostKeyChecking=accept-new", "-c", "user.name=Drill",
               "-c", "user.email=drill@example.org", "-c", "init.defaultBranch=main",
               *(["-C", str(cwd)] if cwd else []), *args]  # fmt: skip
        return self.host.in_ns(*cmd, timeout=60)

    def start(self, name: str = "gitlab") -> float:
        create(self.host, name)
        upload(self.host, name, {
            **program_files(self.host.scratch),
            TOKEN_FILE: (_ruby("drill", "api").encode(), "0600"),
        })  # fmt: skip
        self.host.docker("start", name)
        return wait_healthy(self.host, name)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return self.exec("gitlab-ctl", *args, check=False)


@pytest.fixture(scope="module")
def drill() -> Iterator[Drill]:
    with standin_host() as host:
        made = Drill(host)
        print(f"healthy after {made.start():.1f}s")
        yield made


def test_the_image_says_its_version_and_keeps_its_secrets(drill: Drill) -> None:
    exec_ = drill.exec
    assert exec_("cat", "/opt/gitlab/embedded/service/gitlab-rails/VERSION").stdout == b"17.11.3\n"
    assert exec_("head", "-n1", "/opt/gitlab/version-manifest.txt").stdout == b"gitlab-ce 17.11.3\n"
    assert exec_("cat", "/var/opt/gitlab/gitlab-rails/VERSION").stdout == b"17.11.3\n"
    assert exec_("stat", "-c", "%a %U", "/etc/gitlab/gitlab-secrets.json").stdout == b"600 root\n"
    stored = json.loads(exec_("cat", "/etc/gitlab/gitlab-secrets.json").stdout)
    assert {"db_key_base", "secret_key_base", "otp_key_base"} <= set(stored["gitlab_rails"]), stored.keys()
    assert len(stored["gitlab_rails"]["db_key_base"]) == 128
    drill.found["secrets"] = stored
    seeded = exec_("gitlab-rails", "runner", TOKEN_FILE, "create", input=TOKEN.encode() + b"\n")
    assert b"created" in seeded.stdout, seeded
    assert drill.api("GET", "/version")[1]["version"] == "17.11.3"


def test_marker_data_goes_in_as_the_drill_puts_it(drill: Drill) -> None:
    status, project = drill.api("POST", "/projects", body={"name": "drill"})
    assert status == 201 and project["path_with_namespace"] == "root/drill", project
    assert project["ssh_url_to_repo"] == f"git@{DOMAIN}:root/drill.git", project
    status, key = drill.api(
        "POST", "/user/keys", body={"title": "drill", "key": drill.key.with_suffix(".pub").read_text()}
    )
    assert status == 201 and key["id"] >= 1, key
    assert (
        drill.api("POST", "/user/keys", body={"title": "again", "key": drill.key.with_suffix(".pub").read_text()})[0]
        == 400
    )

    work = drill.host.scratch / "work"
    work.mkdir()
    (work / "MARKER").write_text(MARKER + "\n")
    for args in (("init", "-q"), ("add", "MARKER"), ("commit", "-q", "-m", "marker")):
        assert drill.git(*args, cwd=work).returncode == 0
    pushed = drill.git("push", SSH_URL, "main", cwd=work)
    assert pushed.returncode == 0, pushed.stderr.decode()
    refused = drill.git("ls-remote", f"git@{ADDRESS}:root/nothing.git")
    assert refused.returncode != 0 and b"could not be found" in refused.stderr, refused.stderr.decode()

    drill.host.docker("login", REGISTRY, "-u", "root", "--password-stdin", input=PASSWORD.encode())
    drill.host.docker("import", "-", f"{REGISTRY}/root/drill:1", input=tiny_image())
    drill.host.docker("push", f"{REGISTRY}/root/drill:1")

    attachment = drill.host.scratch / "drill-notes.txt"
    attachment.write_text(MARKER)
    status, uploaded = drill.api("POST", f"/projects/{project['id']}/uploads", form=f"file=@{attachment}")
    assert status == 201 and re.fullmatch(r"/uploads/[0-9a-f]{32}/drill-notes\.txt", uploaded["url"]), uploaded
    assert uploaded["full_path"] == f"/-/project/{project['id']}{uploaded['url']}", uploaded
    web = f"https://{DOMAIN}/root/drill{uploaded['url']}"
    assert drill.api("GET", "", url=web) == (200, MARKER)
    assert drill.api("GET", "", url=web, token=None)[0] == 404  # a private project's: not without a token
    drill.found["upload"] = web

    status, variable = drill.api("POST", "/admin/ci/variables", body={"key": VARIABLE, "value": MARKER})
    assert status == 201 and variable["value"] == MARKER and variable["variable_type"] == "env_var", variable
    assert drill.api("GET", f"/admin/ci/variables/{VARIABLE}") == (200, variable)
    stored = drill.exec("cat", "/var/opt/gitlab/gitlab-rails/forgeway-standin.json").stdout
    assert MARKER.encode() not in stored  # encrypted at rest
    drill.found["host_key"] = host_key(drill.host)


def test_a_backup_during_a_push_holds_the_refs_before_it(drill: Drill) -> None:
    """A push between receiving its objects and updating its refs (a pre-receive hook holds it
    there, as GitLab's hooks run): the backup's bundle is whole and has the refs before it."""
    repository = f"/var/opt/gitlab/git-data/repositories/@hashed/{_hashed(2)}.git"
    work = drill.host.scratch / "work"
    before = drill.git("rev-parse", "HEAD", cwd=work).stdout.decode().strip()
    (work / "LATER").write_bytes(secrets.token_bytes(1 << 20))
    assert drill.git("add", "LATER", cwd=work).returncode == 0
    assert drill.git("commit", "-q", "-m", "during a backup", cwd=work).returncode == 0
    hook = f"{repository}/hooks/pre-receive"
    drill.exec("sh", "-c", f"printf '#!/bin/sh\\ncat >/dev/null\\nsleep 3\\n' > {hook} && chmod 0755 {hook}")
    ssh = f"ssh -F /dev/null -i {drill.key} -o IdentitiesOnly=yes -o UserKnownHostsFile={drill.known_hosts}"
    push = subprocess.Popen(
        ["ip", "netns", "exec", drill.host.netns, "git", "-C", str(work), "-c", f"core.sshCommand={ssh}",
         "push", SSH_URL, "main"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not drill.exec("sh", "-c", f"ls -d {repository}/objects/incoming-* {repository}/objects/tmp_objdir-*",
                             check=False).stdout:  # fmt: skip
            assert push.poll() is None and time.monotonic() < deadline, push.communicate()
            time.sleep(0.1)
        made = drill.exec("gitlab-backup", "create", "BACKUP=during", "CRON=1")
        assert push.poll() is None, "the push ended before the backup did: the test proves nothing"
    finally:
        _, err = push.communicate(timeout=30)
    assert push.returncode == 0, err.decode()
    drill.exec("rm", hook)
    assert made.returncode == 0, made
    bundle = f"repositories/@hashed/{_hashed(2)}.bundle"
    check = (  # a whole bundle: a mirror of it passes fsck
        f"mkdir /root/check && cd /root/check && tar -xf /var/opt/gitlab/backups/during_gitlab_backup.tar {bundle} && "
        f"git clone -q --mirror {bundle} mirror.git && git -C mirror.git fsck --strict --no-dangling && "
        f"git bundle list-heads {bundle}"
    )
    heads = drill.exec("sh", "-c", check)
    assert heads.stdout.decode().split() == [before, "refs/heads/main", before, "HEAD"], heads
    drill.exec("rm", "-r", "/root/check", "/var/opt/gitlab/backups/during_gitlab_backup.tar")


def _hashed(project_id: int) -> str:
    digest = hashlib.sha256(str(project_id).encode()).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}"


def test_backup_create_writes_gitlabs_archive(drill: Drill) -> None:
    started = time.monotonic()
    made = drill.exec("gitlab-backup", "create", f"BACKUP={BACKUP}", "STRATEGY=copy", "GZIP_RSYNCABLE=yes", "CRON=1")
    print(f"\ngitlab-backup create: {time.monotonic() - started:.1f}s")
    assert made.returncode == 0 and made.stdout == b"", made
    path = f"/var/opt/gitlab/backups/{BACKUP}_gitlab_backup.tar"
    assert drill.exec("stat", "-c", "%a %U", path).stdout == b"600 git\n"
    archive = drill.exec("cat", path).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = set(tar.getnames())
        info_file = tar.extractfile("backup_information.yml")
        assert info_file is not None
        info = info_file.read().decode()
    assert {"backup_information.yml", "db/database.sql.gz", "uploads.tar.gz", "registry.tar.gz"} <= names, names
    assert any(n.startswith("repositories/@hashed/") and n.endswith(".bundle") for n in names), names
    assert f":gitlab_version: {STANDIN_VERSION}\n" in info and f":backup_id: {BACKUP}\n" in info, info
    drill.found["archive"] = archive

    named = drill.exec("gitlab-backup", "create", "SKIP=registry,uploads")  # GitLab's own name and progress lines
    assert named.returncode == 0 and b"Dumping repositories ... done" in named.stdout, named
    assert b"Dumping container registry images ... [SKIPPED]" in named.stdout, named
    listed = drill.exec("ls", "/var/opt/gitlab/backups").stdout.decode().split()
    own = [n for n in listed if re.fullmatch(r"[0-9]{10}_[0-9]{4}_[0-9]{2}_[0-9]{2}_17\.11\.3_gitlab_backup\.tar", n)]
    assert len(own) == 1, listed
    listing = drill.exec("tar", "-tf", f"/var/opt/gitlab/backups/{own[0]}").stdout.decode().split()
    assert "db/database.sql.gz" in listing and "registry.tar.gz" not in listing and "uploads.tar.gz" not in listing
    skipped = drill.exec("tar", "-xOf", f"/var/opt/gitlab/backups/{own[0]}", "backup_information.yml").stdout
    assert b"\n:skipped: registry,uploads\n" in skipped, skipped
    drill.exec("rm", f"/var/opt/gitlab/backups/{own[0]}")


def test_restore_onto_an_empty_data_volume_brings_everything_back(drill: Drill) -> None:
    host = drill.host
    host.docker("rm", "-f", "gitlab")
    host.docker(
        "volume", "rm", "gs-data", "gs-logs"
    )  # the dead device's data; /etc/gitlab is kept (secrets back first)
    host.docker("rmi", f"{REGISTRY}/root/drill:1")
    print(f"\nnew container healthy after {drill.start():.1f}s")
    assert drill.api("GET", "/projects/root%2Fdrill")[0] == 401  # an empty GitLab: not even the token
    seeded = drill.exec("gitlab-rails", "runner", TOKEN_FILE, "create", input=TOKEN.encode() + b"\n")
    assert drill.api("GET", "/projects/root%2Fdrill")[0] == 404, seeded
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(f"var/opt/gitlab/backups/{BACKUP}_gitlab_backup.tar")
        info.size, info.mode = len(drill.found["archive"]), 0o600
        tar.addfile(info, io.BytesIO(drill.found["archive"]))
    host.docker("cp", "-", "gitlab:/", input=archive.getvalue())

    for service in ("puma", "sidekiq"):
        stopped = drill.ctl("stop", service)
        assert stopped.returncode == 0 and stopped.stdout.startswith(f"ok: down: {service}: ".encode()), stopped
    started = time.monotonic()
    restored = drill.exec("gitlab-backup", "restore", f"BACKUP={BACKUP}", "force=yes")
    print(f"gitlab-backup restore: {time.monotonic() - started:.1f}s")
    assert restored.returncode == 0 and b"Restore task is done." in restored.stdout, restored
    host.docker("restart", "gitlab")
    wait_healthy(host, "gitlab")
    checked = drill.exec("gitlab-rake", "gitlab:check", "SANITIZE=true").stdout.decode()
    assert "Projects have repositories: ... 2/2 ... yes" in checked and "root/drill" not in checked, checked
    doctor = drill.exec("gitlab-rake", "gitlab:doctor:secrets").stdout.decode()
    assert "INFO -- : Total: 0 row(s) affected" in doctor, doctor

    assert host_key(host) == drill.found["host_key"]
    clone = host.scratch / "clone"
    cloned = drill.git("clone", "-q", f"git@{ADDRESS}:root/drill.git", str(clone))
    assert cloned.returncode == 0, cloned.stderr.decode()
    assert (clone / "MARKER").read_text() == MARKER + "\n"
    host.docker("pull", f"{REGISTRY}/root/drill:1")
    assert drill.api("GET", "", url=drill.found["upload"]) == (200, MARKER)
    assert drill.api("GET", f"/admin/ci/variables/{VARIABLE}")[1]["value"] == MARKER


def test_restore_refuses_a_backup_of_another_version(drill: Drill) -> None:
    other = standin_image("17.10.0")
    print(f"\nensure_image {other}: {ensure_image(drill.host.daemon, other)}")
    said = drill.host.docker("run", "--rm", "--entrypoint", "cat", other, "/opt/gitlab/version-manifest.txt")
    assert said.stdout == b"gitlab-ce 17.10.0\n"
    before = drill.exec("sha256sum", "/var/opt/gitlab/gitlab-rails/forgeway-standin.json").stdout
    declined = drill.exec("gitlab-backup", "restore", f"BACKUP={BACKUP}", input=b"no\n", check=False)
    assert declined.returncode == 1 and declined.stdout.endswith(b"(yes/no)? Quitting...\n"), declined
    refused = drill.host.docker(
        "run", "--rm", "--entrypoint", "gitlab-backup", "-v", "gs-data:/var/opt/gitlab", other,
        "restore", f"BACKUP={BACKUP}", "force=yes", check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused
    expected = (
        "GitLab version mismatch:\n  Your current GitLab version (17.10.0) differs from the GitLab version in the "
        "backup!\n  Please switch to the following version and try again:\n  version: 17.11.3\n"
    )
    assert expected in refused.stderr.decode(), refused.stderr.decode()
    assert drill.exec("sha256sum", "/var/opt/gitlab/gitlab-rails/forgeway-standin.json").stdout == before
    assert standin_image(STANDIN_VERSION) == GITLAB_STANDIN


def test_restore_without_the_secrets_leaves_the_variable_undecryptable(drill: Drill) -> None:
    host = drill.host
    host.docker("rm", "-f", "gitlab")
    host.docker("run", "--rm", "--entrypoint", "rm", "-v", "gs-config:/etc/gitlab", GITLAB_STANDIN,
                "/etc/gitlab/gitlab-secrets.json")  # fmt: skip
    drill.start()
    assert "gitlab-secrets.json (first start)" in host.logs("gitlab")
    restored = drill.exec("gitlab-backup", "restore", f"BACKUP={BACKUP}", "force=yes")
    assert restored.returncode == 0, restored
    assert drill.api("GET", f"/admin/ci/variables/{VARIABLE}") == (500, {"message": "500 Internal Server Error"})
    doctor = drill.exec("gitlab-rake", "gitlab:doctor:secrets", "VERBOSE=1").stdout.decode()
    assert "INFO -- : - Ci::InstanceVariable failures: 1" in doctor, doctor
    assert "INFO -- : Total: 1 row(s) affected" in doctor and VARIABLE in doctor, doctor
    assert drill.api("GET", "/user")[0] == 200  # the rest works, as on GitLab


def test_gitlab_ctl_stops_puma_and_the_container_runs_on(drill: Drill) -> None:
    status = drill.ctl("status")
    assert status.returncode == 0, status
    for service in ("nginx", "sshd", "puma", "sidekiq", "registry"):
        assert re.search(rf"^run: {service}: \(pid [0-9]+\) [0-9]+s; run: log: ", status.stdout.decode(), re.M), status
    assert drill.ctl("stop", "puma").returncode == 0
    assert drill.api("GET", "/user")[0] == 502
    down = drill.ctl("status", "puma")
    assert down.returncode == 3 and down.stdout.startswith(b"down: puma: "), down
    assert json.loads(drill.host.docker("inspect", "--format", "{{json .State.Running}}", "gitlab").stdout) is True
    started = drill.ctl("start", "puma")
    assert started.returncode == 0 and started.stdout.startswith(b"ok: run: puma: (pid "), started
    wait_healthy(drill.host, "gitlab")
    assert drill.api("GET", "/user")[0] == 200
    assert drill.ctl("stop", "nosuch").returncode == 1
