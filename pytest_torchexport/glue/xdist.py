"""Hooks registered only with pytest-xdist: each worker gets its share of the cores.

Only the controller writes the report; the ``@group`` suffix is handled in ``items.py``
([Group Suffix]). See docs/howto-xdist.md.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from xdist.workermanage import WorkerController


class XdistHooks:
    def pytest_configure_node(self, node: WorkerController) -> None:
        # Workers that each used every core would oversubscribe the machine.
        workers = max(1, int(getattr(node.config.option, "numprocesses", 1) or 1))
        node.workerinput["torchexport_threads"] = max(1, (os.cpu_count() or 1) // workers)


def cap_worker_threads(config: pytest.Config) -> None:
    """On a worker, limit torch's intra-op threads to the share the controller gave it."""
    threads = getattr(config, "workerinput", {}).get("torchexport_threads")
    if not threads:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # torch reads it when first imported
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
