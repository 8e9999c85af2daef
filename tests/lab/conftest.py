"""Fixtures of the lab tier; every test under tests/lab is marked ``lab``.

The lab tier never skips: without root or its tools, every lab test errors with
the message of :func:`require_lab_tools`, which says what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.make_lab import MakeLab
from tests.lab.netns import Lab, require_lab_tools
from tests.xdist_groups import put_in_group

_HERE = Path(__file__).parent


# The xdist group of every test that uses `make lab`'s topology (FIXED names and addresses,
# .lab/: what /tmp/fwl.lock guards between runs): one worker runs them all, in order.
MAKE_LAB_GROUP = "fwl"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only the ones under tests/lab.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.lab)
            put_in_group(config, item, _xdist_group(item))
    # The `make lab` tests in the order that applies and destroys the lab least often: first
    # those that want it applied, then those that start from a destroyed stack (each ends
    # applied or destroyed; the next one's fixture destroys it only if it is applied), then
    # those that take it down or wipe a host (the backup drill), then those on the stack
    # switched to Gitea in place (tests/lab/test_lab_gitea.py: its switch starts with
    # GitLab's destroy, and it leaves Gitea applied), and last the destroy test, which
    # destroys either forge and takes the lab down. Any order gives the same results (each fixture puts
    # the lab in the state its test needs: MakeLab.ensure_up, ensure_destroyed); only the
    # wall time depends on it. The sort is stable: within a rank, the order of the files.
    # And they come first: `make test` runs every tier in one session with xdist's groups in
    # the order of their first test (--no-loadscope-reorder), so that the longest group, the
    # `make lab` tests, starts at once on one worker while the other worker runs the rest.
    items.sort(key=_order)


def _order(item: pytest.Item) -> tuple[bool, int]:
    wanted = getattr(item, "fixturenames", ())
    ranks = {"lab_on_either_forge": 4, "gitea_lab": 3, "lab_to_take_down": 2, "destroyed_lab": 1}
    rank = max((r for name, r in ranks.items() if name in wanted), default=0)
    return "_session_make_lab" not in wanted, rank


def _xdist_group(item: pytest.Item) -> str:
    """Where ``make test`` (``-n 2 --dist loadgroup``) runs a lab test: every test on the
    `make lab` topology in the one group :data:`MAKE_LAB_GROUP`; any other test with the
    rest of its module, so a module's fixtures are made once and its fixed resources (a
    dockerd's bridge index, a host address it asks for) are used by one test at a time.
    Modules of different groups share nothing but the image and rootfs caches, which are
    safe to use at once (tools/lab/images.py)."""
    if "_session_make_lab" in getattr(item, "fixturenames", ()):
        return MAKE_LAB_GROUP
    return item.path.relative_to(_HERE).stem


@pytest.fixture(scope="session", autouse=True)
def lab_preflight() -> None:
    """Fail (not skip) every lab test when the machine cannot run the lab."""
    require_lab_tools()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab; its hosts, processes and files are gone after the test, pass or fail."""
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def _session_make_lab() -> Iterator[MakeLab]:
    the_lab = MakeLab()
    try:
        the_lab.start()
        yield the_lab
    finally:
        the_lab.run("down")


@pytest.fixture
def make_lab(_session_make_lab: MakeLab) -> MakeLab:
    """The session's `make lab` (FIXED names: run under ``flock /tmp/fwl.lock``), up.

    Brought up once for the session and down at its end, pass or fail; a test that took
    it down (``lab_to_take_down``) leaves the next one to bring it up again."""
    _session_make_lab.ensure_up()
    return _session_make_lab


@pytest.fixture
def destroyed_lab(_session_make_lab: MakeLab) -> MakeLab:
    """The session's lab, up, its stack destroyed (GitLab's protected volumes kept), for a
    test that applies it from there (sorted after the tests that want it applied, so one
    destroy serves a test that leaves it destroyed and the next). The test may leave it
    applied or destroyed: MakeLab records which, and the next test's fixture acts on that."""
    _session_make_lab.ensure_destroyed()
    return _session_make_lab


@pytest.fixture
def lab_to_take_down(make_lab: MakeLab) -> MakeLab:
    """The session's lab, for a test that takes it down (sorted after the lab's other tests)."""
    return make_lab


@pytest.fixture
def lab_on_either_forge(_session_make_lab: MakeLab) -> MakeLab:
    """The session's lab, applied on the forge it has (GitLab, or Gitea after the Gitea
    tests), for the destroy test (sorted last)."""
    _session_make_lab.ensure_up(forge=None)
    return _session_make_lab


@pytest.fixture
def topology(make_lab: MakeLab) -> dict[str, Any]:
    """The session lab's description (``.lab/topology.json``), for tests written against it."""
    return make_lab.topology
