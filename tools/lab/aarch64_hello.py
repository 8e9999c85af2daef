"""The smallest static aarch64 Linux program the lab needs: it prints a line and exits 0.

Nothing arm64 can be downloaded for the lab's images, and this machine is x86_64, so
this program runs only through a QEMU binfmt handler: the lab's proof that a runner
host with ``runner.multiarch`` runs arm64 binaries in its containers (tests/lab). Its
bytes are an ELF64 header, one PT_LOAD program header and six instructions
(``write(1, MESSAGE, len)``, ``exit(0)``), then MESSAGE.
"""

from __future__ import annotations

import struct

__all__ = ["MESSAGE", "aarch64_hello"]

MESSAGE = b"hello from aarch64\n"
_BASE = 0x400000
_EHDR, _PHDR = 64, 56


def _movz(register: int, value: int) -> int:
    return 0xD2800000 | (value << 5) | register  # MOVZ Xd, #value


def _adr(register: int, offset: int) -> int:
    return 0x10000000 | ((offset & 3) << 29) | ((offset >> 2) << 5) | register  # ADR Xd, .+offset


def aarch64_hello() -> bytes:
    code_at = _EHDR + _PHDR
    adr_at = code_at + 4
    message_at = code_at + 4 * 8  # eight instructions
    words = [
        _movz(0, 1),  # fd 1
        _adr(1, message_at - adr_at),  # x1: the message
        _movz(2, len(MESSAGE)),
        _movz(8, 64),  # write
        0xD4000001,  # SVC #0
        _movz(0, 0),
        _movz(8, 93),  # exit
        0xD4000001,
    ]
    code = b"".join(struct.pack("<I", w) for w in words)
    size = code_at + len(code) + len(MESSAGE)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, version 1, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        183,  # EM_AARCH64
        1,
        _BASE + code_at,  # entry
        _EHDR,  # program headers right after this header
        0,  # no section headers
        0,
        _EHDR,
        _PHDR,
        1,
        0,
        0,
        0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # PT_LOAD, R+X, whole file
    return header + program + code + MESSAGE
