#!/usr/bin/python3
"""Entrypoint (PID 1, root) of forgeway-lab/gitea-standin, as the gitea/gitea image's s6 start does.

* every ``GITEA__section__KEY`` into /data/gitea/conf/app.ini (environment-to-ini), then the
  settings checked (gitea_db.settings): a bad one stops the container naming it;
* user ``git`` (``USER_UID``/``USER_GID``, default 1000) with home /data/git, owner of /data's
  gitea and git trees;
* OpenSSH on ``SSH_LISTEN_PORT`` (the image's variable; else ``[server] SSH_LISTEN_PORT``; else 22),
  keys only, user git, host keys /data/ssh/ssh_host_{rsa,ecdsa,ed25519}_key made on first start
  only and kept in the volume; authorized_keys written by ``gitea web`` (``gitea serv`` forced);
* Debian's docker-registry on 127.0.0.1:5000, its storage /data/gitea/packages/registry, behind
  ``gitea web``'s token check (gitea_web.py);
* ``gitea web`` as user git.

Supervised by the GitLab stand-in's supervisor (wrapper.py): each service's output on stdout
prefixed with its name; one exiting stops the container (1); SIGTERM stops it (0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.lab.standin_image.gitea_standin.gitea_db import GiteaError, settings, write_app_ini
    from tools.lab.standin_image.wrapper import RUN_DIR, Service, Supervisor, log
else:  # beside this file in the repository, and in the image's /usr/local/bin (wrapper.py: the GitLab stand-in's)
    sys.path[:0] = [str(Path(__file__).resolve().parent), "/usr/local/bin"]
    from gitea_db import GiteaError, settings, write_app_ini
    from wrapper import RUN_DIR, Service, Supervisor, log

DATA = Path("/data")
SSH_DIR = DATA / "ssh"
REGISTRY_ADDR = "127.0.0.1:5000"
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env={"PATH": PATH}, timeout=120)
    if done.returncode != 0:
        raise GiteaError(f"{' '.join(argv)} failed ({done.returncode}): {(done.stdout + done.stderr).strip()[-1000:]}")


def git_user(uid: str, gid: str) -> None:
    if subprocess.run(["id", "git"], capture_output=True, check=False).returncode != 0:
        _run("groupadd", "-g", gid, "git")
        _run("useradd", "-u", uid, "-g", gid, "-d", str(DATA / "git"), "-M", "-s", "/bin/sh", "git")
        _run("usermod", "-p", "*", "git")  # no password, but not locked: sshd lets a locked account in by no key


def host_keys() -> list[Path]:
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    keys = []
    for kind in SSH_KEY_TYPES:
        key = SSH_DIR / f"ssh_host_{kind}_key"
        if not key.is_file():
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            _run("ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(key))
            log(f"made ssh host key {key}")
        key.chmod(0o600)
        keys.append(key)
    return keys


def sshd_config(port: int, keys: list[Path]) -> str:
    return "\n".join([
        f"Port {port}", *(f"HostKey {k}" for k in keys), "PermitRootLogin no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no", "AllowUsers git",
        "AuthorizedKeysFile .ssh/authorized_keys", "AcceptEnv GIT_PROTOCOL", "PrintMotd no", "UseDNS no",
        "LogLevel VERBOSE", f"PidFile {RUN_DIR}/sshd.pid",
    ]) + "\n"  # fmt: skip


def registry_config(storage: Path) -> str:
    return (
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY_ADDR}\n  secret: {os.urandom(24).hex()}\n  relativeurls: true\n"
    )


def prepare(environ: dict[str, str]) -> list[Service]:
    environ.setdefault("GITEA_CUSTOM", str(DATA / "gitea"))
    write_app_ini(environ)
    s = settings(environ)
    if not s.install_lock:
        log("WARNING: [security] INSTALL_LOCK is not true: Gitea would show its install page; the API is not served")
    git_user(environ.get("USER_UID", "1000"), environ.get("USER_GID", "1000"))
    for directory in (DATA / "git" / ".ssh", s.repo_root, s.packages / "registry", RUN_DIR, Path("/run/sshd")):
        directory.mkdir(parents=True, exist_ok=True)
    _run("chown", "-R", "git:git", str(DATA / "gitea"), str(DATA / "git"), str(s.repo_root))
    (DATA / "git" / ".ssh").chmod(0o700)
    keys = host_keys()
    port = int(environ.get("SSH_LISTEN_PORT") or s.ssh_listen_port)
    (RUN_DIR / "sshd_config").write_text(sshd_config(port, keys))
    _run("/usr/sbin/sshd", "-t", "-f", str(RUN_DIR / "sshd_config"))
    registry = RUN_DIR / "registry.yml"
    registry.write_text(registry_config(s.packages / "registry"))
    registry.chmod(0o600)
    web = ["setpriv", "--reuid=git", "--regid=git", "--init-groups", "env", "HOME=/data/git", "USER=git",
           f"GITEA_CUSTOM={environ['GITEA_CUSTOM']}", "/usr/local/bin/gitea", "web"]  # fmt: skip
    log(f"forgeway-gitea-standin: ROOT_URL {s.root_url}, web {s.protocol} on {s.http_port}, ssh on {port}")
    return [
        Service("registry", ["docker-registry", "serve", str(registry)], None),
        Service("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(RUN_DIR / "sshd_config")], None),
        Service("gitea", web, None),
    ]


def main() -> int:
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    try:
        services = prepare(dict(os.environ))
    except (GiteaError, OSError, ValueError) as err:
        log(f"FATAL: {err}")
        return 1
    for service in services:
        supervisor.start(service)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
