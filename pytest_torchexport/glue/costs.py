"""What a session's marked tests will cost, estimated from what they cost last time.

Each marked item's time is kept in pytest's cache; before the first check, one line gives
the last run's total. See docs/howto-budget.md.

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
from typing import TYPE_CHECKING, Any

import pytest

from . import items

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

#: The estimate is printed only above this, so a suite of small models prints nothing.
ESTIMATE_ABOVE_S = 180.0
#: How many of the costliest tests the line names.
TOP = 3
#: Entries kept in the history, most recent first, so the file stays bounded.
MAX_ENTRIES = 20000
#: An item of ours: ``[torchexport-<backend>]`` or ``[<params>-torchexport-<backend>]``.
_OURS = re.compile(r"[\[-]torchexport-[^\[\]]+\]$")


@dataclass
class Estimate:
    """The last run's cost of the items collected now."""

    seconds: float  # their call phases summed
    tests: list[tuple[str, float]] = field(default_factory=list)  # by test, costliest first
    timed: int = 0  # items with an earlier time
    untimed: int = 0  # marked items without one

    def worth_saying(self, workers: int = 1) -> bool:
        """Whether the predicted wait per worker passes ``ESTIMATE_ABOVE_S``."""
        return self.seconds / max(1, workers) > ESTIMATE_ABOVE_S

    def line(self, workers: int = 1) -> str:
        """The line: the total, the items with no time, and the costliest tests."""
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
    """Whether ``nodeid`` is one of the plugin's items."""
    return bool(_OURS.search(nodeid))


def estimate(history: Mapping[str, Any], nodeids: Iterable[str], marked: Iterable[str] | None = None) -> Estimate:
    """The last run's cost of ``nodeids``, by test; ids in ``marked`` (default: those ``ours``
    accepts) with no time count as untimed."""
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
    """``history`` with this run's ``{nodeid: (test, seconds)}`` first, at most ``MAX_ENTRIES``."""
    fresh = {nodeid: {"test": test, "s": round(seconds, 3)} for nodeid, (test, seconds) in timed.items()}
    older = ((k, v) for k, v in history.items() if k not in fresh and _seconds(v) is not None)
    return dict(list({**fresh, **dict(older)}.items())[:MAX_ENTRIES])


def _seconds(entry: object) -> float | None:
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
#: The session's ``Costs``.
COSTS = pytest.StashKey["Costs"]()


class Costs:
    """The estimate's pytest hooks, registered once per session (plugin.py)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.said = False
        #: node id -> (test id, seconds) of this run's items
        self.timed: dict[str, tuple[str, float]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if _is_worker(self.config):
            return
        marked = [item.nodeid for item in session.items if items.target(item) is not None]
        self._say([item.nodeid for item in session.items], marked, workers=1)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: WorkerController, ids: list[str]) -> None:
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
        """Store this run's times in pytest's cache."""
        cache = getattr(self.config, "cache", None)
        if cache is None or not self.timed or _is_worker(self.config):
            return
        cache.set(KEY, updated(self._history(), self.timed))

    def _history(self) -> dict[str, Any]:
        cache = getattr(self.config, "cache", None)
        stored = cache.get(KEY, {}) if cache is not None else {}
        return stored if isinstance(stored, dict) else {}  # ignore an edited or foreign value


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


__all__ = ["COSTS", "ESTIMATE_ABOVE_S", "KEY", "Costs", "Estimate", "estimate", "ours", "updated"]
