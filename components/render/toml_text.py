"""TOML basic strings for the rendered TOML files (pure)."""

from __future__ import annotations

import json

__all__ = ["toml_str"]


def toml_str(value: str) -> str:
    """``value`` as a TOML basic string: JSON's escaping is TOML's, but for DEL (escaped
    here) and lone surrogates (refused), so no value can end its string."""
    text = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("a lone surrogate cannot be written to TOML")
    return text
