"""The applier dials again where pulumi-command does (Connection.dialErrorLimit): only when
ssh could not open the session, never after a command ran."""

from __future__ import annotations

import subprocess

import pytest

from tools.applier.apply import dial_failed


def _done(rc: int, stderr: str, stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["ssh"], rc, stdout, stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "ssh: connect to host 203.0.113.10 port 2202: Connection refused\n",
        "ssh: connect to host 203.0.113.10 port 2202: Connection refused\n"
        "kex_exchange_identification: Connection closed by remote host\n"
        "Connection closed by UNKNOWN port 65535\n",
    ],
)
def test_a_refused_dial_is_dialled_again(stderr: str) -> None:
    assert dial_failed(_done(255, stderr))


@pytest.mark.parametrize(
    ("rc", "stderr", "stdout"),
    [
        (255, "Host key verification failed.\n", ""),
        (255, "forgeway@10.0.0.2: Permission denied (publickey).\n", ""),
        (1, "ssh: connect to host 10.0.0.2 port 22: Connection refused\n", ""),  # a command's own output
        (255, "Connection closed by 10.0.0.2 port 22\n", "partial output"),  # a command ran
        (255, "Connection to 10.0.0.2 closed by remote host.\n", ""),  # mid-session
    ],
)
def test_anything_else_is_not(rc: int, stderr: str, stdout: str) -> None:
    assert not dial_failed(_done(rc, stderr, stdout))
