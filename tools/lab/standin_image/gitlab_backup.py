#!/usr/bin/python3
"""``gitlab-backup`` and ``gitlab-rake`` of the GitLab stand-in (/opt/gitlab/bin/, on PATH), acting on their name.

As omnibus GitLab 17.x (lib/backup/manager.rb, lib/tasks/gitlab/backup.rake, docs.gitlab.com
"Back up GitLab" / "Restore GitLab"), from the stand-in's data (gitlab_projects.py):

``gitlab-backup create`` (= ``gitlab-rake gitlab:backup:create``), options as ``KEY=VALUE``
arguments or environment: ``BACKUP=<name>`` (else ``<unix time>_<YYYY_MM_DD>_<version>``),
``STRATEGY=copy`` (copy the uploads and registry trees before packing them), ``SKIP=db,
repositories,uploads,registry`` (others are accepted and have nothing here),
``GZIP_RSYNCABLE=yes`` (gzip --rsyncable), ``CRON=1`` (no progress output; errors still go
to stderr). Writes ``/var/opt/gitlab/backups/<name>_gitlab_backup.tar``, owner git, 0600::

    backup_information.yml   :gitlab_version:, :backup_created_at:, :skipped:, :backup_id:, ... (Ruby's YAML)
    db/database.sql.gz       the API's state (a JSON document, gzipped: the stand-in's "database")
    repositories/@hashed/xx/yy/<h>.bundle   one git bundle per non-empty repository, of the refs in
    repositories/@hashed/xx/yy/<h>.refs     its ref list (``<object id> <ref>`` lines; ``ref: <target> HEAD``)
    uploads.tar.gz           /var/opt/gitlab/gitlab-rails/uploads
    registry.tar.gz          /var/opt/gitlab/gitlab-rails/shared/registry

Consistent while a push or an upload is under way: the database is copied under its lock
first; each repository's refs are listed once, as Gitaly's backup lists them (ListRefs, HEAD
included) and kept beside the bundle, and the bundle holds exactly those refs at those object
ids, whose objects are all there (git writes objects, then refs); an upload appears whole
(written aside, then renamed). A restore sets each repository's HEAD from its ref list, as
Gitaly sets the default branch from the backup (bundles keep no symbolic ref).
gitlab-secrets.json, gitlab.rb and the ssh host keys (/etc/gitlab) are left out, with
GitLab's warning.

``gitlab-backup restore`` (= ``gitlab-rake gitlab:backup:restore``): ``BACKUP=<name>`` (may be
left out when exactly one backup is there), ``force=yes`` (else it asks ``Do you want to
continue (yes/no)?`` on stdin and quits on anything but ``yes``), ``SKIP=``. A backup of another
GitLab version is refused with GitLab's message, exit 1, nothing changed. Restores the
database, repositories, uploads and registry (each replaced), then rebuilds authorized_keys.
Stop puma and sidekiq first (``gitlab-ctl stop puma``), as GitLab's docs say, and restart
the container after: the running API keeps the db_key_base it started with.

``gitlab-rake gitlab:check SANITIZE=true``, ``gitlab:doctor:secrets`` (``VERBOSE=1``: the
keys too), ``gitlab:env:info``: GitLab's report shapes, over the stand-in's data. Exit 0 as
GitLab's tasks do when they report a problem (read the output).
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

SERVICE_DIR = "/opt/gitlab/embedded/service/gitlab-rails"
if TYPE_CHECKING:
    from tools.lab.standin_image import gitlab_db as db
    from tools.lab.standin_image import gitlab_projects as gp
    from tools.lab.standin_image import gitlab_secrets as gs
else:
    sys.path[:0] = [str(Path(__file__).resolve().parent), SERVICE_DIR]
    import gitlab_db as db
    import gitlab_projects as gp
    import gitlab_secrets as gs

BACKUPS = Path("/var/opt/gitlab/backups")
REGISTRY = Path("/var/opt/gitlab/gitlab-rails/shared/registry")
SUFFIX = "_gitlab_backup.tar"
GIT = ["git", "-c", "safe.directory=*"]  # root reads git's repositories
SECRETS_WARNING = (
    "Warning: Your gitlab.rb and gitlab-secrets.json files contain sensitive data \n"
    "and are not included in this backup. You will need these files to restore a backup.\n"
    "Please back them up manually."
)
DB_PROMPT = (
    "Before restoring the database, we will remove all existing\n"
    "tables to avoid future upgrade problems. Be aware that if you have\n"
    "custom tables in the GitLab database these tables and all data will be\n"
    "removed.\n\nDo you want to continue (yes/no)? "
)
KEYS_PROMPT = (
    "This task will now rebuild the authorized_keys file.\n"
    "You will lose any data stored in the authorized_keys file.\nDo you want to continue (yes/no)? "
)


class Quit(Exception):
    """Stop with exit status 1; the message is already printed."""


class Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            print(f"{stamp} -- {text}", flush=True)

    def error(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def options(argv: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments over the environment, as rake takes them."""
    found = {k: v for k, v in os.environ.items() if k in ("BACKUP", "STRATEGY", "SKIP", "GZIP_RSYNCABLE", "CRON",
                                                            "force", "SANITIZE", "VERBOSE")}  # fmt: skip
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep:
            found[key] = value
    return found


# lib/backup/targets/files.rb: uploads are packed without their tmp/ (uploads under way)
EXCLUDES = {"uploads": ("tmp",), "registry": ()}


def _pack(source: Path, target: Path, rsyncable: bool, excludes: tuple[str, ...] = ()) -> None:
    """``tar -cf - -C source . | gzip -c -1`` into ``target``, as GitLab packs a directory."""
    source.mkdir(parents=True, exist_ok=True)
    gzip_cmd = ["gzip", "-c", "-1", *(["--rsyncable"] if rsyncable else [])]
    leave_out = [f"--exclude=./{name}" for name in excludes]
    with target.open("wb") as out:
        tar = subprocess.Popen(["tar", *leave_out, "-cf", "-", "-C", str(source), "--", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        zipped = subprocess.run(gzip_cmd, stdin=tar.stdout, stdout=out, check=False)
        tar.stdout.close()
        if tar.wait() not in (0, 1) or zipped.returncode != 0:  # tar 1: a file changed while read, as GitLab allows
            raise RuntimeError(f"packing {source} failed")


def _unpack(archive: Path, target: Path) -> None:
    for child in list(target.iterdir()) if target.is_dir() else []:
        gp.remove_tree(child)
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(target)], check=True)


def _dump_repositories(progress: Progress, snapshot: db.Json, work: Path) -> None:
    """One bundle and its ref list per non-empty repository of ``snapshot``'s projects."""
    for ident in sorted(gp.projects(snapshot), key=int):
        bundle = work / "repositories" / f"{gp.hashed(int(ident))}.bundle"
        if bundle_repository(gp.repository(int(ident)), bundle, work / ".scratch.git"):
            progress.say(f" - project {ident} ... done")


def bundle_repository(source: Path, bundle: Path, scratch: Path) -> bool:
    """``source``'s refs, listed once, into ``bundle`` (with ``<bundle>.refs``); False when it has none.

    Not ``git bundle create --all`` on the live repository: that reads every ref twice and
    leaves out one that a push moved in between (gitlab-org/git#262), so a repository pushed
    to during a backup could come back without its branch, or its HEAD. The listed refs are
    set in ``scratch``, a repository that borrows ``source``'s objects (a push adds objects,
    never removes them), and bundled from there, where nothing moves them."""
    if not (source / "HEAD").exists():
        return False
    listed = _git(source, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    if not listed:
        return False  # an empty repository has nothing to bundle: GitLab skips it too
    head = subprocess.run([*GIT, "-C", str(source), "symbolic-ref", "-q", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip()  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run([*GIT, "init", "-q", "--bare", str(scratch)], check=True)
    (scratch / "objects" / "info" / "alternates").write_text(f"{(source / 'objects').resolve()}\n")
    creates = "".join(f"create {ref} {oid}\n" for oid, ref in (line.split(" ", 1) for line in listed))
    subprocess.run([*GIT, "-C", str(scratch), "update-ref", "--stdin"], input=creates, text=True, check=True)
    if head:
        _git(scratch, "symbolic-ref", "HEAD", head)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "-C", str(scratch), "bundle", "create", "--quiet", str(bundle), "--all"],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(scratch)
    bundle.with_suffix(".refs").write_text(
        "".join(f"{line}\n" for line in listed) + (f"ref: {head} HEAD\n" if head else "")
    )
    return True


def restore_repository(bundle: Path, target: Path) -> None:
    """A mirror of ``bundle`` at ``target``, its HEAD the one in the bundle's ref list when it has one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "clone", "--quiet", "--mirror", str(bundle), str(target)], check=True)
    _git(target, "remote", "remove", "origin")
    refs = bundle.with_suffix(".refs")
    heads = (
        [line.split()[1] for line in refs.read_text().splitlines() if line.startswith("ref: ")]
        if refs.is_file()
        else []
    )
    if heads:  # else (a backup without ref lists) what clone guessed from the bundle's HEAD
        _git(target, "symbolic-ref", "HEAD", heads[0])


def _git(repository: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repository), *args], capture_output=True, text=True, check=True).stdout


def _dump_tree(work: Path, name: str, source: Path, *, copy: bool, rsyncable: bool) -> None:
    packed = source
    if copy and source.is_dir():  # STRATEGY=copy: a still copy first (without what is left out), then pack it
        packed = work / f".{name}.copy"
        top = str(source)
        shutil.copytree(
            source,
            packed,
            symlinks=True,
            ignore=lambda d, names: [n for n in names if d == top and n in EXCLUDES[name]],
        )
    _pack(packed, work / f"{name}.tar.gz", rsyncable, EXCLUDES[name])
    if packed != source:
        shutil.rmtree(packed)


def _information(version: str, now: datetime.datetime, skip: set[str], backup_id: str) -> str:
    """backup_information.yml as Ruby's YAML writes GitLab's hash of symbols."""
    tar_version = subprocess.run(["tar", "--version"], capture_output=True, text=True, check=True).stdout
    info = {
        "db_version": "20250410000000", "backup_created_at": f"{now:%Y-%m-%d %H:%M:%S.%f}000 +00:00",
        "gitlab_version": version, "tar_version": tar_version.splitlines()[0],
        "installation_type": "omnibus-gitlab", "skipped": ",".join(sorted(skip)) or "''",
        "repositories_server_side": "false", "full_backup_id": backup_id, "backup_id": backup_id,
    }  # fmt: skip
    return "---\n" + "".join(f":{k}: {v}\n" for k, v in info.items())


def create(opts: dict[str, str]) -> int:
    progress = Progress(opts.get("CRON") == "1")
    skip = {s.strip() for s in opts.get("SKIP", "").split(",") if s.strip()}
    rsyncable = opts.get("GZIP_RSYNCABLE", "").lower() in ("yes", "true", "1")
    version = gs.version()
    now = datetime.datetime.now(datetime.UTC)
    backup_id = opts.get("BACKUP") or f"{int(now.timestamp())}_{now:%Y_%m_%d}_{version}"
    BACKUPS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=BACKUPS))
    try:
        progress.say("Dumping database ... ")
        with db.database() as state:  # a copy under the lock: the repositories follow the same state
            snapshot = json.loads(json.dumps(state))
        if "db" not in skip:
            (work / "db").mkdir()
            with gzip.open(work / "db" / "database.sql.gz", "wt") as out:
                json.dump(snapshot, out)
        progress.say("Dumping database ... " + ("[SKIPPED]" if "db" in skip else "done"))
        progress.say("Dumping repositories ... ")
        if "repositories" not in skip:
            _dump_repositories(progress, snapshot, work)
        progress.say("Dumping repositories ... " + ("[SKIPPED]" if "repositories" in skip else "done"))
        for name, source in (("uploads", gp.UPLOADS), ("registry", REGISTRY)):
            what = "container registry images" if name == "registry" else name
            progress.say(f"Dumping {what} ... ")
            if name not in skip:
                _dump_tree(work, name, source, copy=opts.get("STRATEGY") == "copy", rsyncable=rsyncable)
            progress.say(f"Dumping {what} ... " + ("[SKIPPED]" if name in skip else "done"))
        (work / "backup_information.yml").write_text(_information(version, now, skip, backup_id))
        target = BACKUPS / f"{backup_id}{SUFFIX}"
        progress.say(f"Creating backup archive: {target.name} ... ")
        contents = sorted(p.name for p in work.iterdir() if not p.name.startswith("."))
        partial = work / ".archive.tar"
        subprocess.run(["tar", "-cf", str(partial), "-C", str(work), *contents], check=True)
        os.chown(partial, _git_uid(), _git_uid())
        partial.chmod(0o600)
        os.replace(partial, target)  # whole or absent
        progress.say(f"Creating backup archive: {target.name} ... done")
        progress.say("Uploading backup archive to remote storage  ... [SKIPPED]")
        progress.say("Deleting old backups ... [SKIPPING]")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress.say(SECRETS_WARNING)
    progress.say(f"Backup {backup_id} is done.")
    return 0


def _git_uid() -> int:
    import pwd

    return pwd.getpwnam("git").pw_uid


def read_information(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith(":") and ": " in line:
            key, _, value = line[1:].partition(": ")
            found[key] = "" if value == "''" else value
    return found


def _confirm(prompt: str, force: bool) -> None:
    if force:
        return
    sys.stdout.write(prompt)
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "yes":
        print("Quitting...")
        raise Quit


def _choose(progress: Progress, opts: dict[str, str]) -> Path:
    if opts.get("BACKUP"):
        tar = BACKUPS / f"{opts['BACKUP']}{SUFFIX}"
        if not tar.is_file():
            progress.error(f"The backup file {tar} does not exist!")
            raise Quit
        return tar
    found = sorted(BACKUPS.glob(f"*{SUFFIX}"))
    if not found:
        progress.error(f"No backups found in {BACKUPS}\nPlease make sure that file name ends with {SUFFIX}")
        raise Quit
    if len(found) > 1:
        names = "\n".join(f" {p.name.removesuffix(SUFFIX)}" for p in found)
        progress.error(f"Found more than one backup:\n{names}\nSpecify the backup with BACKUP=<timestamp>")
        raise Quit
    return found[0]


def restore(opts: dict[str, str]) -> int:
    progress = Progress(False)
    force = opts.get("force") == "yes"
    try:
        tar = _choose(progress, opts)
        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=BACKUPS))
        try:
            _restore_from(progress, tar, work, opts, force)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except Quit:
        return 1
    progress.say("Restore task is done.")
    progress.say(SECRETS_WARNING)
    return 0


def _restore_from(progress: Progress, tar: Path, work: Path, opts: dict[str, str], force: bool) -> None:
    progress.say("Unpacking backup ... ")
    subprocess.run(["tar", "-xf", str(tar), "-C", str(work)], check=True)
    progress.say("Unpacking backup ... done")
    info = read_information(work / "backup_information.yml")
    current = gs.version()
    if info.get("gitlab_version") != current:  # lib/backup/manager.rb verify_backup_version
        progress.error(
            "GitLab version mismatch:\n"
            f"  Your current GitLab version ({current}) differs from the GitLab version in the backup!\n"
            "  Please switch to the following version and try again:\n"
            f"  version: {info.get('gitlab_version')}\n\n"
            f"Hint: git checkout v{info.get('gitlab_version')}"
        )
        raise Quit
    skip = {s for s in (info.get("skipped", "") + "," + opts.get("SKIP", "")).split(",") if s}
    if "db" not in skip:
        _confirm(DB_PROMPT, force)
        progress.say("Restoring database ... ")
        with gzip.open(work / "db" / "database.sql.gz", "rt") as source:
            restored = json.load(source)
        with db.database() as state:
            state.clear()
            state.update(restored)
        progress.say("Restoring database ... done")
    with db.database() as state:
        projects = sorted(gp.projects(state), key=int)
    if "repositories" not in skip:
        progress.say("Restoring repositories ... ")
        gp.REPOSITORIES.mkdir(parents=True, exist_ok=True)
        for child in list(gp.REPOSITORIES.iterdir()):
            gp.remove_tree(child)
        for ident in projects:
            bundle = work / "repositories" / f"{gp.hashed(int(ident))}.bundle"
            if bundle.is_file():
                restore_repository(bundle, gp.repository(int(ident)))
                progress.say(f" - project {ident} ... done")
            else:
                gp.init_repository(int(ident))
        gp.chown_git(gp.REPOSITORIES)
        progress.say("Restoring repositories ... done")
    for name, target in (("uploads", gp.UPLOADS), ("registry", REGISTRY)):
        if name in skip:
            continue
        what = "container registry images" if name == "registry" else name
        progress.say(f"Restoring {what} ... ")
        _unpack(work / f"{name}.tar.gz", target)
        progress.say(f"Restoring {what} ... done")
    _confirm(KEYS_PROMPT, force)
    with db.database() as state:
        gp.write_authorized_keys(state)


# --------------------------------------------------------------------------- gitlab-rake


def _info(message: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    print(f"I, [{stamp} #{os.getpid()}]  INFO -- : {message}", flush=True)


def doctor_secrets(opts: dict[str, str]) -> int:
    """gitlab:doctor:secrets (lib/gitlab/doctor/secrets.rb): the values db_key_base cannot decrypt, per model."""
    _info("Checking encrypted values in the database")
    with db.database() as state:
        bad = gp.undecryptable(state, gs.db_key(gs.load_secrets()))
    for model in ("ApplicationSetting", "Ci::InstanceVariable", "Ci::Variable", "User"):
        failures = bad if model == "Ci::InstanceVariable" else []
        _info(f"- {model} failures: {len(failures)}")
        if opts.get("VERBOSE") and failures:
            for key in failures:
                _info(f"  > {model}[key={key}]: cannot decrypt (OpenSSL::Cipher::CipherError)")
    _info(f"Total: {len(bad)} row(s) affected")
    _info("Done!")
    return 0


def _ctl_running(service: str) -> bool:
    done = subprocess.run(["gitlab-ctl", "status", service], capture_output=True, text=True, check=False)
    return done.stdout.startswith("run:")


def check(opts: dict[str, str]) -> int:
    """gitlab:check (SANITIZE=true hides project names): the checks the stand-in can answer."""
    with db.database() as state:
        projects = gp.projects(state)
    with_repo = [i for i in projects if (gp.repository(int(i)) / "HEAD").exists()]
    keys = gp.AUTHORIZED_KEYS
    sidekiq = _ctl_running("sidekiq")
    names = ", ".join(projects[i]["path_with_namespace"] for i in with_repo)
    shown = f"{len(with_repo)}/{len(projects)}" if opts.get("SANITIZE") == "true" else names
    lines = [
        "Checking GitLab subtasks ...", "", "Checking GitLab Shell ...", "",
        "GitLab Shell: ... GitLab Shell version >= 14.40.0 ? ... OK (14.40.0)",
        f"Running /opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell-check ... "
        f"{'Internal API available: OK' if _ctl_running('puma') else 'Internal API available: FAILED'}",
        "", "Checking GitLab Shell ... Finished", "", "Checking Gitaly ...", "",
        f"Gitaly: ... default ... {'OK' if gp.REPOSITORIES.is_dir() else 'FAILED'}", "",
        "Checking Gitaly ... Finished", "", "Checking Sidekiq ...", "",
        f"Sidekiq: ... Running? ... {'yes' if sidekiq else 'no'}",
        *([] if sidekiq else ["  Try fixing it:", "  sudo gitlab-ctl restart sidekiq"]),
        "", "Checking Sidekiq ... Finished", "", "Checking GitLab App ...", "",
        "Database config exists? ... yes", "Tables are truncated? ... skipped",
        f"Uploads directory exists? ... {'yes' if gp.UPLOADS.is_dir() else 'no'}",
        f"Is authorized keys file accessible? ... {'yes' if keys.is_file() else 'no'}",
        "GitLab configured to store new projects in hashed storage? ... yes",
        "All projects are in hashed storage? ... yes",
        f"Projects have repositories: ... {shown} ... {'yes' if len(with_repo) == len(projects) else 'no'}",
        "", "Checking GitLab App ... Finished", "", "Checking GitLab subtasks ... Finished",
    ]  # fmt: skip
    print("\n".join(lines))
    return 0


def env_info() -> int:
    version = gs.version()
    with db.database() as state:
        count = len(gp.projects(state))
    print("\n".join([
        "System information", "System:\t\tDebian 12 (the forgeway lab's GitLab stand-in)", "Current User:\tgit",
        "Using RVM:\tno", f"Python Version:\t{sys.version.split()[0]} (the stand-in is not Ruby)", "",
        "GitLab information", f"Version:\t{version}", "Revision:\tforgeway-standin",
        f"Directory:\t{SERVICE_DIR}", "DB Adapter:\tthe stand-in's JSON state", f"Projects:\t{count}",
        "Using LDAP:\tno", "Using Omniauth:\tno", "", "GitLab Shell", "Version:\t14.40.0",
        "Repository storages:", f"- default: \t{gp.REPOSITORIES}",
        "GitLab Shell path:\t\t/opt/gitlab/embedded/service/gitlab-shell",
    ]))  # fmt: skip
    return 0


def rake(argv: list[str]) -> int:
    tasks = [a for a in argv if "=" not in a]
    opts = options(argv)
    if len(tasks) != 1:
        print("usage (stand-in): gitlab-rake gitlab:backup:create|gitlab:backup:restore|gitlab:check|"
              "gitlab:doctor:secrets|gitlab:env:info [KEY=VALUE...]", file=sys.stderr)  # fmt: skip
        return 1
    actions = {
        "gitlab:backup:create": lambda: create(opts), "gitlab:backup:restore": lambda: restore(opts),
        "gitlab:check": lambda: check(opts), "gitlab:doctor:secrets": lambda: doctor_secrets(opts),
        "gitlab:env:info": env_info,
    }  # fmt: skip
    if tasks[0] not in actions:
        print(f"rake aborted!\nDon't know how to build task '{tasks[0]}' (the stand-in has {', '.join(actions)})",
              file=sys.stderr)  # fmt: skip
        return 1
    return actions[tasks[0]]()


def main() -> int:
    name = Path(sys.argv[0]).name
    if name == "gitlab-rake":
        return rake(sys.argv[1:])
    if len(sys.argv) < 2 or sys.argv[1] not in ("create", "restore"):
        print("Usage: gitlab-backup create|restore [OPTIONS]", file=sys.stderr)
        return 1
    return create(options(sys.argv[2:])) if sys.argv[1] == "create" else restore(options(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
