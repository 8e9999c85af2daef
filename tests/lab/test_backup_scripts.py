"""The backup's host scripts against a real sshd and a real restic (issue 18).

Two hosts, as components/backup.py runs its commands on them (staged_command and
unstaged_command, FORGEWAY_ETC under the test's own tree):

* the VPS: a namespace host (tests/lab/netns.py) whose second sshd (Debian 12's, port
  2202) reads a sshd_config that Includes sshd_config.d/*.conf, as Debian's does;
  backup-sftp-up.sh makes the user forgeway-backup on THIS machine (useradd: the
  namespace shares /etc/passwd) and removes it again (the test removes it if it fails);
* the GitLab host: this machine's root namespace, FORGEWAY_ETC of its own, reaching the
  VPS's sshd at its lab address (the tunnel address in production).

GitLab itself is a fake ``docker`` on PATH answering ``docker exec forgeway-gitlab ...``
(VERSION, gitlab-backup create, printenv) and ``docker cp`` from a directory standing for
the container: the lab stand-in gains ``gitlab-backup`` from engineer standin18; the drill
(tests/lab/test_lab_backup_drill.py) runs the real chain. The tree lives under /var/lib
(root-owned, 0755 to the end): sshd's ChrootDirectory wants every component root-owned and
writable by root only, which /tmp is not.

Not run concurrently with itself: the user forgeway-backup is the machine's.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.backup import SFTP_USER, SftpTarget, backup_settings, default_repository, known_hosts
from components.host_service import HostService
from components.scripts import script, script_command
from tests.lab.netns import SSHD, Lab, LabHost
from tests.lab.tree import listing
from tools.lab.machine import Machine

pytestmark = pytest.mark.lab

PORT = 2202
PASSWORD = "lab-backup-password-only"  # noqa: S105 - test data
VERSION = "17.11.3"
RETENTION = ["--keep-last=2"]

FAKE_DOCKER = r"""#!/bin/sh
# A fake docker for forgeway-backup: the container is the directory $FAKE_CONTAINER.
c=$FAKE_CONTAINER
case $1 in
  exec)
    [ "$2" = forgeway-gitlab ] || { echo "Error: No such container: $2" >&2; exit 1; }
    shift 2
    case $1 in
      cat) cat "$c$2" ;;
      rm) rm -f "$c$3" ;;
      printenv) echo "external_url 'https://gitlab.forgeway.test'" ;;
      gitlab-backup)
        [ "$2" = create ] || exit 1
        name=${3#BACKUP=}
        [ -z "${FAKE_BACKUP_FAILS:-}" ] || { echo "gitlab-backup: $FAKE_BACKUP_FAILS" >&2; exit 1; }
        echo "$*" >"$c/last-create"
        mkdir -p "$c/var/opt/gitlab/backups"
        tar -C "$c/data" -cf "$c/var/opt/gitlab/backups/${name}_gitlab_backup.tar" . ;;
      *) exit 1 ;;
    esac ;;
  cp)
    src=${2#forgeway-gitlab:}
    tar -C "$c$(dirname "$src")" -cf - "$(basename "$src")" ;;
  *) exit 1 ;;
esac
"""


@dataclass(frozen=True)
class Tree:
    base: Path  # root-owned 0755, under /var/lib
    vps_etc: Path
    home_etc: Path
    container: Path  # the fake container's root
    bin: Path  # the fake docker


def _run(command: str | list[str], env: dict[str, str], *, stdin: str = "", ok: bool = True) -> list[str]:
    argv = ["sh", "-c", command] if isinstance(command, str) else command
    done = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=300, check=False)
    if ok:
        assert done.returncode == 0, f"{str(command)[:80]}... failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        return done.stdout.splitlines()
    assert done.returncode != 0, f"{str(command)[:80]}... succeeded:\n{done.stdout}"
    return (done.stdout + done.stderr).splitlines()


def _user_gone() -> None:
    try:
        pwd.getpwnam(SFTP_USER)
    except KeyError:
        return
    subprocess.run(["userdel", SFTP_USER], check=False)


@pytest.fixture
def tree() -> Iterator[Tree]:
    if not shutil.which("restic"):
        pytest.fail("restic is not installed: apt-get install restic (tools/ci/apt-packages.txt)")
    try:
        pwd.getpwnam(SFTP_USER)
        pytest.fail(f"user {SFTP_USER} exists on this machine: another run of this test, or a left-over")
    except KeyError:
        pass
    base = Path(tempfile.mkdtemp(prefix="fwbk-", dir="/var/lib"))
    base.chmod(0o755)
    made = Tree(base, base / "vps" / "etc", base / "home" / "etc", base / "container", base / "bin")
    for d in (made.vps_etc / "ssh" / "sshd_config.d", made.home_etc, made.bin):
        d.mkdir(parents=True)
    c = made.container
    (c / "etc/gitlab").mkdir(parents=True)
    (c / "etc/gitlab/gitlab-secrets.json").write_text('{"gitlab_rails": {"db_key_base": "lab"}}\n')
    (c / "etc/gitlab/gitlab.rb").write_text("# not in the backup\n")
    for kind in ("ed25519", "rsa"):
        (c / f"etc/gitlab/ssh_host_{kind}_key").write_text(f"{kind} private\n")
        (c / f"etc/gitlab/ssh_host_{kind}_key.pub").write_text(f"ssh-{kind} public\n")
    (c / "opt/gitlab/embedded/service/gitlab-rails").mkdir(parents=True)
    (c / "opt/gitlab/embedded/service/gitlab-rails/VERSION").write_text(VERSION + "\n")
    (c / "data").mkdir()
    (c / "data/repositories.bundle").write_bytes(os.urandom(256 << 10))
    (made.bin / "docker").write_text(FAKE_DOCKER)
    (made.bin / "docker").chmod(0o755)
    try:
        yield made
    finally:
        _user_gone()
        shutil.rmtree(base, ignore_errors=True)


def _vps_sshd_config(tree: Tree, vps: LabHost) -> Path:
    """Debian's shape: the drop-ins first, then the main settings (and a later drop-in)."""
    ssh = tree.vps_etc / "ssh"
    config = ssh / "sshd_config"
    config.write_text(
        f"Include {ssh}/sshd_config.d/*.conf\n"
        f"ListenAddress {vps.address}\nPort {PORT}\nHostKey {vps.work_dir / 'ssh_host_ed25519_key'}\n"
        f"AuthorizedKeysFile {vps.work_dir / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"PidFile {tree.base / 'vps' / 'sshd.pid'}\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    # Sorted after ours: were our Match to run on past its file, these would be forgeway-backup's only.
    (ssh / "sshd_config.d" / "zz-lab.conf").write_text("X11Forwarding yes\nAllowTcpForwarding yes\n")
    return config


def _env(etc: Path, tree: Tree) -> dict[str, str]:
    return {
        "PATH": f"{tree.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "FORGEWAY_ETC": str(etc),
        "FORGEWAY_SYSTEMD": "yes",
        "FAKE_CONTAINER": str(tree.container),
    }


def _sftp_service(public_key: str) -> HostService:
    return HostService(
        stage="backup-sftp", up="backup-sftp-up.sh", down="backup-sftp-down.sh", args=[public_key], pass_dir=False
    )


def _backup_service(vps: LabHost) -> HostService:
    repository = default_repository(vps.address, PORT)
    files = {
        "forgeway-backup.sh": script("forgeway-backup.sh"),
        "forgeway-restic.sh": script("forgeway-restic.sh"),
        "settings": backup_settings(repository, "home", RETENTION, "included", SftpTarget(vps.address, PORT)),
        "known_hosts": known_hosts(vps.address, PORT, vps.host_key),
    }
    return HostService(
        stage="backup", up="backup-up.sh", down="backup-down.sh", args=["*-*-* 03:15:00", "30", "360"], files=files
    )


def _create(service: HostService) -> str:
    command = service.create()
    assert isinstance(command, str)
    return command


def _sshd_settings(config: Path, user: str, address: str) -> dict[str, str]:
    out = subprocess.run(
        [SSHD, "-T", "-f", str(config), "-C", f"user={user},host=home,addr={address},laddr=10.8.0.1,lport={PORT}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}


def _only_ok(lines: list[str]) -> None:
    assert lines and all(line.startswith("ok ") for line in lines), lines


def test_sftp_user_backup_converge_a_real_backup_and_delete_keeps_the_repository(tree: Tree) -> None:
    with Lab(base_dir=tree.base) as lab:
        lab.work_dir.chmod(0o755)
        vps = lab.add_host("vps")
        config = _vps_sshd_config(tree, vps)
        vps_env, home_env = _env(tree.vps_etc, tree), _env(tree.home_etc, tree)
        vps_before, home_before = listing(tree.vps_etc), listing(tree.home_etc)

        # (a) the GitLab host's own key: made once, only its public half printed
        key_lines = _run(script_command("backup-key.sh", "home"), home_env)
        assert len(key_lines) == 1 and key_lines[0].startswith("ssh-ed25519 AAAA"), key_lines
        assert _run(script_command("backup-key.sh", "home"), home_env) == key_lines
        private = tree.home_etc / "forgeway/backup/id_ed25519"
        assert private.stat().st_mode & 0o777 == 0o600 and "PRIVATE KEY" in private.read_text()

        # (b) the VPS's SFTP user, twice
        sftp = _sftp_service(key_lines[0])
        first = _run(_create(sftp), vps_env)
        assert any(f"user {SFTP_USER}" in line for line in first), first
        _only_ok(_run(_create(sftp), vps_env))
        chroot = tree.base / "vps/srv/forgeway-backup"
        assert (chroot.stat().st_uid, chroot.stat().st_mode & 0o777) == (0, 0o755)
        assert pwd.getpwuid((chroot / "restic").stat().st_uid).pw_name == SFTP_USER
        assert pwd.getpwnam(SFTP_USER).pw_shell == "/usr/sbin/nologin"
        keys = (tree.vps_etc / "forgeway/backup-sftp/authorized_keys").read_text()
        assert keys == f"restrict {key_lines[0]} forgeway-backup\n"
        # The Match applies to forgeway-backup and to no one else (Debian 12's sshd reads it).
        ours = _sshd_settings(config, SFTP_USER, "10.8.0.2")
        assert (ours["chrootdirectory"], ours["forcecommand"]) == (str(chroot), "internal-sftp"), ours
        assert ours["authenticationmethods"] == "publickey" and ours["permittty"] == "no", ours
        assert ours["allowtcpforwarding"] == "no" and ours["x11forwarding"] == "no", ours
        for other in ("root", "admin"):
            theirs = _sshd_settings(config, other, "10.8.0.2")
            assert (theirs["chrootdirectory"], theirs["forcecommand"]) == ("none", "none"), theirs
            assert theirs["x11forwarding"] == "yes" and theirs["allowtcpforwarding"] == "yes", theirs
            assert theirs["port"] == str(PORT) and theirs["authenticationmethods"] == "any", theirs

        sshd = ["unshare", "--pid", "--kill-child", SSHD, "-D", "-f", str(config), "-E", str(tree.base / "sshd.log")]
        with Machine("vps", vps.netns).background(sshd):
            Machine("deployer").wait_for_open_port(PORT, vps.address)
            _backups(tree, vps, home_env, chroot)

        # The repository unreachable (its sshd stopped): up fails, naming it.
        down_sshd = _run(_create(_backup_service(vps)), home_env, stdin=f"{PASSWORD}\n", ok=False)
        shown = default_repository(vps.address, PORT)
        assert any(f"backup-up: cannot open the repository {shown}: " in line for line in down_sshd), down_sshd

        # delete: (c), the key, (b) -- dependents first, as the program deletes
        _run(HostService(stage="backup", up="backup-up.sh", down="backup-down.sh").delete(), home_env)
        _run(script_command("backup-key.sh", "--delete"), home_env)
        down = _run(sftp.delete(), vps_env)
        assert any("kept the backup repository" in line for line in down), down
        with pytest.raises(KeyError):
            pwd.getpwnam(SFTP_USER)
        assert listing(tree.home_etc) == home_before
        assert listing(tree.vps_etc) == vps_before
        assert (chroot / "restic" / "config").is_file(), "the repository stays"
        assert not (tree.base / "home/var/lib/forgeway").exists()
        _only_ok(_run(HostService(stage="backup", up="backup-up.sh", down="backup-down.sh").delete(), home_env))
        again = _run(sftp.delete(), vps_env)
        assert not [line for line in again if line.startswith(("changed", "removed"))], again


def _backups(tree: Tree, vps: LabHost, env: dict[str, str], chroot: Path) -> None:
    """(c) the GitLab host's service, twice; a wrong password; a real backup; the lock."""
    service = _backup_service(vps)
    secrets = f"{PASSWORD}\nexport AWS_ACCESS_KEY_ID='unused'\n"
    first = _run(_create(service), env, stdin=secrets)
    assert any("initialised (restic init)" in line for line in first), first
    assert (chroot / "restic" / "config").is_file()
    assert _run(_create(service), env, stdin=secrets) == [
        f"ok backup: repository {default_repository(vps.address, PORT)} opens with backup_password",
        f"ok backup: nothing to change ({tree.home_etc}/forgeway/backup, *-*-* 03:15:00)",
    ]
    home = tree.home_etc / "forgeway/backup"
    for name, mode in (("password", 0o600), ("environment", 0o600), ("forgeway-backup", 0o755), ("settings", 0o644)):
        assert (home / name).stat().st_mode & 0o777 == mode, name
    assert (home / "password").read_text() == PASSWORD
    timer = (tree.home_etc / "systemd/system/forgeway-backup.timer").read_text()
    assert "\nOnCalendar=*-*-* 03:15:00\n" in timer and "\nRandomizedDelaySec=30min\n" in timer, timer

    wrong = _run(_create(service), env, stdin="not-the-password\n", ok=False)
    assert any("does not open with backup_password" in line for line in wrong), wrong
    assert not any("not-the-password" in line for line in wrong), wrong
    _run(_create(service), env, stdin=secrets)  # back

    # Without systemd: the cron file instead of the units, converging too; then back.
    cron_env = {**env, "FORGEWAY_SYSTEMD": "no"}
    _run(_create(service), cron_env, stdin=secrets)
    cron = (tree.home_etc / "cron.d/forgeway-backup").read_text()
    assert f"\n15 3 * * * root timeout 360m '{home}/forgeway-backup'" in cron, cron
    assert not (tree.home_etc / "systemd/system/forgeway-backup.timer").exists()
    assert all(line.startswith("ok ") for line in _run(_create(service), cron_env, stdin=secrets))
    _run(_create(service), env, stdin=secrets)
    assert not (tree.home_etc / "cron.d/forgeway-backup").exists()
    _real_backup(tree, vps, env)


def _real_backup(tree: Tree, vps: LabHost, env: dict[str, str]) -> None:
    """forgeway-backup as the timer runs it: the snapshot, status.json, the lock, a failed run."""
    home = tree.home_etc / "forgeway/backup"
    started = time.monotonic()
    run = _run([str(home / "forgeway-backup")], env)
    print(f"backup run ({time.monotonic() - started:.2f}s): {run}")
    state = tree.base / "home/var/lib/forgeway/backup"
    status = json.loads((state / "status.json").read_text())
    assert status["result"] == "ok" and status["error"] is None, status
    assert status["gitlab_version"] == VERSION and status["backup_file"] == f"forgeway_{VERSION}_gitlab_backup.tar"
    assert status["repository"] == default_repository(vps.address, PORT)
    assert (state / "status.json").stat().st_mode & 0o777 == 0o644
    create = (tree.container / "last-create").read_text().split()
    assert create == [
        "gitlab-backup",
        "create",
        f"BACKUP=forgeway_{VERSION}",
        "STRATEGY=copy",
        "GZIP_RSYNCABLE=yes",
        "CRON=1",
    ]
    assert not list((tree.container / "var/opt/gitlab/backups").iterdir()), "the tar is removed from the container"
    restic = str(home / "forgeway-restic")
    snapshots = json.loads(_run([restic, "snapshots", "--json"], env)[0])
    assert len(snapshots) == 1 and snapshots[0]["short_id"] == status["snapshot"][:8], snapshots
    assert set(snapshots[0]["tags"]) == {"forgeway", f"gitlab-{VERSION}"} and snapshots[0]["hostname"] == "home"
    staged = str(state / "staging") + "/"
    files = {line.removeprefix(staged) for line in _run([restic, "ls", "latest"], env) if line.startswith(staged)}
    assert files == {
        "gitlab",
        "config",
        f"gitlab/forgeway_{VERSION}_gitlab_backup.tar",
        "config/gitlab-secrets.json",
        "config/gitlab.rb.rendered",
        "manifest.json",
        *(f"config/ssh_host_{k}_key{s}" for k in ("ed25519", "rsa") for s in ("", ".pub")),
    }, files
    manifest = json.loads("\n".join(_run([restic, "dump", "latest", str(state / "staging/manifest.json")], env)))
    assert manifest["gitlab_version"] == VERSION and manifest["edition"] == "ce" and manifest["registry"] == "included"
    assert not (state / "staging").exists()

    # A second run while one runs: at once, status 0, nothing done.
    with (state / "lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = _run([str(home / "forgeway-backup")], env)
        assert busy == [f"forgeway-backup: a backup is already running (lock {state}/lock): this run does nothing"]
    # A failed run: exit status, status.json, the message.
    failed = _run([str(home / "forgeway-backup")], {**env, "FAKE_BACKUP_FAILS": "disk full"}, ok=False)
    assert any("gitlab-backup create failed: gitlab-backup: disk full" in line for line in failed), failed
    status = json.loads((state / "status.json").read_text())
    assert status["result"] == "failed" and "disk full" in status["error"] and status["snapshot"] is None, status
    assert len(json.loads(_run([restic, "snapshots", "--json"], env)[0])) == 1
