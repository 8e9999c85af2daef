"""tools/restore: the order of GitLab's docs, and what each refusal leaves, on a fake host.

The fake host answers the commands the restore sends (forgeway-restic, docker) from a
small model: a repository with its password and snapshots, a container with its VERSION,
repositories and files. What changed on it is what the tests check.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools.restore import Restore, RestoreFailed
from tools.restore.snapshot import contents, version_of_backup_file

STAGING = "/var/lib/forgeway/backup/staging"
RIGHT = "right"
WRONG = "wrong"
FROM_FILE = "from-file"


def _ls(version: str, *, secrets: bool = True) -> str:
    files = [
        "manifest.json",
        f"gitlab/forgeway_{version}_gitlab_backup.tar",
        "config/ssh_host_ed25519_key",
        "config/ssh_host_ed25519_key.pub",
        "config/gitlab.rb.rendered",
    ] + (["config/gitlab-secrets.json"] if secrets else [])
    lines = [json.dumps({"struct_type": "snapshot", "id": "abc"})]
    lines += [json.dumps({"struct_type": "node", "path": f"{STAGING}/{f}", "type": "file"}) for f in files]
    return "\n".join(lines) + "\n"


@dataclass
class FakeHost:
    name: str = "home"
    password: str = RIGHT
    backup_version: str = "17.11.3"
    running_version: str = "17.11.3"
    has_data: bool = False
    secrets_ok: bool = True
    fail: str = ""  # a command fragment that fails
    commands: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def run(
        self, command: str, *, stdin: str | bytes | None = None, timeout: float = 600, root: bool = True
    ) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        if self.fail and self.fail in command:
            return subprocess.CompletedProcess(command, 1, "", f"{self.fail}: it broke")
        if "forgeway-restic" in command:
            given = stdin if "--password-file /dev/stdin" in command else RIGHT
            if given != self.password:
                return subprocess.CompletedProcess(command, 12, "", "Fatal: wrong password or no key found\n")
        out = ""
        if "snapshots --json" in command:
            out = json.dumps([
                {"id": "aaaa1111" * 8, "short_id": "aaaa1111", "time": "2026-12-06T03:00:00Z", "hostname": "home",
                 "tags": ["forgeway", f"gitlab-{self.backup_version}"]},
                {"id": "bbbb2222" * 8, "short_id": "bbbb2222", "time": "2026-12-07T03:00:00Z", "hostname": "home",
                 "tags": ["forgeway", f"gitlab-{self.backup_version}"]},
            ])  # fmt: skip
        elif "ls --json" in command:
            out = _ls(self.backup_version)
        elif "cat /opt/gitlab/embedded/service/gitlab-rails/VERSION" in command:
            out = self.running_version + "\n"
        elif "find /var/opt/gitlab/git-data/repositories" in command:
            out = "/var/opt/gitlab/git-data/repositories/@hashed/ab/cd/x.git\n" if self.has_data else ""
        elif "gitlab:check" in command:
            out = "Checking GitLab ... Finished\n"
        elif "docker inspect" in command:
            out = "healthy\n"
        elif "gitlab:doctor:secrets" in command:
            out = "CiVariable failures: 0\nDone!\n" if self.secrets_ok else "CiVariable failures: 1\nDone!\n"
        else:
            self.changed.append(command)
        return subprocess.CompletedProcess(command, 0, out, "")


def _restore(host: FakeHost, **kwargs: object) -> tuple[Restore, list[str]]:
    lines: list[str] = []
    restore = Restore(host, log=lines.append, sleep=lambda _: None, **kwargs)  # type: ignore[arg-type]
    return restore, lines


def _step_of(command: str) -> str:
    for fragment, step in (
        ("gitlab-secrets.json", "secrets"),
        ("ssh_host_", "secrets"),
        ("gitlab-ctl stop", "stop"),
        ("_gitlab_backup.tar", "restore"),
        ("gitlab-backup restore", "restore"),
        ("docker restart", "restart"),
        ("gitlab-rake", "checks"),
    ):
        if fragment in command:
            return step
    return "?"


def test_the_steps_follow_gitlabs_order_and_each_prints_its_seconds() -> None:
    host = FakeHost()
    restore, lines = _restore(host)
    restore.run()
    order = [_step_of(c) for c in host.changed]
    # secrets and host keys, a restart; puma, sidekiq; the tar in, restore, tar out; a restart
    assert order == ["secrets", "secrets", "secrets", "restart", "stop", "stop", "restore", "restore", "restore",
                     "restart"]  # fmt: skip
    assert "gitlab-ctl stop puma" in host.changed[4] and "gitlab-ctl stop sidekiq" in host.changed[5]
    assert "gitlab-backup restore BACKUP=forgeway_17.11.3 force=yes" in host.changed[7]
    assert "rm -f /var/opt/gitlab/backups/forgeway_17.11.3_gitlab_backup.tar" in host.changed[8]
    checks = [c for c in host.commands if "gitlab-rake" in c]
    assert checks == [
        "docker exec forgeway-gitlab gitlab-rake gitlab:check SANITIZE=true",
        "docker exec forgeway-gitlab gitlab-rake gitlab:doctor:secrets",
    ]
    timed = [line.split()[0] for line in lines if re.match(r"\S+ +\d+\.\d s ", line)]
    assert timed == ["repository", "snapshot", "version", "empty", "secrets", "stop", "restore", "restart", "checks"]
    assert "restored snapshot bbbb2222" in lines[-1] and "GitLab 17.11.3" in lines[-1]  # latest by default
    assert "forgeway_17.11.3_gitlab_backup.tar" in lines[-1]


def test_the_secrets_go_in_with_root_only_modes_and_a_rename() -> None:
    host = FakeHost()
    _restore(host)[0].run()
    secrets = host.changed[0]
    assert "dump " in secrets and f"{STAGING}/config/gitlab-secrets.json" in secrets
    assert "chmod 0600" in secrets and "mv -f /etc/gitlab/gitlab-secrets.json.restoring" in secrets
    assert "pipefail" in secrets  # a failed dump is not a truncated file put in place
    public = next(c for c in host.changed if "ssh_host_ed25519_key.pub" in c)
    assert "chmod 0644" in public


def test_a_snapshot_by_id_prefix() -> None:
    host = FakeHost()
    restore, lines = _restore(host, snapshot="aaaa")
    restore.run()
    assert "restored snapshot aaaa1111" in lines[-1]
    assert f"dump {'aaaa1111' * 8} " in host.changed[0]


def test_an_unknown_snapshot_lists_what_there_is_and_changes_nothing() -> None:
    host = FakeHost()
    with pytest.raises(RestoreFailed, match=r"--snapshot zzz: no snapshot with that id; .*aaaa1111.*bbbb2222") as err:
        _restore(host, snapshot="zzz")[0].run()
    assert "nothing on the host was changed" in str(err.value)
    assert host.changed == []


def test_a_wrong_password_is_a_clear_error_and_nothing_changes() -> None:
    host = FakeHost()
    with pytest.raises(RestoreFailed) as err:
        _restore(host, password=WRONG)[0].run()
    message = str(err.value)
    assert "stopped at step 'repository'" in message and "password is wrong" in message
    assert "nothing on the host was changed" in message
    assert host.changed == []
    assert "wrong" not in " ".join(host.commands)  # the password went on stdin only


def test_the_password_file_goes_on_stdin_to_every_restic_call() -> None:
    host = FakeHost(password=FROM_FILE)
    _restore(host, password=FROM_FILE)[0].run()
    restic = [c for c in host.commands if "forgeway-restic" in c]
    assert restic and all("--password-file /dev/stdin" in c for c in restic)


def test_a_version_mismatch_is_refused_naming_both_before_anything_is_touched() -> None:
    host = FakeHost(backup_version="17.11.3", running_version="17.11.4")
    with pytest.raises(RestoreFailed) as err:
        _restore(host)[0].run()
    message = str(err.value)
    assert "stopped at step 'version'" in message
    assert "GitLab 17.11.3" in message and "running GitLab is 17.11.4" in message
    assert "nothing on the host was changed" in message
    assert host.changed == []


def test_ce_and_ee_of_one_version_are_a_mismatch() -> None:
    host = FakeHost(backup_version="17.11.3", running_version="17.11.3-ee")
    with pytest.raises(RestoreFailed, match=r"17\.11\.3-ee"):
        _restore(host)[0].run()
    assert host.changed == []


def test_a_gitlab_with_data_is_refused_unless_overwrite() -> None:
    host = FakeHost(has_data=True)
    with pytest.raises(RestoreFailed, match=r"already holds data.*--overwrite") as err:
        _restore(host)[0].run()
    assert "nothing on the host was changed" in str(err.value) and host.changed == []
    _restore(host, overwrite=True)[0].run()
    assert any("gitlab-backup restore" in c for c in host.changed)


@pytest.mark.parametrize(
    ("fragment", "step", "state"),
    [
        ("gitlab-secrets.json", "secrets", "GitLab's data is untouched"),
        ("gitlab-ctl stop sidekiq", "stop", "puma or sidekiq may be stopped"),
        ("gitlab-backup restore", "restore", "partly restored"),
        ("gitlab-rake gitlab:check", "checks", "its own checks report problems"),
    ],
)
def test_every_failure_says_where_it_stopped_and_the_hosts_state(fragment: str, step: str, state: str) -> None:
    host = FakeHost(fail=fragment)
    with pytest.raises(RestoreFailed) as err:
        _restore(host)[0].run()
    message = str(err.value)
    assert f"stopped at step '{step}'" in message and state in message and "it broke" in message


def test_a_failed_restore_still_removes_the_tar_from_the_container() -> None:
    host = FakeHost(fail="gitlab-backup restore")
    with pytest.raises(RestoreFailed):
        _restore(host)[0].run()
    assert "rm -f /var/opt/gitlab/backups/forgeway_17.11.3_gitlab_backup.tar" in host.commands[-1]


def test_secrets_that_do_not_decrypt_fail_the_checks() -> None:
    host = FakeHost(secrets_ok=False)
    with pytest.raises(RestoreFailed, match=r"step 'checks'.*cannot decrypt: CiVariable failures: 1"):
        _restore(host)[0].run()


def test_gitlab_not_healthy_in_time_names_the_last_status() -> None:
    host = FakeHost()
    ticks = iter(range(0, 10_000, 50))
    restore, _ = _restore(host, healthy_timeout_s=100)
    restore.clock = lambda: float(next(ticks))
    host_run = host.run

    def starting(command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        done = host_run(command, **kwargs)  # type: ignore[arg-type]
        return subprocess.CompletedProcess(command, 0, "starting\n", "") if "docker inspect" in command else done

    host.run = starting  # type: ignore[method-assign]
    with pytest.raises(RestoreFailed, match=r"step 'secrets'.*not healthy within 100 s \(last: starting\)"):
        restore.run()


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("forgeway_17.11.3_gitlab_backup.tar", "17.11.3"),
        ("forgeway_17.11.3-ee_gitlab_backup.tar", "17.11.3-ee"),
        ("1733540000_2026_12_07_17.11.3_gitlab_backup.tar", "17.11.3"),
        ("1733540000_2026_12_07_17.11.3-ee_gitlab_backup.tar", "17.11.3-ee"),
    ],
)
def test_the_version_comes_from_the_backup_files_name(name: str, version: str) -> None:
    assert version_of_backup_file(name) == version


def test_a_snapshot_without_secrets_or_manifest_is_not_restorable() -> None:
    with pytest.raises(ValueError, match=r"no config/gitlab-secrets\.json"):
        contents(_ls("17.11.3", secrets=False))
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        contents(json.dumps({"struct_type": "node", "path": "/x/y"}))


def test_every_command_sent_is_valid_shell() -> None:
    host = FakeHost()
    _restore(host, password=RIGHT)[0].run()
    for command in host.commands:
        checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{command}: {checked.stderr}"
        if command.startswith("bash -c "):
            inner = shlex.split(command)[2]
            assert subprocess.run(["bash", "-n", "-c", inner], check=False).returncode == 0, inner
            docker_sh = shlex.split(inner.split(" | ", 1)[1])[-1]  # what runs in the container
            assert subprocess.run(["sh", "-n", "-c", docker_sh], check=False).returncode == 0, docker_sh


def test_the_cli_names_a_missing_stack_file_and_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.restore.__main__ import main

    assert main(["--stack", "no-such-stack", "--yes"]) == 1
    assert "no stack file" in capsys.readouterr().err
    assert main(["--stack", "prod", "--password-file", str(tmp_path / "missing"), "--yes"]) == 2
    assert "--password-file" in capsys.readouterr().err
