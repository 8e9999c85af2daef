"""The deployer's login users on this machine and their sudo rights, as `make lab` makes and removes them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tools.lab.layout import LAB_DIR, LAB_USER_COMMENT, LAB_USERS, SUDOERS_DIR
from tools.lab.network import DEPLOYER


def keygen(path: Path) -> str:
    DEPLOYER.succeed(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)])
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def sudoers_line(user: str) -> str:
    """What a host needs for hosts[].become sudo (README, "Deploy for real")."""
    return f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def grant_sudo(user: str) -> None:
    """The user's sudoers drop-in (checked by visudo before it is put in place)."""
    target = SUDOERS_DIR / user
    tmp = SUDOERS_DIR / f".{user}.new"  # sudo skips names with a dot
    tmp.write_text(sudoers_line(user))
    tmp.chmod(0o440)
    check = DEPLOYER.execute(["visudo", "-cqf", str(tmp)])
    if check.returncode != 0:
        tmp.unlink()
        raise RuntimeError(f"visudo refuses the lab's sudoers line for {user}: {check.stdout}{check.stderr}")
    tmp.replace(target)


def revoke_sudo(user: str) -> None:
    (SUDOERS_DIR / user).unlink(missing_ok=True)


def _lab_user_exists(user: str) -> bool:
    found = DEPLOYER.execute(["getent", "passwd", user])
    if found.returncode != 0:
        return False
    if found.stdout.split(":")[4] != LAB_USER_COMMENT:
        raise RuntimeError(f"user {user} exists on this machine and is not the lab's: remove or rename it first")
    return True


def create_lab_users() -> None:
    """The deployer's non-root users, their sudo right and groups (idempotent)."""
    if not shutil.which("sudo") or not shutil.which("visudo", path="/usr/sbin:/usr/bin"):
        raise RuntimeError("sudo is not installed: apt-get install -y sudo (tools/ci/apt-packages.txt)")
    for ancestor in [*reversed(LAB_DIR.parents)][1:]:
        if ancestor.stat().st_mode & 0o001 == 0:
            raise RuntimeError(
                f"{ancestor} is not searchable by other users (mode {ancestor.stat().st_mode & 0o777:o}): the lab's "
                f"non-root deployer users must reach {LAB_DIR}: make its parents searchable (chmod o+x)"
            )
    for user, groups in LAB_USERS.items():
        if not _lab_user_exists(user):
            extra = ["--groups", ",".join(groups)] if groups else []
            # Password '*': no password login, and not "locked" (sshd without PAM refuses "!").
            DEPLOYER.succeed(["useradd", "--create-home", "--shell", "/bin/sh", "--comment", LAB_USER_COMMENT,
                              "--password", "*", *extra, user])  # fmt: skip
        grant_sudo(user)


def remove_lab_users(errors: list[str]) -> None:
    for user in LAB_USERS:
        revoke_sudo(user)
        try:
            # The sshds were just sent SIGTERM: their sessions may take a moment to end,
            # and userdel refuses a user that still has processes.
            deadline = time.monotonic() + 10
            while _lab_user_exists(user):
                done = DEPLOYER.execute(["userdel", "--remove", user])
                if done.returncode not in (0, 12) and time.monotonic() > deadline:  # 12: no home (gone)
                    errors.append(f"user {user} could not be removed: {done.stderr.strip()}")
                    break
                time.sleep(0.2)
        except RuntimeError as exc:
            errors.append(str(exc))
