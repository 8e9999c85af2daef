"""Host scripts: valid shell, shellcheck-clean, and they do what they say."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.scripts import script_command

pytestmark = pytest.mark.unit

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "components" / "scripts").glob("*.sh"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_and_shellcheck_clean(path: Path) -> None:
    subprocess.run(["sh", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: run `make setup` (tools/apt-packages.txt)")
    # -x: follow `. "$dir/host-files.sh"` (its directive names the file beside the script)
    done = subprocess.run([shellcheck, "-x", path.name], cwd=path.parent, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def _run_with_machine(tmp_path: Path, machine: str, expected: str) -> subprocess.CompletedProcess[str]:
    # A fake uname first on PATH stands in for another CPU.
    fake = tmp_path / "uname"
    fake.write_text(f"#!/bin/sh\necho {machine}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", "-c", script_command("check-arch.sh", expected, "jetson")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(("machine", "expected"), [("aarch64", "arm64"), ("x86_64", "amd64")])
def test_check_arch_accepts_the_configured_arch(tmp_path: Path, machine: str, expected: str) -> None:
    done = _run_with_machine(tmp_path, machine, expected)
    assert done.returncode == 0 and done.stdout.splitlines()[0] == expected
    assert re.fullmatch(r"cores [1-9][0-9]*", done.stdout.splitlines()[1]), done.stdout


def test_check_arch_refuses_a_mismatch_naming_host_and_arch(tmp_path: Path) -> None:
    done = _run_with_machine(tmp_path, "armv7l", "arm64")
    assert done.returncode == 1
    assert "host 'jetson' is armv7l" in done.stderr and "arch: arm64" in done.stderr


def test_values_are_quoted_on_the_command_line(tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    done = _run_with_machine(tmp_path, "x86_64", f"arm64; touch {marker}")
    assert done.returncode == 1
    assert not marker.exists()
