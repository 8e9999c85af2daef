"""The restore, step by step, in the order of GitLab's docs ("Restore GitLab", the Docker case).

Each step is one or a few commands on the GitLab host, as root, through a runner
(tools/hostssh.py HostRunner; a fake one in the unit tests). Nothing is changed before
the checks pass: the repository is readable with the password, the snapshot's backup
is of the running GitLab's version, and GitLab holds no data (unless ``overwrite``).
Then: secrets and host keys into /etc/gitlab and a restart; puma and sidekiq stopped;
``gitlab-backup restore``; a restart; GitLab's own checks. A failure names the step
and the state the host is left in.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from tools.restore.snapshot import (
    BackupContents,
    Snapshot,
    choose_snapshot,
    contents,
    parse_snapshots,
    version_of_backup_file,
)

__all__ = ["CONTAINER", "RESTIC", "Restore", "RestoreFailed", "Runner"]

CONTAINER = "forgeway-gitlab"
RESTIC = "/etc/forgeway/backup/forgeway-restic"  # restic with the stack's repository (issue 18 contract, 2)
VERSION_FILE = "/opt/gitlab/embedded/service/gitlab-rails/VERSION"
BACKUPS_DIR = "/var/opt/gitlab/backups"
REPOSITORIES = "/var/opt/gitlab/git-data/repositories"
HEALTHY_TIMEOUT_S = 900.0
# restic's answer to a wrong password (exit 12 since 0.17; the message in every version).
_WRONG_PASSWORD = re.compile(r"wrong password|no key found", re.IGNORECASE)
# gitlab:doctor:secrets: "<Model> failures: N" per model; any N > 0 is a value it cannot decrypt.
_SECRET_FAILURES = re.compile(r"failures:\s*([1-9]\d*)")


class Runner(Protocol):
    @property
    def name(self) -> str: ...

    def run(
        self, command: str, *, stdin: str | bytes | None = None, timeout: float = 600, root: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


class RestoreFailed(RuntimeError):
    """A step failed: ``str()`` says where it stopped and what state the host is in."""


# What the host is like when each step fails: the message a user acts on.
_STATE_AFTER_FAILURE = {
    "repository": "nothing on the host was changed",
    "snapshot": "nothing on the host was changed",
    "version": "nothing on the host was changed",
    "empty": "nothing on the host was changed",
    "secrets": (
        "GitLab's data is untouched; /etc/gitlab may hold some of the snapshot's secrets and host keys, and "
        "GitLab may be restarting: run the restore again"
    ),
    "stop": (
        "/etc/gitlab holds the snapshot's secrets and host keys, GitLab's data is untouched, puma or sidekiq "
        "may be stopped: run the restore again (or `docker restart forgeway-gitlab` to serve the empty GitLab)"
    ),
    "restore": (
        "GitLab's database and repositories may be partly restored, puma and sidekiq are stopped: run the "
        "restore again with --overwrite (gitlab-backup restore replaces what it restores)"
    ),
    "restart": "the backup is restored but GitLab did not come back healthy: see `docker logs forgeway-gitlab`",
    "checks": (
        "the backup is restored and GitLab runs, but its own checks report problems (above): a failure of "
        "gitlab:doctor:secrets means gitlab-secrets.json does not match the database"
    ),
}


@dataclass
class Restore:
    runner: Runner
    snapshot: str = "latest"
    password: str | None = None  # --password-file's content; None: the host's own password file
    overwrite: bool = False  # restore over a GitLab that has data
    healthy_timeout_s: float = HEALTHY_TIMEOUT_S
    log: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    timings: list[tuple[str, float]] = field(default_factory=list)
    chosen: Snapshot | None = None
    backup: BackupContents | None = None
    version: str = ""

    # -- the whole run --

    def run(self) -> None:
        for step, describe, action in (
            ("repository", "repository readable", self._repository),
            ("snapshot", "snapshot contents", self._contents),
            ("version", "GitLab version matches", self._version),
            ("empty", "GitLab holds no data", self._empty),
            ("secrets", "secrets and host keys into /etc/gitlab, restart", self._secrets),
            ("stop", "puma and sidekiq stopped", self._stop),
            ("restore", "gitlab-backup restore", self._restore),
            ("restart", "restart, wait healthy", self._restart),
            ("checks", "gitlab:check and gitlab:doctor:secrets", self._checks),
        ):
            started = self.clock()
            try:
                action()
            except RestoreFailed as exc:
                self.timings.append((step, self.clock() - started))
                raise RestoreFailed(
                    f"restore stopped at step '{step}' ({describe}): {exc}\nhost {self.runner.name}: "
                    f"{_STATE_AFTER_FAILURE[step]}"
                ) from None
            seconds = self.clock() - started
            self.timings.append((step, seconds))
            self.log(f"{step:<11} {seconds:7.1f} s  {describe}")
        self._summary()

    def _summary(self) -> None:
        assert self.chosen is not None and self.backup is not None
        total = sum(s for _, s in self.timings)
        self.log(
            f"restored snapshot {self.chosen.short_id} ({self.chosen.time[:19]}, from host "
            f"{self.chosen.hostname or '?'}) onto host {self.runner.name}: GitLab {self.version} backup "
            f"{self.backup.backup_name} (database, repositories, registry, uploads, as it holds them), "
            f"gitlab-secrets.json, {len(self.backup.host_keys)} SSH host key file(s); {total:.1f} s in all"
        )

    # -- helpers --

    def _sh(self, command: str, what: str, *, timeout: float = 600, stdin: str | None = None) -> str:
        done = self.runner.run(command, stdin=stdin, timeout=timeout)
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip())[-1500:]
            raise RestoreFailed(f"{what} failed (exit {done.returncode}): {detail}")
        return done.stdout

    def _restic(self, args: str) -> str:
        """``forgeway-restic ARGS`` on the host; with --password-file, the password on stdin."""
        if self.password is None:
            return f"{RESTIC} {args}"
        return f"{RESTIC} --password-file /dev/stdin {args}"

    def _restic_run(self, args: str, what: str, timeout: float = 600) -> str:
        stdin = self.password
        done = self.runner.run(self._restic(args), stdin=stdin, timeout=timeout)
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip())[-1500:]
            if done.returncode == 12 or _WRONG_PASSWORD.search(message):
                raise RestoreFailed(
                    "the repository's password is wrong (restic: wrong password or no key found): give the "
                    "stack's backup_password with --password-file, or check the stack's secret backup_password"
                )
            raise RestoreFailed(f"{what} failed (exit {done.returncode}): {message}")
        return done.stdout

    def _docker_exec(self, command: str) -> str:
        return f"docker exec {CONTAINER} {command}"

    def _pipe_into_container(self, path: str, target: str, mode: str, owner: str) -> str:
        """A shell line: the snapshot's ``path`` into the container's ``target`` (atomic rename)."""
        partial, final = shlex.quote(f"{target}.restoring"), shlex.quote(target)
        directory = shlex.quote(target.rsplit("/", 1)[0])
        # A GitLab that never made a backup may have no backups directory yet: GitLab's is git's, 0700.
        inside = (
            f"{{ [ -d {directory} ] || {{ mkdir -p {directory} && chown {owner} {directory} && chmod 0700 "
            f"{directory}; }}; }} && umask 077 && cat > {partial} && chown {owner} {partial} && "
            f"chmod {mode} {partial} && mv -f {partial} {final}"
        )
        dump = self._restic(f"dump {shlex.quote(self._snapshot_id())} {shlex.quote(path)}")
        return f"set -o pipefail; {dump} | docker exec -i {CONTAINER} sh -c {shlex.quote(inside)}"

    def _snapshot_id(self) -> str:
        assert self.chosen is not None
        return self.chosen.id

    # -- the steps --

    def _repository(self) -> None:
        listed = self._restic_run("snapshots --json", "listing the repository's snapshots")
        try:
            self.chosen = choose_snapshot(parse_snapshots(listed), self.snapshot)
        except ValueError as exc:
            raise RestoreFailed(str(exc)) from None
        self.log(f"snapshot {self.chosen.short_id} of {self.chosen.time[:19]} from host {self.chosen.hostname}")

    def _contents(self) -> None:
        listed = self._restic_run(f"ls --json {shlex.quote(self._snapshot_id())}", "listing the snapshot")
        try:
            self.backup = contents(listed)
        except ValueError as exc:
            raise RestoreFailed(str(exc)) from None

    def _version(self) -> None:
        assert self.backup is not None
        try:
            wanted = version_of_backup_file(self.backup.backup_name)
        except ValueError as exc:
            raise RestoreFailed(str(exc)) from None
        running = self._sh(self._docker_exec(f"cat {VERSION_FILE}"), "reading the running GitLab's VERSION").strip()
        if running != wanted:
            raise RestoreFailed(
                f"GitLab version mismatch: the snapshot's backup {self.backup.backup_name} is GitLab {wanted}, the "
                f"running GitLab is {running}; GitLab restores only onto the same version and edition: set "
                f"gitlab.images to GitLab {wanted}, `pulumi up`, and restore again"
            )
        self.version = running

    def _empty(self) -> None:
        find = f"find {REPOSITORIES} -name '*.git' -type d -print -quit 2>/dev/null || true"
        found = self._sh(self._docker_exec(f"sh -c {shlex.quote(find)}"), "looking for repositories").strip()
        if found and not self.overwrite:
            raise RestoreFailed(
                f"GitLab on this host already holds data (a repository: {found}); a restore replaces it. Restore "
                "only onto a new, empty GitLab, or pass --overwrite to replace its data"
            )

    def _secrets(self) -> None:
        assert self.backup is not None
        lines = [self._pipe_into_container(self.backup.secrets, "/etc/gitlab/gitlab-secrets.json", "0600", "root:root")]
        for key in self.backup.host_keys:
            name = key.rsplit("/", 1)[-1]
            mode = "0644" if name.endswith(".pub") else "0600"
            lines.append(self._pipe_into_container(key, f"/etc/gitlab/{name}", mode, "root:root"))
        for line in lines:
            self._restic_pipe(line, "putting back secrets and host keys")
        self._sh(f"docker restart {CONTAINER}", "restarting GitLab with the snapshot's secrets")
        self._wait_healthy()

    def _restic_pipe(self, line: str, what: str) -> None:
        done = self.runner.run(f"bash -c {shlex.quote(line)}", stdin=self.password, timeout=3600)
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip())[-1500:]
            raise RestoreFailed(f"{what} failed (exit {done.returncode}): {message}")

    def _stop(self) -> None:
        for service in ("puma", "sidekiq"):
            self._sh(self._docker_exec(f"gitlab-ctl stop {service}"), f"gitlab-ctl stop {service}")

    def _restore(self) -> None:
        assert self.backup is not None
        target = f"{BACKUPS_DIR}/{self.backup.backup_name}"
        self._restic_pipe(
            self._pipe_into_container(self.backup.backup_file, target, "0600", "git:git"),
            f"copying {self.backup.backup_name} into the container",
        )
        try:
            self._sh(
                self._docker_exec(f"gitlab-backup restore BACKUP={shlex.quote(self.backup.backup_id)} force=yes"),
                "gitlab-backup restore",
                timeout=6 * 3600,
            )
        finally:
            # The tar is a copy of the snapshot's: leave no second copy of the data on the device.
            self.runner.run(self._docker_exec(f"rm -f {shlex.quote(target)}"), timeout=120)

    def _restart(self) -> None:
        self._sh(f"docker restart {CONTAINER}", "restarting GitLab")
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = self.clock() + self.healthy_timeout_s
        status = ""
        while self.clock() < deadline:
            done = self.runner.run(f"docker inspect -f '{{{{.State.Health.Status}}}}' {CONTAINER}", timeout=60)
            status = done.stdout.strip()
            if done.returncode == 0 and status == "healthy":
                return
            self.sleep(2)
        raise RestoreFailed(f"GitLab was not healthy within {self.healthy_timeout_s:g} s (last: {status or '?'})")

    def _checks(self) -> None:
        self._sh(self._docker_exec("gitlab-rake gitlab:check SANITIZE=true"), "gitlab-rake gitlab:check")
        out = self._sh(self._docker_exec("gitlab-rake gitlab:doctor:secrets"), "gitlab-rake gitlab:doctor:secrets")
        failing = [line.strip() for line in out.splitlines() if _SECRET_FAILURES.search(line)]
        if failing:
            raise RestoreFailed("gitlab:doctor:secrets cannot decrypt: " + "; ".join(failing))
