"""tools.stack.secrets against the Pulumi passphrase provider's format and real Pulumi data.

PBKDF2 at 1e6 iterations costs ~0.4 s a run, so the tests share one key derived from a
fixed salt (the ``stack_key`` fixture) and build stack files around it; only tests about
deriving keys derive their own. The command line is tested in test_stack_secrets_cli.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.unit.stack_keys import flip
from tools.stack.secrets import (
    NO_PASSPHRASE,
    decrypt,
    encrypt,
    key_from_encryption_salt,
    new_encryption_salt,
    read_passphrase,
    secure_values,
)

pytestmark = pytest.mark.unit


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


# -- the cipher ----------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", ["s3cr3t", "", "ünïcødé ✓", "a:b:c\n", "x" * 10_000])
def test_round_trip(stack_key: bytes, plaintext: str) -> None:
    assert decrypt(stack_key, encrypt(stack_key, plaintext)) == plaintext


def test_ciphertext_format(stack_key: bytes) -> None:
    """v1, a 12-byte nonce, and the 16-byte tag appended to the ciphertext, no AAD."""
    parts = encrypt(stack_key, "hello").split(":")
    assert len(parts) == 3
    assert parts[0] == "v1"
    nonce = base64.b64decode(parts[1], validate=True)
    sealed = base64.b64decode(parts[2], validate=True)
    assert len(nonce) == 12
    assert len(sealed) == len("hello") + 16
    # Opened by the library directly, so the layout is checked, not just our decrypt's view of it.
    assert AESGCM(stack_key).decrypt(nonce, sealed, None) == b"hello"


def test_two_encryptions_differ(stack_key: bytes) -> None:
    first, second = encrypt(stack_key, "same"), encrypt(stack_key, "same")
    assert first != second
    assert first.split(":")[1] != second.split(":")[1]  # a fresh nonce, not just a different tail
    assert decrypt(stack_key, first) == decrypt(stack_key, second) == "same"


@pytest.mark.parametrize(
    ("part", "index"),
    [(2, 0), (2, -1), (1, 0)],
    ids=["ciphertext byte", "tag byte", "nonce byte"],
)
def test_tampered_ciphertext_refused(stack_key: bytes, part: int, index: int) -> None:
    tampered = flip(encrypt(stack_key, "s3cr3t"), part, index)
    with pytest.raises(ValueError, match="does not decrypt") as err:
        decrypt(stack_key, tampered)
    assert "s3cr3t" not in str(err.value)


def test_wrong_key_refused(stack_key: bytes) -> None:
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt(bytes(32), encrypt(stack_key, "s3cr3t"))


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
def test_malformed_ciphertext_refused_without_echo(stack_key: bytes, value: str) -> None:
    with pytest.raises(ValueError, match="malformed ciphertext") as err:
        decrypt(stack_key, value)
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
