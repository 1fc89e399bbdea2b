"""Latency at the recorded input: eager and the artifact, a few warm calls each, interleaved.

Interleaving puts both under the same machine load, and the median ignores a call a garbage
collection lands on. It runs after the search, so lazy initialisation is already done.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import torch

from .._compat import quiet_torch
from ..backends.base import A, Backend
from ..inputs.strategies import summarize
from ..isolation import runner
from ..reference.eager import Eager, fresh
from . import search_budget
from .check import Check

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..options import Options
    from ..results.outcome import Outcome

    #: A call of one side: ``fn(args, kwargs)``, its outputs unused.
    Call = Callable[[tuple[Any, ...], dict[str, Any]], object]

#: Timed calls of each side; fewer when one call is slow (see ``BUDGET_S``).
CALLS = 5
#: Time to spend on the timed calls of one check, beyond the warm-up.
BUDGET_S = 0.1


class Latency:
    """The optional stage (``stages/optional.py``): eager and the artifact timed at the recorded
    input, whatever the verdict, where the search budget covers it."""

    name = "latency"

    def prepare(self, backend: str, spec: object, options: Options) -> None:
        pass

    def begin(self, check: Check) -> None:
        pass

    def join(self, check: Check, verdict: Outcome | None) -> None:
        if verdict is None:
            return
        runner.stage(check.result, "search")  # a time limit hit while timing is reported as the search's
        if search_budget.affords(check.clock, "latency"):
            record(check)


def record(check: Check) -> None:
    """Put ``latency_ms`` {"eager", "artifact", "input"} on the check's result; never changes a verdict."""
    artifact = check.artifacts.runnable if check.artifacts is not None else None
    if artifact is None:
        return
    args, kwargs, eager = check.recorded.args, check.recorded.kwargs, check.eager
    t0 = time.perf_counter()
    shared_ms = getattr(check.shared, "eager_ms", None)
    try:
        if shared_ms is not None:
            # [One Search] Eager was timed once for every backend; time only the artifact.
            artifact_ms = time_calls(lambda a, k: check.backend.run(artifact, a, k), eager.device, args, kwargs)
            timings = None if artifact_ms is None else (shared_ms, artifact_ms)
        else:
            timings = measure(check.backend, artifact, eager, args, kwargs)
    except Exception:  # noqa: BLE001 - a timing that fails is omitted, never a verdict
        return
    finally:
        eager.restore()
    if timings is None:
        return
    summary = summarize(args, kwargs, check.plan)
    described = "; ".join(
        f"{name}={e['value']!r}" if "value" in e else f"{name}: {e['dtype']}{e['shape']}" for name, e in summary.items()
    )
    eager_ms, artifact_ms = timings
    check.result.extra["latency_ms"] = {
        "eager": round(eager_ms, 4),
        "artifact": round(artifact_ms, 4),
        "input": described,
    }
    check.result.timings["latency_s"] = time.perf_counter() - t0


def time_calls(fn: Call, device: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
    """Median milliseconds of ``fn(args, kwargs)`` after one warm-up."""
    with torch.no_grad(), quiet_torch():
        warm = _timed(fn, device, args, kwargs)
        if warm > BUDGET_S / 2:
            return warm * 1e3
        rounds = CALLS if warm * CALLS <= BUDGET_S / 2 else max(1, int(BUDGET_S / 2 / max(warm, 1e-9)))
        return statistics.median(_timed(fn, device, args, kwargs) for _ in range(rounds)) * 1e3


def _timed(fn: Call, device: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """Seconds of one call on fresh copies of the inputs, synchronised on CUDA."""
    a, k = fresh(args, kwargs)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    if sync:
        sync()
    start = time.perf_counter()
    fn(a, k)
    if sync:
        sync()
    return time.perf_counter() - start


def measure(
    backend: Backend[A], artifact: A, eager: Eager, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[float, float] | None:
    """Median milliseconds per call (eager, artifact) at ``args``/``kwargs``."""
    module = eager.module

    def timed(fn: Call) -> float:
        return _timed(fn, eager.device, args, kwargs)

    def run_eager(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        return module(*a, **k)

    # Not ``Check.run``: its fresh copies and RNG fork would be timed with the artifact.
    def run_artifact(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        return backend.run(artifact, a, k)

    eager_s: list[float] = []
    artifact_s: list[float] = []
    with torch.no_grad(), quiet_torch():
        # One warm-up is enough: the search already ran this input through both.
        second = timed(run_eager), timed(run_artifact)
        warm = sum(second)
        if warm > BUDGET_S:
            # A slow call has nothing left to warm: the warm-up is the measurement.
            return second[0] * 1e3, second[1] * 1e3
        rounds = CALLS if warm * CALLS <= BUDGET_S else max(1, int(BUDGET_S / max(warm, 1e-9)))
        for _ in range(rounds):
            eager_s.append(timed(run_eager))
            artifact_s.append(timed(run_artifact))
    return statistics.median(eager_s) * 1e3, statistics.median(artifact_s) * 1e3
