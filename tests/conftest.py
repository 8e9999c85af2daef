"""Hooks for the whole suite.

``make test`` runs the unit, program and policies tiers on two pytest-xdist workers
with ``--dist loadgroup``: each program and policies test goes, with the rest of its
tier, to one worker, which synthesizes the example stacks once for the tier (session
fixtures are per worker); unit tests are spread over both. The groups are given by
tests/xdist_groups.py, as the lab tier's (tests/lab/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.xdist_groups import put_in_group

_HERE = Path(__file__).parent
_GROUPED_TIERS = ("program", "policies")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for tier in _GROUPED_TIERS:
            if item.path.is_relative_to(_HERE / tier):
                put_in_group(config, item, tier)
