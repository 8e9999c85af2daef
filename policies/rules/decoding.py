"""What a resource ships encoded (staged base64 files, gzip, hex, printf escapes,
here-documents), read decoded as a host would decode it."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator

# --- decoding what a resource ships encoded -----------------------------------------
#
# components/scripts staged_command ships files as base64 arguments on the command line
# (stage.sh decodes them on the host), and a user can do the same by hand: `echo BLOB |
# base64 -d`, gzip inside base64, hex for `xxd -r -p`, printf escapes. What a host would
# decode, the policies read decoded too.

_B64_BLOB = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_BLOB = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){16,}(?![0-9A-Fa-f])")
_PRINTF_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|0?[0-7]{3})")
_STAGED_NAME = re.compile(r"['\"]?([A-Za-z0-9_][A-Za-z0-9_.+-]{0,100})['\"]?\s+['\"]?$")
_NOT_FILE_NAMES = frozenset({"echo", "printf", "print", "cat", "base64", "then", "do", "else", "in"})
_MAX_DECODED = 1 << 20  # a gzip bomb stops here
_DECODE_DEPTH = 3


def _readable(data: bytes) -> str | None:
    """Bytes as text when they are text (a decoded script, key or config), else None."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
                data = unzipped.read(_MAX_DECODED)
        except (OSError, EOFError, zlib.error):
            return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if printable >= 0.95 * len(text) else None


def _b64_blob(blob: str) -> str | None:
    body = blob.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return _readable(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _printf_unescaped(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = m.group(0)[1:]
        return chr(int(code[1:], 16) if code[0] == "x" else int(code, 8))

    return _PRINTF_ESCAPE.sub(one, text)


def decoded_texts(text: str, depth: int = _DECODE_DEPTH) -> Iterator[tuple[str, str]]:
    """``(what it was, decoded text)`` for every encoded text inside ``text``, nested ones too.

    Base64 (standard or URL-safe, padded or not; a word right before it names a staged
    file), gzip inside base64, hex, and printf-style escapes (``\\x2d``, ``\\055``).
    """
    if depth <= 0:
        return
    found: list[tuple[str, str]] = []
    for m in _B64_BLOB.finditer(text):
        decoded = _b64_blob(m.group(0))
        if decoded is not None:
            name = _STAGED_NAME.search(text, max(0, m.start() - 110), m.start())
            staged = name is not None and name.group(1) not in _NOT_FILE_NAMES
            found.append((f"staged file '{name.group(1)}'" if name and staged else "a base64 blob", decoded))
    for m in _HEX_BLOB.finditer(text):
        decoded = _readable(bytes.fromhex(m.group(0)))
        if decoded is not None:
            found.append(("a hex blob", decoded))
    if len(_PRINTF_ESCAPE.findall(text)) >= 8:
        found.append(("escaped text", _printf_unescaped(text)))
    for what, decoded in found:
        yield what, decoded
        for inner, deeper in decoded_texts(decoded, depth - 1):
            yield f"{inner} inside {what}", deeper


_HEREDOC = re.compile(
    r"<<-?[ \t]*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1[^\n]*\n(.*?)\n[ \t]*\2[ \t]*$", re.DOTALL | re.MULTILINE
)


def _with_decoded(texts: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Each ``(path, text)``, the files a script writes from here-documents, and what is encoded in them."""
    for path, text in texts:
        parts = [(path, text)] + [(f"{path}, heredoc {m.group(2)}", m.group(3)) for m in _HEREDOC.finditer(text)]
        yield from parts
        for where, part in parts:
            for what, decoded in decoded_texts(part):
                yield f"{where}, {what} decoded", decoded
