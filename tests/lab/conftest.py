"""Fixtures of the lab tier; every test under tests/lab is marked ``lab``.

The lab tier never skips: without root or its tools, every lab test errors with
the message of :func:`require_lab_tools`, which says what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netns import Lab, require_lab_tools

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only the ones under tests/lab.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def lab_preflight() -> None:
    """Fail (not skip) every lab test when the machine cannot run the lab."""
    require_lab_tools()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh lab; its hosts, processes and files are gone after the test, pass or fail."""
    with Lab() as the_lab:
        yield the_lab
