"""[Side By Side] The one scheduler of checks: ``check()``, the fixture and the plugin's items.

A check under process isolation runs in a child with one thread (``isolation/runner.py``),
so one check at a time leaves the other cores idle. A ``Scheduler`` keeps up to ``jobs``
checks going (``runner.parallel_checks()``: the process's share of the cores) and learns how
long each backend takes here, so that it starts the longest first.

Two ways to ask, one set of places:

- ``run_all(checks)``: a list of checks (``check()``, the fixture: the backends of one call),
  results in the order asked;
- ``start_ahead(key, check)`` / ``take(key)``: a check started before anyone waits for it
  (the plugin starts a test's next items beside the current one, ``glue/ahead.py``); its
  item takes it when it runs. ``places()`` says how many more may run. [Held] A check
  started ahead may be held (its child forked, waiting): it holds no place until
  ``release_ahead()`` lets it go, longest first, as places free.

A check is anything ``Startable``: ``engine.pipeline.PendingCheck`` (whose ``state`` is the
one record of where a check is in its life, ``CheckState``), or the plugin's
``recording.selection.PlannedRun`` (its state: its current kind's check's).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol

from ..isolation import runner
from ..results.report import Result

#: [Longest First] A backend's usual check time here, in seconds, before one was timed: an
#: ONNX export takes seconds, a trace a fraction of one (a third-party backend: 1).
USUAL_S = {
    "aoti": 8.0,
    "executorch": 6.0,
    "litert": 6.0,
    "tensorrt": 6.0,
    "openvino": 2.0,
    "onnx": 2.0,
    "export": 1.0,
    "compile": 1.0,
    "script": 0.5,
    "trace": 0.3,
}


def usual_s(backend: str) -> float:
    return USUAL_S.get(backend, 1.0)


class CheckState(enum.Enum):
    """Where one check is in its life. ``PendingCheck`` alone moves it (``PendingCheck._to``):

    - PENDING -> RUNNING (``start()``) -> FINISHED (its child ended) -> DONE (``wait()``);
    - PENDING -> HELD (``start(held=True)``) -> RUNNING (``start()`` or ``wait()``);
    - PENDING -> SETTLED (``start()``: a reused row, the shared prelude's verdict) -> DONE;
    - RUNNING -> DONE (``wait()`` before anyone saw the child end; inline, ``wait()`` runs it);
    - any but DONE -> CANCELLED (``cancel()``: the session ended first).

    ``TRANSITIONS`` holds these moves; any other raises."""

    PENDING = "pending"  # made, not started
    HELD = "held"  # [Held] its child forked, waiting to be let go: it holds no place
    RUNNING = "running"  # started: its child runs, or (inline) it runs when waited for
    SETTLED = "settled"  # its row settled in this process without a run: nothing left to run
    FINISHED = "finished"  # its child ended (or its wait raised): nothing of it runs, its row not yet read
    DONE = "done"  # waited for: its row is in
    CANCELLED = "cancelled"  # stopped unwaited (the session ended first)

    @property
    def busy(self) -> bool:
        """Holds a place: started, and something of it still runs (or, inline, will run when waited for)."""
        return self is CheckState.RUNNING

    @property
    def over(self) -> bool:
        """Nothing of it runs any more (its row may still be unread)."""
        return self in (CheckState.SETTLED, CheckState.FINISHED, CheckState.DONE, CheckState.CANCELLED)


#: The moves ``PendingCheck._to`` allows; any other is a bug of the engine's.
TRANSITIONS: dict[CheckState, frozenset[CheckState]] = {
    CheckState.PENDING: frozenset({CheckState.HELD, CheckState.RUNNING, CheckState.SETTLED, CheckState.CANCELLED}),
    CheckState.HELD: frozenset({CheckState.RUNNING, CheckState.CANCELLED}),
    CheckState.RUNNING: frozenset({CheckState.FINISHED, CheckState.DONE, CheckState.CANCELLED}),
    CheckState.SETTLED: frozenset({CheckState.DONE, CheckState.CANCELLED}),
    CheckState.FINISHED: frozenset({CheckState.DONE, CheckState.CANCELLED}),
    CheckState.DONE: frozenset(),
    CheckState.CANCELLED: frozenset(),
}


class Startable(Protocol):
    """What the scheduler reads of a check, and all it reads."""

    @property
    def name(self) -> str: ...  # the backend: its usual time orders the checks
    @property
    def device(self) -> str: ...
    @property
    def state(self) -> CheckState: ...
    @property
    def started(self) -> float | None: ...  # when it started (``time.monotonic``): the oldest inline one runs first
    @property
    def child(self) -> runner.Child | None: ...  # the forked child running it now, if one runs

    def start(self, *, held: bool = False) -> None: ...
    def wait(self) -> Result: ...
    def cancel(self) -> None: ...


class Scheduler:
    """Up to ``jobs`` checks at once (``runner.parallel_checks()`` unless given), longest first."""

    def __init__(self, jobs: int | None = None) -> None:
        self._jobs = jobs
        #: key -> (group, check): started ahead, not yet taken by whoever waits for it
        self._ahead: dict[str, tuple[str, Startable]] = {}
        self._took: dict[tuple[str, str], tuple[float, int]] = {}  # (backend, device) -> (seconds, checks)

    @property
    def jobs(self) -> int:
        return self._jobs or runner.parallel_checks()

    # -- what the checks took here -----------------------------------------------------------
    def timed(self, result: Result) -> None:
        """What one check took, for the order of starting the next ones."""
        total = result.timings.get("total_s")
        if total is not None and not result.extra.get("cached"):  # a reused row says nothing of the check's time
            seconds, count = self._took.get((result.backend, result.device), (0.0, 0))
            self._took[(result.backend, result.device)] = (seconds + total, count + 1)

    def expected_s(self, backend: str, device: str = "cpu") -> float:
        seconds, count = self._took.get((backend, device), (0.0, 0))
        return seconds / count if count else usual_s(backend)

    # -- a list of checks, results in order ----------------------------------------------------
    def run_all(self, checks: Sequence[Startable], *, longest_first: bool = True) -> list[Result]:
        """The checks' results in order, up to ``jobs`` of them running at once.

        [Longest First] Started in order of their expected time, longest first: the short
        checks then fill the other cores while the long one runs, instead of the long one
        running alone at the end. ``longest_first=False`` (inline checks): in the order asked.

        [Any Place] A place frees when *any* running check's child ends, not when the one
        asked for next does: waiting on the first started (an ONNX check, say) left a core
        idle while a shorter check beside it had ended (measured on a CNN, 4 backends: the
        trace and script checks started 1.6 s after the torch.export check ended)."""
        jobs = self.jobs
        queue = list(checks)
        if longest_first:
            queue.sort(key=lambda c: self.expected_s(c.name, c.device), reverse=True)
        try:
            while True:
                busy = [c for c in checks if c.state.busy]
                if queue and len(busy) < jobs:
                    queue.pop(0).start()
                    continue
                if not busy:
                    break
                children = {c.child: c for c in busy if c.child is not None}
                if not children:  # inline: a check runs when waited for
                    min(busy, key=lambda c: c.started or 0.0).wait()
                    continue
                for child in runner.wait_any(list(children)):  # past its time limit: its wait() ends it
                    children[child].wait()
            results = [check.wait() for check in checks]
        finally:
            for check in checks:
                check.cancel()
        for result in results:
            self.timed(result)
        return results

    # -- checks started ahead of whoever waits for them ----------------------------------------
    def places(self) -> int:
        """How many more checks may start ahead: one place is the current check's. [Any Place]
        A check started ahead whose child has ended holds none while it waits to be taken."""
        return max(0, self.jobs - 1 - len(self._running_ahead()))

    def children_ahead(self) -> list[runner.Child]:
        """The children of the checks started ahead that still run."""
        return [check.child for check in self._running_ahead() if check.child is not None]

    def _running_ahead(self) -> list[Startable]:
        """Started ahead and running in a child: a held child waits, and an inline check runs
        only when its item takes it, in that item's place."""
        return [check for _, check in self._ahead.values() if check.state.busy and check.child is not None]

    def start_ahead(self, key: str, check: Startable, group: str = "") -> None:
        """``check`` started ahead of whoever takes it (held or running: started by its maker)."""
        check.start(held=True)  # a no-op on one already started
        self._ahead[key] = (group, check)

    def release_ahead(self) -> None:
        """[Held] Let held checks run, in the order they were started ahead, as places allow."""
        for _, check in list(self._ahead.values()):
            if self.places() == 0:
                return
            if check.state is CheckState.HELD:
                check.start()

    def started_ahead(self, key: str) -> bool:
        return key in self._ahead

    def ahead(self, key: str) -> Startable | None:
        """The check started ahead for ``key``, not yet taken (left where it is)."""
        entry = self._ahead.get(key)
        return None if entry is None else entry[1]

    def take(self, key: str) -> Startable | None:
        entry = self._ahead.pop(key, None)
        return None if entry is None else entry[1]

    def cancel(self, group: str | None = None, *, where: Callable[[str], bool] | None = None) -> None:
        """Stop what was started ahead and never taken: all of it, or one group's."""
        for key, (of, check) in list(self._ahead.items()):
            if (group is None or of == group) and (where is None or where(key)):
                check.cancel()
                del self._ahead[key]


__all__ = ["TRANSITIONS", "USUAL_S", "CheckState", "Scheduler", "Startable", "usual_s"]
