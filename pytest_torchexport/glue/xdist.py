"""Hooks that exist only when pytest-xdist is loaded (registered from ``pytest_configure``).

[Workers Inherit] The controller resolves the session; workers run items, and each
item's results ride on its test report to the controller, which alone writes the report.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from . import items


class XdistHooks:
    def pytest_configure_node(self, node: Any) -> None:
        # Two workers each using every core for torch's intra-op pool would
        # oversubscribe the machine: give each worker its share.
        workers = max(1, int(getattr(node.config.option, "numprocesses", 1) or 1))
        node.workerinput["torchexport_threads"] = max(1, (os.cpu_count() or 1) // workers)


def without_group_suffix(item: pytest.Item, rows: list[dict[str, Any]]) -> None:
    """[Group Suffix] The rows keep the test's own id, not the one ``--dist loadgroup`` gave the
    item (plugin.py's makereport; a no-op without xdist or its ``loadgroup``)."""
    suffix = _group_suffix(item)
    if suffix:
        for row in rows:
            _without_group(row, suffix, item)


def _group_suffix(item: pytest.Item) -> str | None:
    """[Group Suffix] ``--dist loadgroup`` appends ``@<group>`` to the node id of an item marked
    ``xdist_group`` (xdist/remote.py), to schedule by it. A row keeps the test's own id, so a
    baseline, a merge or a serial run match it, whatever the scheduling."""
    if not getattr(item.config.option, "loadgroup", False):  # set on workers only
        return None
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    suffix = "@" + "_".join(sorted(names)) if names else None
    return suffix if suffix and item.nodeid.endswith(suffix) else None


def _without_group(row: dict[str, Any], suffix: str, item: pytest.Item) -> None:
    nodeid = row.get("nodeid")
    if not isinstance(nodeid, str) or not nodeid.endswith(suffix):
        return
    row["nodeid"] = nodeid = nodeid[: -len(suffix)]
    target = items.target(item)
    if target is None or not str(row.get("test", "")).endswith(suffix):
        return
    # The test's id is the node id less ours (items.test_key), which the suffix hid from it.
    row["test"] = items.without_target(nodeid, target)


def cap_worker_threads(config: Any) -> None:
    """On a worker, limit torch's intra-op threads to the share the controller gave it."""
    threads = getattr(config, "workerinput", {}).get("torchexport_threads")
    if not threads:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # read by torch when it is first imported; costs nothing if it never is
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
