"""[Search Budget] What a test's checks may spend beyond their exports, what that counts, and what
it leaves out first.

The budget (``limit_s``) is ``budget=`` / ``--torchexport-budget``, else ``BUDGET_MULTIPLE`` times
the test body's own time, never below ``BUDGET_FLOOR_S`` (docs/howto-budget.md). On a 3-D
DenseNet169 whose rows each spent 27-42 s beyond their exports, a 30 s budget was measured:
the search kept within it, but the round trip, the standalone wait, the static-size probes and
latency were outside its count.

The budget counts everything a check does after its exports (``BudgetClock``, one per check):
eager's runs in the test's process (the shared inputs, and eager's side of the latency and
static-size probes), then in each check, from the end of ``exporting.build`` and
``assumptions.recorded_size_export``, the side effects, the search, the wait for the standalone load, the static-size probes and latency.
"The exports" are the export, its save and its load back (the round trip): the artifact a
check needs before it can try any input, which nothing can shorten; the artifact's first run
is counted (it is the side effects' or the search's first input). The standalone load is a
verdict's input and is never cut, only counted. Where the budget is short, the findings and
measurements go first, before any input the verdict rests on is left out: eager's latency and
static-size runs in the test's process only where every shared input was tried and the budget
also covers each check's artifact on them (about eager's time) and a forward on each side; each
check's static-size probes and latency only where the time left covers one more input at its
search's mean (at least a forward); an input is tried only where the time left covers one more
at the mean so far (``BudgetClock.input_s``), so a row ends within the budget; what a row
left out is named on its ``budget`` finding and key (``"skipped"``: ``"static_size probes"``,
``"latency"``).

The search's inputs are ordered by value in ``shared_search.py`` (``ALWAYS``: never left out).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import Options
from ..results.report import Finding, Result

if TYPE_CHECKING:
    from .shared_search import SharedInputs

#: [Search Budget] The default budget is this many times the test body's own time ...
BUDGET_MULTIPLE = 10.0
#: ... but never below this many seconds: a small model's whole search (25 drawn inputs and
#: about 10 explicit ones, each through eager and every artifact) takes 0.1-2 s here, so the
#: floor leaves it untouched even on a machine loaded 10x; a model whose forward takes seconds
#: is what it bounds.
BUDGET_FLOOR_S = 60.0
#: Kinds the budget never leaves out ("scalar": eager at a Python scalar's other value, for
#: side_effects.baked_arguments).
ALWAYS = frozenset({"recorded", "bounds", "scalar"})


@dataclass
class Budget:
    """The seconds the checks of one call may spend beyond their exports, and why that many."""

    limit_s: float  # math.inf: off
    why: str

    @classmethod
    def resolve(cls, options: Options, body_s: float | None, eager_s: float) -> Budget:
        if options.budget is not None:
            if math.isinf(options.budget):
                return cls(math.inf, "off")
            return cls(options.budget, f"budget={options.budget:g}s")
        own, what = (body_s, "the test body's") if body_s is not None else (eager_s, "the recorded call's eager")
        limit = max(BUDGET_FLOOR_S, BUDGET_MULTIPLE * own)
        return cls(limit, f"{BUDGET_MULTIPLE:g}x {what} {own:.2f} s, at least {BUDGET_FLOOR_S:g} s")


@dataclass
class BudgetClock:
    """[Search Budget] One check's count against its budget: eager's time on the shared inputs and
    findings (spent in the test's process, before the check forked), plus the check's own time
    since its exports ended (module doc). ``untried``: the inputs the search left; ``skipped``:
    the findings and measurements left out, both named on the row by ``budget_row``."""

    shared: SharedInputs
    forward_s: float = 0.0  # eager's seconds at the recorded input: the least a later stage's call costs
    start: float = field(default_factory=time.perf_counter)
    untried: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    input_s: float = 0.0  # the search's mean seconds per input here: what one call of a later stage costs

    def __post_init__(self) -> None:
        self.skipped = [*self.shared.skipped, *self.skipped]

    @property
    def spent_s(self) -> float:
        shared = self.shared
        before = shared.wall_s if shared.wall_s is not None else shared.spent_s + shared.extra_s
        return before + time.perf_counter() - self.start

    @property
    def left_s(self) -> float:
        return self.shared.budget.limit_s - self.spent_s

    def allows(self, what: str) -> bool:
        """Whether the time left covers ``what`` (one input at the search's mean, at least one forward
        at the recorded input); else it is named as skipped."""
        if self.left_s >= max(self.forward_s, self.input_s):
            return True
        self.skipped.append(what)
        return False


def budget_row(clock: BudgetClock, result: Result) -> None:
    """[Search Budget] The ``budget`` finding and key where the budget left inputs untried or findings out."""
    untried, skipped = clock.untried, list(dict.fromkeys(clock.skipped))
    total = sum(untried.values())
    if not total and not skipped:
        return
    shared = clock.shared
    limit, spent_s = shared.budget.limit_s, clock.spent_s
    entry: dict[str, Any] = {"limit_s": round(limit, 3), "spent_s": round(spent_s, 3), "untried": dict(untried)}
    if skipped:
        entry["skipped"] = skipped
    result.extra["budget"] = entry
    what = [f"{n} {_KIND_WORDS.get(k, k)}" for k, n in sorted(untried.items(), key=lambda kv: -kv[1])]
    left = f"{total} input(s) untried" if total else "no input untried"
    also = f"; and left out {' and '.join(skipped)}" if skipped else ""
    result.findings.append(
        Finding(
            "budget",
            f"the search budget of {limit:g} s ({shared.budget.why}; eager's runs may take half of it) left {left} "
            f"after {spent_s:.1f} s beyond the export{': ' + ', '.join(what) if what else ''}{also}; the recorded call "
            'and each declared dim\'s min and max were tried. Raise it with budget="10m" (or '
            "--torchexport-budget=DURATION), or --torchexport-budget=off for the full search",
        )
    )


_KIND_WORDS = {
    "drawn": "drawn input(s)",
    "probe": "small-size probe(s)",
    "special": "special-value probe(s)",
    "export": "export example",
}


def start(shared: SharedInputs | None, forward_s: float) -> BudgetClock | None:
    """A check's clock, from the end of its exports (None: no shared search, no budget)."""
    return None if shared is None else BudgetClock(shared, forward_s=forward_s)


def affords(clock: BudgetClock | None, what: str) -> bool:
    """Whether ``what`` (a finding or measurement after the verdict) runs: always without a budget;
    never where the test's process already left eager's side of it out; else where the time left
    covers it (``BudgetClock.allows``)."""
    if clock is None:
        return True
    if what in clock.skipped:
        return False
    return clock.allows(what)


def until(clock: BudgetClock | None) -> float | None:
    """The ``time.perf_counter()`` at which the budget ends, or None."""
    return None if clock is None else time.perf_counter() + clock.left_s


def close(clock: BudgetClock | None, result: Result) -> None:
    """The row's ``budget`` finding and key, and the check's own wall time after its exports
    (``after_exports_s``, which benchmarks/real_suite.py adds to ``shared_s``)."""
    if clock is None:
        return
    budget_row(clock, result)
    result.timings["after_exports_s"] = time.perf_counter() - clock.start


__all__ = [
    "ALWAYS",
    "BUDGET_FLOOR_S",
    "BUDGET_MULTIPLE",
    "Budget",
    "BudgetClock",
    "affords",
    "budget_row",
    "close",
    "start",
    "until",
]
