"""Read a Pulumi.<stack>.yaml as the Pulumi CLI would hand it to the program.

Secure values are decrypted with the passphrase scheme (tools.stack.secrets); a
top-level key that holds any secure value is reported secret, as the CLI does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tools.stack.secrets import decrypt, key_from_encryption_salt

__all__ = ["load_stack_file"]


def _decrypt_tree(value: Any, key: bytes | None) -> tuple[Any, bool]:
    if isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str):
        if key is None:
            raise ValueError("the stack file has secure values but no encryptionsalt")
        return decrypt(key, value["secure"]), True
    if isinstance(value, dict):
        pairs = {k: _decrypt_tree(v, key) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(value, list):
        items = [_decrypt_tree(v, key) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def load_stack_file(path: Path, passphrase: str | None) -> tuple[dict[str, Any], list[str]]:
    """(config with secure values decrypted, the keys that are secret)."""
    doc = yaml.safe_load(path.read_text()) or {}
    salt = doc.get("encryptionsalt")
    key = key_from_encryption_salt(passphrase, salt) if salt and passphrase is not None else None
    config: dict[str, Any] = {}
    secret_keys: list[str] = []
    for name, value in (doc.get("config") or {}).items():
        plain, secret = _decrypt_tree(value, key)
        config[name] = plain
        if secret:
            secret_keys.append(name)
    return config, secret_keys
