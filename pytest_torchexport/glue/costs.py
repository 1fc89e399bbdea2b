"""[Cost Estimate] What a session's marked tests will cost, from what they cost last time.

A marked test's checks run after its body, so nothing this session measures can say what
they will cost before the first one starts; a suite of heavy models marked for the first time
can take an hour with nothing on the screen but dots. What is known is the last run: each
marked item's call phase as pytest timed it (the body where it ran, and the wait for its
check; a pass the verdict cache reused costs its lookup), kept by node id in pytest's cache
(``Costs`` reads and writes it). ``estimate`` sums it over the items collected now,
groups it by test (a test's items share one body and one search) and counts the items with
no earlier time; ``Estimate.line`` is the one line said before the first check, only where
the total passes ``ESTIMATE_ABOVE_S``.

``estimate`` and ``updated`` only compute (no pytest, no files); ``Costs`` is the pytest side:
the last run's times read from pytest's cache (``config.cache``, absent under ``-p
no:cacheprovider``: no line, nothing kept), the line said once, and this run's times kept at
the end. The controller says it and keeps the times (xdist's workers collect and run; only the
controller sees every report): serially when collection is done, under xdist when the first
worker has collected (every worker collects the same ids, and the controller schedules nothing
before that).

>>> history = {"t.py::test_a[torchexport-onnx]": {"test": "t.py::test_a", "s": 200.0},
...            "t.py::test_b[torchexport-onnx]": {"test": "t.py::test_b", "s": 3.0}}
>>> found = estimate(history, ["t.py::test_a[torchexport-onnx]", "t.py::test_b[torchexport-onnx]",
...                            "t.py::test_c[torchexport-onnx]"])
>>> found.line()
'torchexport: the 3 marked items took about 3.4 min last time (1 has no earlier time): t.py::test_a 3.3 min, t.py::test_b 3 s'
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import items

#: The estimate is said where the marked items took longer than this last time. Three minutes:
#: a marked small-model suite (a few dozen tests, checks of 0.5-5 s each) stays under it and
#: prints nothing, while a suite whose checks a user would want to plan for (a 3-D
#: network suite: 1,270 s) is well over it.
ESTIMATE_ABOVE_S = 180.0
#: How many of the costliest tests the line names.
TOP = 3
#: Entries kept in the history, the most recently timed first: a suite's items, with room for
#: renamed and removed ones, without letting the file grow without end.
MAX_ENTRIES = 20000
#: An item of ours: ``[torchexport-<backend>]``, or ``[<params>-torchexport-<backend>]`` (items.targets).
_OURS = re.compile(r"[\[-]torchexport-[^\[\]]+\]$")


@dataclass
class Estimate:
    """The last run's cost of the items collected now."""

    seconds: float  # their call phases summed
    tests: list[tuple[str, float]] = field(default_factory=list)  # by test, costliest first
    timed: int = 0  # items with an earlier time
    untimed: int = 0  # marked items with none (new, renamed, or never run to the end)

    def worth_saying(self, workers: int = 1) -> bool:
        """Whether the wait it predicts (the total shared by the workers) passes ``ESTIMATE_ABOVE_S``."""
        return self.seconds / max(1, workers) > ESTIMATE_ABOVE_S

    def line(self, workers: int = 1) -> str:
        """The one line: the total, how many items had no time, and the tests that dominate."""
        items = self.timed + self.untimed
        total = f"about {_duration(self.seconds)}"
        if workers > 1:
            total += f" ({_duration(self.seconds / workers)} on each of {workers} workers)"
        untimed = ""
        if self.untimed:
            untimed = f" ({self.untimed} {'has' if self.untimed == 1 else 'have'} no earlier time)"
        top = ", ".join(f"{test} {_duration(s)}" for test, s in self.tests[:TOP])
        return f"torchexport: the {items} marked item{'s' if items != 1 else ''} took {total} last time{untimed}: {top}"


def ours(nodeid: str) -> bool:
    """The node id of one of the plugin's items (one backend of a marked test)."""
    return bool(_OURS.search(nodeid))


def estimate(history: Mapping[str, Any], nodeids: Iterable[str], marked: Iterable[str] | None = None) -> Estimate:
    """The last run's cost of ``nodeids``, by test. ``marked``: the ids that are checks (default: those
    ``ours`` recognises), counted as untimed where the history has none; the fixture's items
    count only once they have a time."""
    nodeids = list(nodeids)
    checks = set(marked) if marked is not None else {i for i in nodeids if ours(i)}
    found = Estimate(0.0)
    by_test: dict[str, float] = {}
    for nodeid in nodeids:
        entry = history.get(nodeid)
        seconds = _seconds(entry)
        if seconds is None:
            found.untimed += nodeid in checks
            continue
        found.timed += 1
        found.seconds += seconds
        test = entry["test"] if isinstance(entry, Mapping) and isinstance(entry.get("test"), str) else nodeid
        by_test[test] = by_test.get(test, 0.0) + seconds
    found.tests = sorted(by_test.items(), key=lambda kv: -kv[1])
    return found


def updated(history: Mapping[str, Any], timed: Mapping[str, tuple[str, float]]) -> dict[str, Any]:
    """``history`` with this run's items (``{nodeid: (test, seconds)}``) put first, at most ``MAX_ENTRIES``."""
    fresh = {nodeid: {"test": test, "s": round(seconds, 3)} for nodeid, (test, seconds) in timed.items()}
    older = ((k, v) for k, v in history.items() if k not in fresh and _seconds(v) is not None)
    return dict(list({**fresh, **dict(older)}.items())[:MAX_ENTRIES])


def _seconds(entry: Any) -> float | None:
    if not isinstance(entry, Mapping):
        return None
    s = entry.get("s")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        return None
    return float(s)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


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
        found = estimate(history, nodeids, marked)
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
        cache.set(KEY, updated(self._history(), self.timed))

    def _history(self) -> dict[str, Any]:
        cache = getattr(self.config, "cache", None)
        stored = cache.get(KEY, {}) if cache is not None else {}
        return stored if isinstance(stored, dict) else {}  # an edited or foreign value: no history


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


__all__ = ["COSTS", "ESTIMATE_ABOVE_S", "KEY", "Costs", "Estimate", "estimate", "ours", "updated"]
