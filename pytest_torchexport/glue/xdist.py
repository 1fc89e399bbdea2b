"""Hooks that exist only when pytest-xdist is loaded (registered from ``pytest_configure``):
each worker's share of the cores for torch's intra-op threads.

[Workers Inherit] The controller resolves the session; workers run items, and each
item's results ride on its test report to the controller, which alone writes the report.
A row's test id without xdist's ``@group`` suffix is ``items.py``'s ([Group Suffix]).
"""

from __future__ import annotations

import os
import sys
from typing import Any


class XdistHooks:
    def pytest_configure_node(self, node: Any) -> None:
        # Two workers each using every core for torch's intra-op pool would
        # oversubscribe the machine: give each worker its share.
        workers = max(1, int(getattr(node.config.option, "numprocesses", 1) or 1))
        node.workerinput["torchexport_threads"] = max(1, (os.cpu_count() or 1) // workers)


def cap_worker_threads(config: Any) -> None:
    """On a worker, limit torch's intra-op threads to the share the controller gave it."""
    threads = getattr(config, "workerinput", {}).get("torchexport_threads")
    if not threads:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # read by torch when it is first imported; costs nothing if it never is
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
