"""Fixtures shared by the unit test modules."""

from __future__ import annotations

import base64

import pytest

from tests.stacks import prod_stack
from tests.unit.config_patches import Config
from tests.unit.stack_keys import PASSPHRASE, SALT
from tools.stack.secrets import derive_key, encrypt


@pytest.fixture(scope="session")
def prod() -> tuple[Config, list[str]]:
    """The prod stack, decrypted once (PBKDF2 is slow); tests patch deep copies."""
    return prod_stack()


@pytest.fixture(scope="session")
def stack_key() -> bytes:
    """The one PBKDF2 run of the stack secrets tests (~0.4 s), from PASSPHRASE and SALT."""
    return derive_key(PASSPHRASE, SALT)


@pytest.fixture(scope="session")
def encryption_salt(stack_key: bytes) -> str:
    """An encryptionsalt for ``stack_key``, so stack files in tests need no further PBKDF2."""
    return f"v1:{base64.b64encode(SALT).decode()}:{encrypt(stack_key, 'pulumi')}"
