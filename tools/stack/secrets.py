"""``secure:`` values of Pulumi's passphrase secrets provider, without the Pulumi CLI.

There is no Pulumi CLI (and no network) where forgeway's stack files are written and
reviewed, yet ``Pulumi.<stack>.yaml`` must hold values the CLI will decrypt later. This
module speaks the same scheme as the CLI's passphrase provider (pulumi/pulumi
``pkg/secrets/passphrase/manager.go`` and ``sdk/go/common/resource/config/crypt.go``):

* key: PBKDF2-HMAC-SHA256(passphrase, salt, 1,000,000 iterations, 32 bytes), 8-byte salt;
* value: ``v1:<base64 12-byte nonce>:<base64 AES-256-GCM ciphertext + 16-byte tag>``, no AAD;
* ``encryptionsalt:`` ``v1:<base64 salt>:`` + a value holding ``pulumi``, so a wrong
  passphrase is caught before any secret is touched.

Command line (the passphrase comes only from the environment, never from argv)::

    python -m tools.stack.secrets init Pulumi.prod.yaml
    printf %s "$TOKEN" | python -m tools.stack.secrets encrypt Pulumi.prod.yaml
    python -m tools.stack.secrets check Pulumi.prod.yaml
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

__all__ = [
    "decrypt",
    "derive_key",
    "encrypt",
    "key_from_encryption_salt",
    "main",
    "new_encryption_salt",
    "read_passphrase",
    "secure_values",
]

VERSION = "v1"
PBKDF2_ITERATIONS = 1_000_000
KEY_BYTES = 32  # AES-256
SALT_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
CHECK_PLAINTEXT = "pulumi"  # what the CLI encrypts into encryptionsalt and expects back

# Names and messages, not passphrases (S105 matches on the word).
PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"  # noqa: S105
PASSPHRASE_FILE_ENV = "PULUMI_CONFIG_PASSPHRASE_FILE"  # noqa: S105
# The CLI's own wording (readPassphrase in manager.go), so searches for it find both.
NO_PASSPHRASE = f"passphrase must be set with {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} environment variables"
INCORRECT_PASSPHRASE = "incorrect passphrase"  # noqa: S105


# -- the cipher --------------------------------------------------------------------


def derive_key(passphrase: str, salt: bytes) -> bytes:
    """The AES key for a passphrase and a stack's salt, as the CLI derives it.

    surrogateescape hands back the exact bytes of a non-UTF-8 environment variable,
    which is what Go's ``[]byte(phrase)`` feeds PBKDF2.
    """
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=PBKDF2_ITERATIONS)
    return kdf.derive(passphrase.encode("utf-8", "surrogateescape"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    # validate=True: Go's StdEncoding rejects stray characters too, so a value we accept the CLI accepts.
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"malformed ciphertext: {what} is not standard base64") from None


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes (AES-256), got {len(key)}")


def encrypt(key: bytes, plaintext: str) -> str:
    """A ``v1:<nonce>:<ciphertext>`` value for a ``secure:`` entry.

    A fresh random nonce per call: GCM's secrecy and integrity both fail if a nonce is
    reused under one key, and every secret of a stack shares that key.
    """
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), None)
    return f"{VERSION}:{_b64(nonce)}:{_b64(sealed)}"


def _parse_ciphertext(ciphertext: str) -> tuple[bytes, bytes]:
    """Nonce and sealed bytes of a value, or ValueError.

    The messages never quote the input: a mistyped ``secure:`` may hold a plaintext.
    """
    parts = ciphertext.split(":")
    if len(parts) != 3:
        raise ValueError(f"malformed ciphertext: expected {VERSION}:<nonce>:<ciphertext>")
    version, nonce_b64, sealed_b64 = parts
    if version != VERSION:
        raise ValueError(f"malformed ciphertext: unknown version (only {VERSION} is supported)")
    nonce = _unb64(nonce_b64, "nonce")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"malformed ciphertext: nonce is {len(nonce)} bytes, not {NONCE_BYTES}")
    sealed = _unb64(sealed_b64, "ciphertext")
    if len(sealed) < TAG_BYTES:
        raise ValueError("malformed ciphertext: too short to hold the GCM tag")
    return nonce, sealed


def _open(key: bytes, nonce: bytes, sealed: bytes) -> str:
    _check_key(key)
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, None)
    except InvalidTag:
        # GCM cannot tell a wrong key from a changed byte; both mean "do not trust this".
        raise ValueError("ciphertext does not decrypt with this key (wrong passphrase or altered value)") from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("decrypted value is not UTF-8 text") from None


def decrypt(key: bytes, ciphertext: str) -> str:
    """The plaintext of a ``v1:`` value; ValueError if it is malformed, altered or from another key."""
    nonce, sealed = _parse_ciphertext(ciphertext)
    return _open(key, nonce, sealed)


# -- the stack's encryptionsalt ------------------------------------------------------


def new_encryption_salt(passphrase: str) -> tuple[str, bytes]:
    """A fresh ``encryptionsalt`` value (the text after ``encryptionsalt: ``) and its key.

    The key comes back too so a caller can encrypt straight away without paying for
    PBKDF2 a second time.
    """
    salt = os.urandom(SALT_BYTES)
    key = derive_key(passphrase, salt)
    return f"{VERSION}:{_b64(salt)}:{encrypt(key, CHECK_PLAINTEXT)}", key


def key_from_encryption_salt(passphrase: str, encryptionsalt: str) -> bytes:
    """The stack's key, after checking the passphrase against the salt's ``pulumi`` value.

    Checking first means a wrong passphrase is one clear error, not a failure per secret,
    and ``encrypt`` can never write a value under a key the CLI will not derive.
    """
    parts = encryptionsalt.split(":", 2)
    if len(parts) != 3 or parts[0] != VERSION:
        raise ValueError(f"malformed encryptionsalt: expected {VERSION}:<salt>:{VERSION}:<nonce>:<ciphertext>")
    try:
        salt = base64.b64decode(parts[1], validate=True)
        nonce, sealed = _parse_ciphertext(parts[2])
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"malformed encryptionsalt: {err}") from None
    key = derive_key(passphrase, salt)
    try:
        check = _open(key, nonce, sealed)
    except ValueError:
        raise ValueError(INCORRECT_PASSPHRASE) from None
    if check != CHECK_PLAINTEXT:
        raise ValueError(INCORRECT_PASSPHRASE)
    return key


def read_passphrase(environ: Mapping[str, str]) -> str:
    """The passphrase, looked up as the CLI does when it may not prompt.

    PULUMI_CONFIG_PASSPHRASE wins even when empty (an empty passphrase is valid to the
    CLI); an empty PULUMI_CONFIG_PASSPHRASE_FILE counts as unset, and the file's content
    is whitespace-trimmed so an editor's final newline is not part of the passphrase.
    """
    if PASSPHRASE_ENV in environ:
        return environ[PASSPHRASE_ENV]
    path = environ.get(PASSPHRASE_FILE_ENV, "")
    if path:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ValueError(f"unable to read {PASSPHRASE_FILE_ENV} ({path}): {err.strerror}") from None
        return data.decode("utf-8", "surrogateescape").strip()
    raise ValueError(NO_PASSPHRASE)


# -- the stack file ------------------------------------------------------------------


def _is_secure(value: object) -> TypeGuard[dict[str, str]]:
    # The CLI's rule (isSecureValue in config/object.go): a map with the single key
    # "secure" holding a string; {secure: x, other: y} is an ordinary map.
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str)


def _key_segment(key: object) -> str:
    text = str(key)
    # Keys that would read as path syntax are quoted, so every path names one value.
    if not text or any(c in text for c in '.[]"'):
        return '["' + text.replace('"', '\\"') + '"]'
    return "." + text


def _walk(path: str, value: object, found: list[tuple[str, str]]) -> None:
    if _is_secure(value):
        found.append((path, value["secure"]))
    elif isinstance(value, dict):
        for key, child in value.items():
            _walk(path + _key_segment(key), child, found)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _walk(f"{path}[{index}]", child, found)


def secure_values(stack_doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, ciphertext) of every ``secure:`` value under ``config:``, in file order.

    Secrets sit at any depth (``forgeway:runner_tokens.arm-runner``, ``forgeway:x[0]``),
    and a check that only looked at top-level keys would pass a stack whose nested
    tokens the CLI cannot decrypt.
    """
    config = stack_doc.get("config")
    if config is None:  # `config:` with nothing under it
        return []
    if not isinstance(config, dict):
        raise ValueError("config: is not a mapping")
    found: list[tuple[str, str]] = []
    for key, value in config.items():
        _walk(str(key), value, found)
    return found


def _parse_stack(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("not a YAML mapping")
    return doc


def _load_stack(path: Path) -> dict[str, Any]:
    try:
        return _parse_stack(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None
    except (yaml.YAMLError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def _stack_key(path: Path, doc: Mapping[str, Any], environ: Mapping[str, str]) -> bytes:
    salt = doc.get("encryptionsalt")
    if not isinstance(salt, str) or not salt:
        raise ValueError(f"{path} has no encryptionsalt (run `init` first)")
    passphrase = read_passphrase(environ)
    try:
        return key_from_encryption_salt(passphrase, salt)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


# -- command line --------------------------------------------------------------------


def _cmd_init(path: Path, environ: Mapping[str, str]) -> int:
    """Prepend ``encryptionsalt:`` rather than re-dump the YAML, keeping comments and layout."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        doc = _load_stack(path)
        if "encryptionsalt" in doc:
            raise ValueError(f"{path} already has an encryptionsalt; a new one would orphan its secrets")
        if doc.get("encryptedkey") or doc.get("secretsprovider") not in (None, "", "passphrase"):
            raise ValueError(f"{path} uses another secrets provider")
        if secure_values(doc):
            raise ValueError(f"{path} has secure values but no encryptionsalt; they cannot be recovered")
    else:
        text, doc = "config: {}\n", {"config": {}}
    passphrase = read_passphrase(environ)
    if not passphrase:
        print("warning: the passphrase is empty", file=sys.stderr)
    salt, _key = new_encryption_salt(passphrase)
    new_text = f"encryptionsalt: {salt}\n{text}"
    # Prepending is only safe for a plain single-document mapping (no `---`, no %YAML):
    # read it back and refuse to write anything else.
    try:
        reread = _parse_stack(new_text)
    except (yaml.YAMLError, ValueError) as err:
        raise ValueError(f"{path}: cannot add encryptionsalt safely: {err}") from None
    if reread != {"encryptionsalt": salt, **doc}:
        raise ValueError(f"{path}: cannot add encryptionsalt safely")
    path.write_text(new_text, encoding="utf-8")
    print(f"added encryptionsalt to {path}")
    return 0


def _cmd_encrypt(path: Path, environ: Mapping[str, str]) -> int:
    """Plaintext from stdin only: argv is visible in ps and shell history."""
    key = _stack_key(path, _load_stack(path), environ)
    try:
        plaintext = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("stdin is not UTF-8 text") from None
    # `echo token |` adds one newline that is not part of the secret; strip just that one.
    plaintext = plaintext.removesuffix("\r\n") if plaintext.endswith("\r\n") else plaintext.removesuffix("\n")
    print(encrypt(key, plaintext))
    return 0


def _cmd_check(path: Path, environ: Mapping[str, str]) -> int:
    """Paths only on output: the point is to check a stack, not to reveal it."""
    doc = _load_stack(path)
    values = secure_values(doc)
    key = _stack_key(path, doc, environ)
    failures = 0
    for value_path, ciphertext in values:
        try:
            decrypt(key, ciphertext)
        except ValueError as err:
            failures += 1
            print(f"FAIL {value_path}: {err}", file=sys.stderr)
        else:
            print(f"ok   {value_path}")
    if failures:
        print(f"{failures} of {len(values)} secure values do not decrypt with this passphrase", file=sys.stderr)
        return 1
    print(f"{len(values)} secure values decrypt with this passphrase")
    return 0


_COMMANDS = {"init": _cmd_init, "encrypt": _cmd_encrypt, "check": _cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack.secrets",
        description=(
            "Pulumi passphrase-provider secrets for a stack file, without the Pulumi CLI. "
            f"The passphrase is read from {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="add an encryptionsalt to a stack file that has none").add_argument("stack_file")
    sub.add_parser("encrypt", help="print a secure value for the plaintext on stdin").add_argument("stack_file")
    sub.add_parser("check", help="check every secure value decrypts (prints paths only)").add_argument("stack_file")
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](Path(args.stack_file), os.environ)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
