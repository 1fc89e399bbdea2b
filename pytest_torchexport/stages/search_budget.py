"""[Search Budget] What a test's checks may spend beyond their exports, and what goes first.

The budget counts everything after export, save and load (``BudgetClock``). When time is short,
findings are dropped before inputs, and an input is tried only if one more fits at the mean so
far. See docs/howto-budget.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..options import Options
from ..results.report import Finding, Result

#: [Search Budget] The default budget is this many times the test body's own time ...
BUDGET_MULTIPLE = 10.0
#: ... but never below this many seconds, so a small model's search is never cut.
BUDGET_FLOOR_S = 60.0
#: Input kinds the budget never leaves out ("scalar" feeds side_effects.baked_arguments).
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


class SharedSpending(Protocol):
    """What a clock reads of the inputs every backend shares (``shared_search.SharedInputs``)."""

    @property
    def budget(self) -> Budget: ...
    @property
    def skipped(self) -> list[str]: ...
    @property
    def spent_s(self) -> float: ...
    @property
    def extra_s(self) -> float: ...
    @property
    def wall_s(self) -> float | None: ...


@dataclass
class BudgetClock:
    """[Search Budget] One check's time against its budget: eager's shared time plus its own since its exports."""

    shared: SharedSpending
    forward_s: float = 0.0  # eager's time at the recorded input: the least a later call costs
    start: float = field(default_factory=time.perf_counter)
    untried: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    input_s: float = 0.0  # the search's mean seconds per input

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
        """Whether the time left covers one more input (at least one forward); else ``what`` is skipped."""
        if self.left_s >= max(self.forward_s, self.input_s):
            return True
        self.skipped.append(what)
        return False


def budget_row(clock: BudgetClock, result: Result) -> None:
    """[Search Budget] Add the ``budget`` finding and key if inputs or findings were left out."""
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


def start(shared: SharedSpending | None, forward_s: float) -> BudgetClock | None:
    """A check's clock, from the end of its exports (None: no shared search, no budget)."""
    return None if shared is None else BudgetClock(shared, forward_s=forward_s)


def affords(clock: BudgetClock | None, what: str) -> bool:
    """Whether ``what`` (a finding or measurement after the verdict) still fits the budget."""
    if clock is None:
        return True
    if what in clock.skipped:
        return False
    return clock.allows(what)


def until(clock: BudgetClock | None) -> float | None:
    """The ``time.perf_counter()`` at which the budget ends, or None."""
    return None if clock is None else time.perf_counter() + clock.left_s


def close(clock: BudgetClock | None, result: Result) -> None:
    """Write the row's ``budget`` finding and the check's wall time after its exports."""
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
