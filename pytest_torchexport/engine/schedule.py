"""[Side By Side] The one scheduler of checks, shared by ``check()``, the fixture and the plugin.

Each isolated check runs in a single-threaded child, so up to ``jobs`` checks run at once,
longest first. ``start_ahead`` starts a test's next items early; [Held] a held check takes no
place until ``release_ahead``. See docs/howto-isolation.md.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol

from ..isolation import runner
from ..results.report import Result

#: A backend's typical check time in seconds, used to order checks until one has been timed.
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
    """Where one check is in its life; only ``PendingCheck._to`` moves it."""

    PENDING = "pending"
    HELD = "held"  # [Held] forked, waiting to be let go; holds no place
    RUNNING = "running"  # inline: runs when waited for
    SETTLED = "settled"  # its row is known without a run
    FINISHED = "finished"  # its row not yet read
    DONE = "done"
    CANCELLED = "cancelled"  # stopped unwaited

    @property
    def busy(self) -> bool:
        """Holds a place."""
        return self is CheckState.RUNNING

    @property
    def over(self) -> bool:
        """Nothing of it runs any more."""
        return self in (CheckState.SETTLED, CheckState.FINISHED, CheckState.DONE, CheckState.CANCELLED)


#: The moves ``PendingCheck._to`` allows; any other is an engine bug.
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
    """All the scheduler reads of a check."""

    @property
    def name(self) -> str: ...  # the backend
    @property
    def device(self) -> str: ...
    @property
    def state(self) -> CheckState: ...
    @property
    def started(self) -> float | None: ...  # ``time.monotonic()``
    @property
    def child(self) -> runner.Child | None: ...

    def start(self, *, held: bool = False) -> None: ...
    def wait(self) -> Result: ...
    def cancel(self) -> None: ...


class Scheduler:
    """Runs up to ``jobs`` checks at once, longest first."""

    def __init__(self, jobs: int | None = None) -> None:
        self._jobs = jobs
        #: key -> (group, check): started ahead, not yet taken
        self._ahead: dict[str, tuple[str, Startable]] = {}
        self._took: dict[tuple[str, str], tuple[float, int]] = {}  # -> (seconds, checks)

    @property
    def jobs(self) -> int:
        return self._jobs or runner.parallel_checks()

    # -- what the checks took here
    def timed(self, result: Result) -> None:
        """Record one check's time, to order the next ones."""
        total = result.timings.get("total_s")
        if total is not None and not result.extra.get("cached"):  # a reused row did not run
            seconds, count = self._took.get((result.backend, result.device), (0.0, 0))
            self._took[(result.backend, result.device)] = (seconds + total, count + 1)

    def expected_s(self, backend: str, device: str = "cpu") -> float:
        seconds, count = self._took.get((backend, device), (0.0, 0))
        return seconds / count if count else usual_s(backend)

    # -- a list of checks, results in order
    def run_all(self, checks: Sequence[Startable], *, longest_first: bool = True) -> list[Result]:
        """The checks' results in order, up to ``jobs`` of them running at once.

        The longest start first, so the short ones fill the other cores meanwhile instead of
        the long one running alone at the end. A place frees when *any* child ends, not just
        the one asked for next, so no core idles behind a slow check."""
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

    # -- checks started ahead of whoever waits for them
    def places(self) -> int:
        """How many more checks may start ahead; one place is the current check's."""
        return max(0, self.jobs - 1 - len(self._running_ahead()))

    def children_ahead(self) -> list[runner.Child]:
        """The children of checks started ahead that still run."""
        return [check.child for check in self._running_ahead() if check.child is not None]

    def _running_ahead(self) -> list[Startable]:
        """Started ahead and running in a child (an inline check runs in its item's place)."""
        return [check for _, check in self._ahead.values() if check.state.busy and check.child is not None]

    def start_ahead(self, key: str, check: Startable, group: str = "") -> None:
        """Start ``check`` (held) ahead of whoever takes it."""
        check.start(held=True)  # a no-op on one already started
        self._ahead[key] = (group, check)
        runner.THIS.on_free = self.release_ahead  # a child that ends anywhere lets the next one go

    def release_ahead(self) -> None:
        """[Held] Let held checks run, in the order they were started ahead, as places allow."""
        for _, check in list(self._ahead.values()):
            if self.places() == 0:
                return
            if check.state is CheckState.HELD:
                check.start()

    def started_ahead(self, key: str) -> bool:
        return key in self._ahead

    def ahead_in(self, group: str) -> list[Startable]:
        """The checks of ``group`` started ahead and not yet taken."""
        return [check for of, check in self._ahead.values() if of == group]

    def ahead(self, key: str) -> Startable | None:
        """The check started ahead for ``key``, not taken."""
        entry = self._ahead.get(key)
        return None if entry is None else entry[1]

    def take(self, key: str) -> Startable | None:
        entry = self._ahead.pop(key, None)
        return None if entry is None else entry[1]

    def cancel(self, group: str | None = None, *, where: Callable[[str], bool] | None = None) -> None:
        """Stop what was started ahead and never taken, or one group's."""
        for key, (of, check) in list(self._ahead.items()):
            if (group is None or of == group) and (where is None or where(key)):
                check.cancel()
                del self._ahead[key]
        if not self._ahead and runner.THIS.on_free == self.release_ahead:
            runner.THIS.on_free = None


__all__ = ["TRANSITIONS", "USUAL_S", "CheckState", "Scheduler", "Startable", "usual_s"]
