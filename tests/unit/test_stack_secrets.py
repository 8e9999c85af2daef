"""tools.stack.secrets against the Pulumi passphrase provider's format and real Pulumi data.

PBKDF2 at 1e6 iterations costs ~0.4 s a run, so the module derives its main key once
(a fixed salt) and builds stack files around that key; only tests about deriving keys
derive their own.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tools.stack.secrets import (
    NO_PASSPHRASE,
    decrypt,
    derive_key,
    encrypt,
    key_from_encryption_salt,
    main,
    new_encryption_salt,
    read_passphrase,
    secure_values,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"  # noqa: S105 - test data
SALT = bytes(range(8))

# -- vectors from pulumi/pulumi (snapshot 1b5949891b3cefcb9974752b24a5ecef0acc86c8) ----------
# Output of Pulumi's own Go implementation, so these check us against the CLI, not against
# ourselves. More salts with known passphrases sit in pkg/backend/diy/backend_test.go
# ("abc123", "123abc") and tests/smoke/smoke_test.go ("correct horse battery staple");
# two are enough to pin the scheme without slowing the file down.

# pkg/secrets/passphrase/manager_test.go, `state`: unlocks with "password"
# (TestPassphraseManagerCorrectPassphraseReturnsSecretsManager) and not with "password123"
# (TestPassphraseManagerIncorrectPassphraseReturnsErrorCrypter).
PULUMI_MANAGER_SALT = "v1:fozI5u6B030=:v1:F+6ZduKKd8G0/V7L:PGMFeIzwobWRKmEAzUdaQHqC5mMRIQ=="

# tests/roundtrip/roundtrip_test.go, TestConfigRoundtripComments: a Pulumi.test.yaml the
# real `pulumi config set` then edits with PULUMI_CONFIG_PASSPHRASE=TestConfigRoundtripComments
# (comments trimmed here). The test never states foo:d's plaintext; "secret-value" is what it
# decrypts to, and GCM's tag makes any successful decryption the authentic one.
PULUMI_ROUNDTRIP_PASSPHRASE = "TestConfigRoundtripComments"  # noqa: S105 - published test data
PULUMI_ROUNDTRIP_STACK = """\
encryptionsalt: v1:ThS5UPxP9qc=:v1:UZYAXF+ylaJ0rGhv:9OTvBnOEDFgxs7btjzSu+LZ470vLpg==
# header comment
config:
  foo:a: some-value # comment after value
  foo:b: some-value
  foo:c:
    a: A
    b: B
    c:
      - 1
      - 2
      - 3
  foo:d:
    secure: v1:T1ftqhY0hqr+EJK6:+jvd5PMecFx80tcavzuZY4tLatgIfoe/xR72GA== # comment on secret
"""
PULUMI_ROUNDTRIP_CIPHERTEXT = "v1:T1ftqhY0hqr+EJK6:+jvd5PMecFx80tcavzuZY4tLatgIfoe/xR72GA=="


@pytest.fixture(scope="module")
def key() -> bytes:
    """The module's one PBKDF2 run."""
    return derive_key(PASSPHRASE, SALT)


@pytest.fixture(scope="module")
def encryption_salt(key: bytes) -> str:
    """An encryptionsalt for `key`, so stack files in these tests need no further PBKDF2 here."""
    return f"v1:{base64.b64encode(SALT).decode()}:{encrypt(key, 'pulumi')}"


def _flip(ciphertext: str, part: int, index: int) -> str:
    """The value with one bit of one decoded byte changed."""
    parts = ciphertext.split(":")
    raw = bytearray(base64.b64decode(parts[part]))
    raw[index] ^= 0x01
    parts[part] = base64.b64encode(bytes(raw)).decode()
    return ":".join(parts)


# -- the cipher ----------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", ["s3cr3t", "", "ünïcødé ✓", "a:b:c\n", "x" * 10_000])
def test_round_trip(key: bytes, plaintext: str) -> None:
    assert decrypt(key, encrypt(key, plaintext)) == plaintext


def test_ciphertext_format(key: bytes) -> None:
    """v1, a 12-byte nonce, and the 16-byte tag appended to the ciphertext, no AAD."""
    parts = encrypt(key, "hello").split(":")
    assert len(parts) == 3
    assert parts[0] == "v1"
    nonce = base64.b64decode(parts[1], validate=True)
    sealed = base64.b64decode(parts[2], validate=True)
    assert len(nonce) == 12
    assert len(sealed) == len("hello") + 16
    # Opened by the library directly, so the layout is checked, not just our decrypt's view of it.
    assert AESGCM(key).decrypt(nonce, sealed, None) == b"hello"


def test_two_encryptions_differ(key: bytes) -> None:
    first, second = encrypt(key, "same"), encrypt(key, "same")
    assert first != second
    assert first.split(":")[1] != second.split(":")[1]  # a fresh nonce, not just a different tail
    assert decrypt(key, first) == decrypt(key, second) == "same"


@pytest.mark.parametrize(
    ("part", "index"),
    [(2, 0), (2, -1), (1, 0)],
    ids=["ciphertext byte", "tag byte", "nonce byte"],
)
def test_tampered_ciphertext_refused(key: bytes, part: int, index: int) -> None:
    tampered = _flip(encrypt(key, "s3cr3t"), part, index)
    with pytest.raises(ValueError, match="does not decrypt") as err:
        decrypt(key, tampered)
    assert "s3cr3t" not in str(err.value)


def test_wrong_key_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt(bytes(32), encrypt(key, "s3cr3t"))


NONCE_B64 = base64.b64encode(bytes(12)).decode()


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",  # a plaintext pasted where a secure value belongs
        "v1:hunter2",
        "v1:hunter2:hunter2:hunter2",
        "hunter2:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "v1:hunter2:AAAAAAAAAAAAAAAAAAAAAA==",
        f"v1:{NONCE_B64}:hunter2!",
        f"v1:{base64.b64encode(bytes(8)).decode()}:AAAAAAAAAAAAAAAAAAAAAA==",  # 8-byte nonce
        f"v1:{NONCE_B64}:{base64.b64encode(b'hunter2').decode()}",  # shorter than a tag
    ],
)
def test_malformed_ciphertext_refused_without_echo(key: bytes, value: str) -> None:
    with pytest.raises(ValueError, match="malformed ciphertext") as err:
        decrypt(key, value)
    assert "hunter2" not in str(err.value)


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt(bytes(16), "s3cr3t")


# -- encryptionsalt ----------------------------------------------------------------


def test_pulumi_salt_unlocks_with_its_passphrase() -> None:
    key = key_from_encryption_salt("password", PULUMI_MANAGER_SALT)
    assert len(key) == 32
    assert decrypt(key, PULUMI_MANAGER_SALT.split(":", 2)[2]) == "pulumi"


def test_pulumi_salt_refuses_wrong_passphrase() -> None:
    with pytest.raises(ValueError, match=r"^incorrect passphrase$"):
        key_from_encryption_salt("password123", PULUMI_MANAGER_SALT)


def test_pulumi_stack_file_secret_decrypts() -> None:
    doc = yaml.safe_load(PULUMI_ROUNDTRIP_STACK)
    assert secure_values(doc) == [("foo:d", PULUMI_ROUNDTRIP_CIPHERTEXT)]
    key = key_from_encryption_salt(PULUMI_ROUNDTRIP_PASSPHRASE, doc["encryptionsalt"])
    assert decrypt(key, PULUMI_ROUNDTRIP_CIPHERTEXT) == "secret-value"


def test_new_encryption_salt_round_trips() -> None:
    line, key = new_encryption_salt("a new passphrase")
    version, salt_b64, check = line.split(":", 2)
    assert version == "v1"
    assert len(base64.b64decode(salt_b64, validate=True)) == 8
    assert decrypt(key, check) == "pulumi"
    assert key_from_encryption_salt("a new passphrase", line) == key
    with pytest.raises(ValueError, match=r"^incorrect passphrase$"):
        key_from_encryption_salt("A new passphrase", line)


@pytest.mark.parametrize(
    "value",
    ["SALT_PLACEHOLDER", "v1:fozI5u6B030=", "v2:fozI5u6B030=:v1:F+6ZduKKd8G0/V7L:AAAA", "v1:!!:v1:AAAA:AAAA"],
)
def test_malformed_encryption_salt_refused(value: str) -> None:
    with pytest.raises(ValueError, match="malformed encryptionsalt"):
        key_from_encryption_salt("password", value)


# -- passphrase lookup ----------------------------------------------------------------


def test_passphrase_from_env_wins_even_when_empty(tmp_path: Path) -> None:
    phrase_file = tmp_path / "phrase"
    phrase_file.write_text("from the file\n")
    assert read_passphrase({"PULUMI_CONFIG_PASSPHRASE": "from env"}) == "from env"
    assert read_passphrase({"PULUMI_CONFIG_PASSPHRASE": "", "PULUMI_CONFIG_PASSPHRASE_FILE": str(phrase_file)}) == ""


def test_passphrase_file_is_trimmed(tmp_path: Path) -> None:
    phrase_file = tmp_path / "phrase"
    phrase_file.write_text("  two words \n")
    assert read_passphrase({"PULUMI_CONFIG_PASSPHRASE_FILE": str(phrase_file)}) == "two words"


@pytest.mark.parametrize("environ", [{}, {"PULUMI_CONFIG_PASSPHRASE_FILE": ""}, {"PULUMI_CONFIG_PASS": "x"}])
def test_no_passphrase_is_an_error(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError) as err:
        read_passphrase(environ)
    assert str(err.value) == NO_PASSPHRASE
    assert str(err.value).startswith(
        "passphrase must be set with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE"
    )


def test_unreadable_passphrase_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unable to read PULUMI_CONFIG_PASSPHRASE_FILE"):
        read_passphrase({"PULUMI_CONFIG_PASSPHRASE_FILE": str(tmp_path / "missing")})


# -- walking the stack file --------------------------------------------------------


def test_secure_values_finds_nested_values() -> None:
    doc = yaml.safe_load(
        """
encryptionsalt: v1:xx
config:
  forgeway:domain: example.org
  forgeway:top:
    secure: v1:top
  forgeway:runner_tokens:
    arm-runner:
      secure: v1:arm
    x86:
      secure: v1:x86
  forgeway:x:
    - secure: v1:x0
    - plain
    - - secure: v1:deep
  forgeway:hosts:
    - name: vps
      login: {password: {secure: v1:pw}}
  forgeway:two_keys: {secure: v1:no, other: 1}   # an ordinary map to the CLI
  forgeway:not_string: {secure: 5}               # likewise
  forgeway:dotted: {a.b: {secure: v1:dotted}}
"""
    )
    assert secure_values(doc) == [
        ("forgeway:top", "v1:top"),
        ("forgeway:runner_tokens.arm-runner", "v1:arm"),
        ("forgeway:runner_tokens.x86", "v1:x86"),
        ("forgeway:x[0]", "v1:x0"),
        ("forgeway:x[2][0]", "v1:deep"),
        ("forgeway:hosts[0].login.password", "v1:pw"),
        ('forgeway:dotted["a.b"]', "v1:dotted"),
    ]


@pytest.mark.parametrize("doc", [{}, {"config": None}, {"config": {}}, {"config": {"forgeway:a": "b"}}])
def test_secure_values_of_a_stack_without_secrets(doc: dict[str, object]) -> None:
    assert secure_values(doc) == []


# -- command line ----------------------------------------------------------------------


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


def test_cli_encrypt_then_check(tmp_path: Path, key: bytes, encryption_salt: str) -> None:
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(f"encryptionsalt: {encryption_salt}\nconfig:\n  forgeway:domain: example.org\n")
    plaintext = "glrt-runner-token-value"

    encrypted = _run_cli(["encrypt", str(stack)], PASSPHRASE, stdin=plaintext + "\n")
    assert encrypted.returncode == 0, encrypted.stderr
    ciphertext = encrypted.stdout.strip()
    assert decrypt(key, ciphertext) == plaintext  # the one trailing newline was not encrypted

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


def test_cli_check_names_failing_paths_only(
    tmp_path: Path,
    key: bytes,
    encryption_salt: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = encrypt(key, "good-plaintext")
    tampered = _flip(encrypt(key, "tampered-plaintext"), 2, 0)
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(
        f"encryptionsalt: {encryption_salt}\n"
        "config:\n"
        f"  forgeway:x:\n    - secure: {good}\n    - secure: {tampered}\n"
        "  forgeway:pasted:\n    secure: hunter2\n"
    )
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)

    assert main(["check", str(stack)]) == 1

    out, err = capsys.readouterr()
    assert "ok   forgeway:x[0]" in out
    assert "FAIL forgeway:x[1]" in err
    assert "FAIL forgeway:pasted" in err
    assert "2 of 3 secure values do not decrypt" in err
    for secret in ("good-plaintext", "tampered-plaintext", "hunter2"):
        assert secret not in out + err


def test_cli_encrypt_strips_only_one_newline(
    tmp_path: Path,
    key: bytes,
    encryption_salt: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = tmp_path / "Pulumi.test.yaml"
    stack.write_text(f"encryptionsalt: {encryption_salt}\n")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"line one\n\n")))

    assert main(["encrypt", str(stack)]) == 0

    assert decrypt(key, capsys.readouterr().out.strip()) == "line one\n"


def test_cli_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)

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
def test_cli_init_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
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
