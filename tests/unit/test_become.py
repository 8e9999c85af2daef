"""components/scripts become_command: what every remote command runs as, with sudo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.scripts import _DIR, HOST_ENV, become_command

PROBE = """printf '%s|%s|%s|' "$(id -u)" "${FORGEWAY_ETC-unset}" "${DOCKER_HOST-unset}"; cat"""


def test_every_variable_the_host_scripts_read_is_handed_through_sudo() -> None:
    read = {m for path in _DIR.glob("*.sh") for m in re.findall(r"\bFORGEWAY_[A-Z_]+\b", path.read_text())}
    assert read, "no FORGEWAY_* variable found: the pattern is wrong"
    assert read | {"DOCKER_HOST"} <= set(HOST_ENV), sorted(read - set(HOST_ENV))


def test_none_runs_the_command_as_it_is() -> None:
    assert become_command("echo hi", "none", "refused") == "echo hi"
    with pytest.raises(ValueError, match="expected sudo or none"):
        become_command("echo hi", "doas")


@pytest.mark.skipif(shutil.which("sudo") is None or os.geteuid() != 0, reason="needs sudo, as root")
def test_sudo_keeps_set_variables_leaves_unset_ones_unset_and_passes_stdin() -> None:
    command = become_command(PROBE, "sudo", "refused")
    env = {"PATH": os.environ["PATH"], "FORGEWAY_ETC": "/srv/a b/'q'$x"}
    done = subprocess.run(
        ["sh", "-c", command], input="from stdin", capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0|/srv/a b/'q'$x|unset|from stdin"


def test_a_refused_sudo_prints_the_message_and_runs_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "sudo"
    fake.write_text('#!/bin/sh\n[ "$*" = "-n true" ] && exit 1\necho ran >&2\nexit 0\n')
    fake.chmod(0o755)
    command = become_command("echo changed", "sudo", "host 'vps': user 'admin' cannot ...")
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "host 'vps': user 'admin' cannot ...\n"
