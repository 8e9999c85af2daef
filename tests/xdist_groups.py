"""xdist's ``--dist loadgroup`` groups, as both conftests (tests/, tests/lab/) give them.

xdist 3.8 groups by an ``xdist_group`` mark: its worker hook renames each marked item to
``<id>@<group>`` by setting ``item._nodeid``, and the loadgroup scheduler sends all ids of
one suffix to one worker. pytest 9.2 no longer reads ``_nodeid`` (``nodeid`` is
``str(item._id)``), so the rename, and the grouping, are lost: every test is scheduled
alone. :func:`put_in_group` marks the item and renames it itself. ``pytest -v`` shows the
group after ``@`` in each id.
"""

from __future__ import annotations

import pytest
from _pytest.nodeid import NodeId


def put_in_group(config: pytest.Config, item: pytest.Item, group: str) -> None:
    """Run ``item`` on the worker that runs the rest of ``group`` (under ``--dist loadgroup``)."""
    item.add_marker(pytest.mark.xdist_group(group))
    # config.option.loadgroup: set on an xdist worker under --dist loadgroup (xdist's setup_config);
    # the controller schedules by the ids the workers report.
    if getattr(config.option, "loadgroup", False) and not item.nodeid.endswith(f"@{group}"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")
