"""Test data for tools.stack.secrets: the passphrase and fixed salt the tests derive their one
key from (tests/unit/conftest.py: ``stack_key``, ``encryption_salt``), and a bit-flipper."""

from __future__ import annotations

import base64

PASSPHRASE = "correct horse battery staple"  # noqa: S105 - test data
SALT = bytes(range(8))


def flip(ciphertext: str, part: int, index: int) -> str:
    """The value with one bit of one decoded byte changed."""
    parts = ciphertext.split(":")
    raw = bytearray(base64.b64decode(parts[part]))
    raw[index] ^= 0x01
    parts[part] = base64.b64encode(bytes(raw)).decode()
    return ":".join(parts)
