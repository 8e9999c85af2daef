"""Every remote command of every example stack fits in one argument on the host.

sshd runs a remote command as ONE argument of ``sh -c``, so a command over Linux's
MAX_ARG_STRLEN fails on the host with "Argument list too long" (the lab met it: a backup
service that staged three scripts, each with host-files.sh inlined, at 131,712 bytes).
Staged files travel gzipped (components/scripts encode_staged), which keeps the largest far
below the limit; this test fails when one grows near it again.
"""

from __future__ import annotations

import pytest

from components.scripts import MAX_ARGUMENT
from tests.program.conftest import Stack
from tools.stack.synth import unwrap

COMMAND = "command:remote:Command"
# Room left for what the host's login adds and for growth: a command at 3/4 of the limit fails here.
BUDGET = MAX_ARGUMENT * 3 // 4


@pytest.mark.parametrize("name", ["prod", "lab", "gitea", "gitea_woodpecker"])
def test_every_command_fits_in_one_argument_with_room(name: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(name)
    sizes = {
        f"{cmd.name}.{field}": len(text)
        for cmd in stack.synth.of_type(COMMAND)
        for field in ("create", "update", "delete")
        if isinstance(text := unwrap(cmd.inputs.get(field)), str)
    }
    assert sizes, f"{name}: no command found"
    over = {where: size for where, size in sizes.items() if size > BUDGET}
    assert over == {}, f"{name}: commands over {BUDGET} bytes (one host argument is {MAX_ARGUMENT}): {over}"
    largest = max(sizes, key=sizes.__getitem__)
    print(f"{name}: {len(sizes)} commands, the largest {largest} at {sizes[largest]} bytes")
