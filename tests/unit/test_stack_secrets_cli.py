"""tools.stack.secrets as a command: encrypt, check and init on stack files, under a
passphrase from the environment; no plaintext in what it prints."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.stack_keys import PASSPHRASE, flip
from tools.stack.secrets import NO_PASSPHRASE, decrypt, encrypt, main

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process command runs under PASSPHRASE, from the environment only."""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)


def _run_cli(args: list[str], passphrase: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "tools.stack.secrets", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_cli_encrypt_then_check(tmp_path: Path, stack_key: bytes, encryption_salt: str) -> None:
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(f"encryptionsalt: {encryption_salt}\nconfig:\n  forgeway:domain: example.org\n")
    plaintext = "glrt-runner-token-value"

    encrypted = _run_cli(["encrypt", str(stack)], PASSPHRASE, stdin=plaintext + "\n")
    assert encrypted.returncode == 0, encrypted.stderr
    ciphertext = encrypted.stdout.strip()
    assert decrypt(stack_key, ciphertext) == plaintext  # the one trailing newline was not encrypted

    with stack.open("a") as f:
        f.write(f"  forgeway:runner_tokens:\n    arm-runner:\n      secure: {ciphertext}\n")
    checked = _run_cli(["check", str(stack)], PASSPHRASE)
    assert checked.returncode == 0, checked.stderr
    assert "forgeway:runner_tokens.arm-runner" in checked.stdout
    assert "1 secure values decrypt with this passphrase" in checked.stdout
    assert plaintext not in checked.stdout + checked.stderr

    wrong = _run_cli(["check", str(stack)], "not the passphrase")
    assert wrong.returncode == 1
    assert "incorrect passphrase" in wrong.stderr


@pytest.mark.usefixtures("passphrase")
def test_cli_check_names_failing_paths_only(
    tmp_path: Path, stack_key: bytes, encryption_salt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = encrypt(stack_key, "good-plaintext")
    tampered = flip(encrypt(stack_key, "tampered-plaintext"), 2, 0)
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(
        f"encryptionsalt: {encryption_salt}\n"
        "config:\n"
        f"  forgeway:x:\n    - secure: {good}\n    - secure: {tampered}\n"
        "  forgeway:pasted:\n    secure: hunter2\n"
    )

    assert main(["check", str(stack)]) == 1

    out, err = capsys.readouterr()
    assert "ok   forgeway:x[0]" in out
    assert "FAIL forgeway:x[1]" in err
    assert "FAIL forgeway:pasted" in err
    assert "2 of 3 secure values do not decrypt" in err
    for secret in ("good-plaintext", "tampered-plaintext", "hunter2"):
        assert secret not in out + err


@pytest.mark.usefixtures("passphrase")
def test_cli_encrypt_strips_only_one_newline(
    tmp_path: Path,
    stack_key: bytes,
    encryption_salt: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(f"encryptionsalt: {encryption_salt}\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"line one\n\n")))

    assert main(["encrypt", str(stack)]) == 0

    assert decrypt(stack_key, capsys.readouterr().out.strip()) == "line one\n"


@pytest.mark.usefixtures("passphrase")
def test_cli_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    # A missing file is created with a salt and an empty config.
    fresh = tmp_path / "Pulumi.fresh.yaml"
    assert main(["init", str(fresh)]) == 0
    doc = yaml.safe_load(fresh.read_text())
    assert set(doc) == {"encryptionsalt", "config"}
    assert doc["config"] == {}
    version, salt_b64, check = doc["encryptionsalt"].split(":", 2)
    assert (version, len(base64.b64decode(salt_b64)), check.count(":")) == ("v1", 8, 2)

    # A second init would orphan every secret encrypted under the first salt.
    before = fresh.read_text()
    assert main(["init", str(fresh)]) == 1
    assert "already has an encryptionsalt" in capsys.readouterr().err
    assert fresh.read_text() == before

    # An existing file keeps its text, comments included; the salt goes on top.
    original = "# the prod stack\nconfig:\n  forgeway:domain: example.org  # public name\n"
    existing = tmp_path / "Pulumi.existing.yaml"
    existing.write_text(original)
    assert main(["init", str(existing)]) == 0
    text = existing.read_text()
    assert text.startswith("encryptionsalt: v1:")
    assert text.endswith(original)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config:\n  forgeway:a:\n    secure: v1:AAAA:AAAA\n", "has secure values but no encryptionsalt"),
        ("encryptedkey: abc\nsecretsprovider: awskms://alias/x\n", "another secrets provider"),
        ("---\nconfig: {}\n", "cannot add encryptionsalt safely"),
    ],
)
@pytest.mark.usefixtures("passphrase")
def test_cli_init_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(text)
    assert main(["init", str(stack)]) == 1
    assert message in capsys.readouterr().err
    assert stack.read_text() == text


def test_cli_needs_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    stack = tmp_path / "Pulumi.test.yaml"
    assert main(["init", str(stack)]) == 1
    assert NO_PASSPHRASE in capsys.readouterr().err
    assert not stack.exists()
