"""[Cost Estimate] Before the first check, one line on what the session's marked tests will cost.

The estimate itself is ``cache/costs.py`` (pytest-free); here: the last run's times read from
pytest's cache (``config.cache``, absent under ``-p no:cacheprovider``: no line, nothing kept),
the line said once, and this run's times kept at the end. The controller says it and keeps the
times (xdist's workers collect and run; only the controller sees every report): serially when
collection is done, under xdist when the first worker has collected (every worker collects the
same ids, and the controller schedules nothing before that).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..cache import costs

#: The key in pytest's cache: ``{nodeid: {"test": test id, "s": seconds}}``.
KEY = "torchexport/costs"
#: The session's ``Costs``, for plugin.py's ``pytest_sessionfinish``.
COSTS = pytest.StashKey["Costs"]()


class Costs:
    """Registered once per pytest process (plugin.py)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.said = False
        #: this run's items that made rows: node id -> (the test's id, the call phase's seconds)
        self.timed: dict[str, tuple[str, float]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if _is_worker(self.config):
            return
        from . import items

        marked = [item.nodeid for item in session.items if items.target(item) is not None]
        self._say([item.nodeid for item in session.items], marked, workers=1)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        workers = getattr(self.config.option, "numprocesses", None)
        self._say(ids, None, workers=workers if isinstance(workers, int) and workers > 0 else 1)

    def _say(self, nodeids: list[str], marked: list[str] | None, workers: int) -> None:
        if self.said or self.config.option.collectonly:
            return
        self.said = True
        history = self._history()
        if not history:
            return
        found = costs.estimate(history, nodeids, marked)
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and found.worth_saying(workers):
            terminal.write_line(found.line(workers))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows = getattr(report, "torchexport_results", None)
        if report.when != "call" or not rows or _is_worker(self.config):
            return
        test = rows[0].get("test") if isinstance(rows[0], dict) else None
        self.timed[report.nodeid] = (test if isinstance(test, str) else report.nodeid, report.duration)

    def keep(self) -> None:
        """This run's times into pytest's cache (plugin.py's ``pytest_sessionfinish``)."""
        cache = getattr(self.config, "cache", None)
        if cache is None or not self.timed or _is_worker(self.config):
            return
        cache.set(KEY, costs.updated(self._history(), self.timed))

    def _history(self) -> dict[str, Any]:
        cache = getattr(self.config, "cache", None)
        stored = cache.get(KEY, {}) if cache is not None else {}
        return stored if isinstance(stored, dict) else {}  # an edited or foreign value: no history


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")
