"""[Memory Budget] Drawn sizes stay within what the machine can hold and the time limit allows.

Every declared dim's min and max are tried on every run unless the machine cannot hold
them: the one memory cap is an absolute allowance, bytes from the machine's free memory
(``MEMORY_SHARE`` of ``MemAvailable`` / xdist workers / checks side by side,
``runner.parallel_checks()``, never below ``MEMORY_FLOOR``) or from
``--torchexport-memory``, never a multiple of what the recorded call used. An earlier
budget held a drawn call to 4x the recorded one's bytes and peak: a 24 KB image with
``dims={"h": (16, 128), "w": (16, 128)}`` was searched up to 90, its declared 128 never
tried, because "the recorded call's eager run peaked at 0 MB".

The recorded call tells what a drawn call will *cost*, not what it may cost. Its first
eager run (it runs anyway) is measured (``eager.Footprint``: its peak memory growth and
its wall time), and its bytes in and out are counted; the larger of the two is one call's
memory at the recorded size, since a model may hold far more than it takes and returns (a
vector quantizer recorded on a 2 MB input built a ~4 GB distance matrix at batch 1, and a
forked check drawing batch 16 grew past 17 GB). Two limits follow:

- **memory**: a check holds about ``PEAK_FACTOR`` drawn calls (eager's outputs while the
  artifact runs its own), each the recorded call's memory grown as below; that must stay
  within the allowance;
- **time**: the check's calls of the model (``options.examples`` drawn ones, grown likewise,
  plus the explicit probes, each through eager and the artifact, plus ``FIXED_CALLS``) at
  the measured time must stay within ``TIME_SHARE`` of the check's time limit, never below
  ``TIME_FLOOR`` seconds. Where even the recorded size does not fit, the number of examples
  is cut too: a check that runs into its time limit gives no verdict at all.

A drawn input's cost is estimated from the recorded one by the growth of each dynamic
dim, ``drawn / recorded``: a batch dim (``batch``, or any dim only at axis 0) counts once,
since outputs and activations grow linearly with it; every other dim counts squared,
since it may be a sequence that attention scales quadratically (a conv's spatial dims
are then held tighter than they need be, which costs range, not memory). The tightest of
the limits is the growth allowed; each dim gets an equal share of it (in log
space; a dim whose own range is smaller hands the rest to the others), so every joint
draw is within it.

A cut clips the declared ``dims=`` too (the memory at risk is the same): the row's
``size_budget`` finding says what was measured, which limit bit, what was clipped and
how to lift it, and the terminal summary says it in one line (glue/summary.py).
``--torchexport-memory=off`` lifts the memory cap, ``TORCHEXPORT_SIZE_LIMITS=off`` in the
environment every cap.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch

from ..inputs.specs import DEFAULT_DIM, InputPlan
from ..isolation import runner
from ..options import Options, environment, switched_off
from ..reference.eager import EagerCall, nbytes
from ..results.report import Finding, Result
from .shared_search import explicit_draws, grown_draw

#: The least memory the machine-derived allowance gives a check (64 MiB): a model this small could
#: draw every size of its range ten processes at a time without troubling a CI runner.
MEMORY_FLOOR = 64 * 2**20
#: Without ``--torchexport-memory``, a check's drawn calls may take this share of the memory each
#: check has: the rest is for what the estimate misses (allocator slack, the noise oracle's float64 run).
MEMORY_SHARE = 0.5
#: A check holds about this many drawn calls' peaks at once: eager's outputs (kept for the
#: comparison) while the artifact runs, and the artifact's own outputs.
PEAK_FACTOR = 2.0
#: The search's calls may take this share of the check's time limit: the rest is for the
#: export, the load, the standalone step and shrinking a failure.
TIME_SHARE = 0.5
#: The time limit never bounds a search predicted to take less than this (seconds), so a
#: small model under a short ``timeout=`` keeps its range.
TIME_FLOOR = 30.0
#: Each example runs eager and the artifact (the in-memory one too when the loaded one fails).
CALLS_PER_EXAMPLE = 2
#: Calls of the model a check makes besides its examples, at the recorded size: the export
#: (tracing runs it), the determinism probe, latency's warm and timed calls, the standalone step.
FIXED_CALLS = 10
#: ``TORCHEXPORT_SIZE_LIMITS=off`` (earlier ``TORCHEXPORT_SIZE_BUDGET``, still read) lifts every limit, the time limit too: the whole declared range is drawn,
#: whatever it costs (a machine known to hold it; benchmarks/bench_memory.py --no-budget
#: measures what the budget saves). What was measured is still recorded on the row.
OFF_ENV = "TORCHEXPORT_SIZE_LIMITS"


def enabled() -> bool:
    """Whether drawn sizes are bounded here (``OFF_ENV``), read at each check, never cached."""
    return not switched_off(environment(OFF_ENV))


def exponents(plan: InputPlan) -> dict[str, int]:
    """How a dim's growth counts: 1 for a batch dim, 2 for any other (may be attention's)."""
    axes: dict[str, set[int]] = {name: set() for name in plan.dims}
    for leaf in plan.tensors.values():
        for ax, entry in enumerate(leaf.shape):
            if isinstance(entry, str):
                axes.setdefault(entry, set()).add(ax)
    return {name: 1 if name == DEFAULT_DIM or found == {0} else 2 for name, found in axes.items()}


def _dim_growth(plan: InputPlan) -> dict[str, float]:
    """Each dim's widest growth: its declared max over its recorded size."""
    examples = plan.example_sizes()
    return {
        name: d.max / max(examples.get(name, 1), 1) for name, d in plan.dims.items() if name in examples and d.max > 1
    }


def full_growth(plan: InputPlan) -> float:
    """How much the costliest draw of the declared range costs over the recorded call."""
    weight = exponents(plan)
    return math.prod(g ** weight[n] for n, g in _dim_growth(plan).items())


def growth_caps(plan: InputPlan, allowed: float) -> dict[str, int]:
    """The largest size of each dynamic dim that keeps every joint draw's growth (the product
    of each dim's ``drawn / recorded`` to its exponent) within ``allowed``."""
    growth = _dim_growth(plan)
    weight = exponents(plan)
    if math.prod(g ** weight[n] for n, g in growth.items()) <= allowed:
        return {}
    examples = plan.example_sizes()
    caps: dict[str, float] = {}
    left = math.log(max(allowed, 1.0))
    pending = dict(growth)
    while pending:
        share = left / sum(weight[n] for n in pending)
        small = {n: g for n, g in pending.items() if math.log(max(g, 1.0)) <= share}
        if not small:
            for n in pending:
                caps[n] = math.exp(share)
            break
        for n, g in small.items():
            left -= weight[n] * math.log(max(g, 1.0))
            del pending[n]
    out = {}
    for name, ratio in caps.items():
        d = plan.dims[name]
        # Never below the recorded size (the budget is relative to it) nor the declared min.
        cap = max(int(ratio * max(examples.get(name, 1), 1) + 1e-9), examples.get(name, 1), d.min)
        if cap < d.max:
            out[name] = cap
    return out


# -- the measured limits ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Machine:
    """The memory one check may use here: what the machine has, shared among the checks
    that run at once (xdist workers, and checks side by side in each)."""

    available: int | None  # bytes (MemAvailable; free memory on a CUDA device); None: unknown
    workers: int = 1
    checks: int = 1

    @property
    def per_check(self) -> float | None:
        return None if self.available is None else self.available / self.workers / self.checks

    @classmethod
    def here(cls, device: str = "cpu") -> Machine:
        workers = max(1, _int(os.environ.get("PYTEST_XDIST_WORKER_COUNT"), 1))
        checks = runner.parallel_checks()
        if device.startswith("cuda") and torch.cuda.is_available():
            return cls(torch.cuda.mem_get_info(torch.device(device))[0], workers, checks)
        return cls(_mem_available(), workers, checks)

    def describe(self) -> str:
        gb = 2**30
        return (
            f"{(self.per_check or 0) / gb:.1f} GB each check has here ({(self.available or 0) / gb:.1f} GB "
            f"available / {self.workers} xdist worker{'s' * (self.workers != 1)} / {self.checks} "
            f"check{'s' * (self.checks != 1)} side by side)"
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _mem_available() -> int | None:
    return runner.available_memory()


@dataclasses.dataclass(frozen=True)
class Limit:
    """One bound on the drawn calls: the growth over the recorded call it allows, and why."""

    name: str  # "bytes", "peak", "memory" or "time"
    growth: float
    why: str
    remedy: str
    lift: str = ""  # the remedy in a few words, for the terminal summary's line


def explicit_calls(plan: InputPlan, options: Options) -> int:
    """The explicit examples the search runs before its drawn ones (shared_search.explicit_draws): the
    recorded call, each declared dim's min and max, the export example, the small probes, the special values."""
    return len(explicit_draws(plan, grown_draw(plan), options.special_values))


def allowance(options: Options | None, machine: Machine) -> tuple[float, str] | None:
    """The bytes one check's drawn calls may hold, and where the number comes from: the
    ``memory`` option where given, else ``MEMORY_SHARE`` of the memory each check has here
    (never below ``MEMORY_FLOOR``); None where neither is known or the option is ``off``."""
    given = options.memory if options is not None else None
    if given is not None:
        if math.isinf(given):
            return None
        return given, f"the memory allowance of {_size(given)} (--torchexport-memory)"
    if machine.per_check is None:
        return None
    allowed = max(MEMORY_FLOOR, MEMORY_SHARE * machine.per_check)
    return allowed, f"the memory allowance of {_size(allowed)}, {MEMORY_SHARE:.0%} of the {machine.describe()}"


def _size(nbytes: float) -> str:
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GB"
    return f"{nbytes / 2**20:.0f} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KB"


def memory_limit(call_bytes: int | None, allowed: tuple[float, str] | None, measured: bool = True) -> Limit | None:
    """The growth that keeps ``PEAK_FACTOR`` drawn calls, each ``call_bytes`` at the recorded
    size grown, within the allowance; None where nothing was measured or nothing is allowed."""
    if not call_bytes or allowed is None:
        return None
    limit, where = allowed
    how = "peaked at" if measured else "holds"
    return Limit(
        "memory",
        limit / (PEAK_FACTOR * call_bytes),
        f"the recorded call {how} {_size(call_bytes)} ({'measured' if measured else 'its tensors in and out'}) "
        f"and a check holds about {PEAK_FACTOR:g} drawn calls, so the drawn sizes were held within {where}",
        "--torchexport-memory=SIZE (or off) to allow more; fewer checks at once (TORCHEXPORT_JOBS=1, fewer -n "
        "workers) leaves each more of this machine",
        "--torchexport-memory=SIZE allows more",
    )


def time_limit(seconds: float, plan: InputPlan, options: Options) -> Limit | None:
    """The growth that keeps a check's calls of the model within ``TIME_SHARE`` of the time
    limit: ``FIXED_CALLS`` and the explicit examples at the recorded size, the drawn ones grown."""
    if seconds <= 0:
        return None
    explicit = explicit_calls(plan, options)
    fixed = FIXED_CALLS + CALLS_PER_EXAMPLE * explicit
    growth = (_time_allowance(options) / seconds - fixed) / (CALLS_PER_EXAMPLE * options.examples)
    calls = fixed + CALLS_PER_EXAMPLE * options.examples
    return Limit(
        "time",
        growth,
        f"the recorded call's eager run took {seconds:.2f} s (measured), so the check's {calls} calls of the model "
        f"({options.examples} examples and {explicit} probes through eager and the artifact, and {FIXED_CALLS} "
        f"more) were held within {TIME_SHARE:.0%} of the {options.timeout:g} s time limit",
        "Raise timeout= to search further",
        "a larger timeout= allows more",
    )


def examples_within(seconds: float, plan: InputPlan, options: Options) -> int:
    """The examples that fit the time allowance at the recorded size (at least 1)."""
    fit = _time_allowance(options) / seconds - FIXED_CALLS - CALLS_PER_EXAMPLE * explicit_calls(plan, options)
    return max(1, min(options.examples, int(fit / CALLS_PER_EXAMPLE)))


def _time_allowance(options: Options) -> float:
    return max(TIME_FLOOR, TIME_SHARE * options.timeout)


def limits(
    plan: InputPlan,
    recorded_bytes: int,
    options: Options | None = None,
    first: EagerCall | None = None,
    machine: Machine | None = None,
) -> list[Limit]:
    """Every limit on the growth of the drawn calls; the tightest one rules."""
    machine = machine or Machine.here()
    peak = first.peak_bytes if first is not None else None
    call_bytes = max(peak or 0, recorded_bytes)
    found = [
        memory_limit(
            call_bytes, allowance(options, machine), measured=peak is not None and peak != 0 and peak >= recorded_bytes
        )
    ]
    if first is not None and options is not None:
        found.append(time_limit(first.seconds, plan, options))
    return [limit for limit in found if limit is not None]


def bound(
    plan: InputPlan,
    recorded_inputs: Any,
    first: EagerCall,
    result: Result,
    options: Options,
    *,
    machine: Machine | None = None,
) -> tuple[InputPlan, Options]:
    """The plan with its draws capped by every limit (and the options with fewer examples
    where even the recorded size is over the time limit); a ``size_budget`` finding for
    each limit that bites, saying what was measured."""
    recorded = max(nbytes(recorded_inputs), nbytes(first.outputs))
    result.extra["eager_s"] = round(first.seconds, 4)
    if first.peak_bytes is not None:
        result.extra["eager_peak_mb"] = round(first.peak_bytes / 2**20, 1)
    if not enabled():
        return plan, options
    if machine is None:
        machine = Machine.here(result.device)
    found = limits(plan, recorded, options, first, machine)
    if machine.per_check is not None:
        result.extra["memory_per_check_mb"] = round(machine.per_check / 2**20)
    allowed = allowance(options, machine)
    if allowed is not None:
        result.extra["memory_budget_mb"] = round(allowed[0] / 2**20, 1)
    return _settle(plan, found, result, options, first)  # type: ignore[return-value]  # options is an Options here, so is _settle's


def _settle(
    plan: InputPlan,
    found: list[Limit],
    result: Result,
    options: Options | None,
    first: EagerCall | None,
) -> tuple[InputPlan, Options | None]:
    whole = full_growth(plan)
    biting = sorted((limit for limit in found if limit.growth < whole), key=lambda limit: limit.growth)
    # Sizes are capped by memory alone: a time estimate never keeps a dim's declared bounds from being
    # tried (the search budget orders what runs first); it can only cut the drawn examples.
    sizing = [limit for limit in biting if limit.name != "time"]
    caps = growth_caps(plan, min((limit.growth for limit in sizing), default=whole))
    fewer = None
    if options is not None and first is not None and any(x.name == "time" and x.growth < 1 for x in biting):
        fewer = examples_within(first.seconds, plan, options)
        fewer = fewer if fewer < options.examples else None
    if not caps and fewer is None:
        return plan, options
    tightest = sizing[0] if caps else next(x for x in biting if x.name == "time")
    biting = sizing if caps else [tightest]  # what the finding says caps the sizes
    result.extra["budget_limit"] = tightest.name
    parts = []
    if caps:
        result.extra["size_caps"] = dict(caps)
        parts.append(", ".join(f"{n} to {c} (of {plan.dims[n].max})" for n, c in sorted(caps.items())))
    cut: dict[str, Any] = {
        "limit": tightest.name,
        "dims": {n: [c, plan.dims[n].max] for n, c in sorted(caps.items())},
        "lift": tightest.lift,
    }
    if fewer is not None:
        assert options is not None
        cut["examples"] = [fewer, options.examples]
        result.extra["examples_cap"] = fewer
        parts.append(
            f"examples cut to {fewer} (of {options.examples}), since even at the recorded size the "
            f"check's calls would not fit its {options.timeout:g} s time limit"
        )
        options = dataclasses.replace(options, examples=fewer)
    # The other limits that bite matter too: lifting the tightest alone would not lift the caps.
    also = "".join(f" (the {limit.name} limit would also cap them)" for limit in biting[1:])
    result.findings.append(Finding("size_budget", f"{tightest.why}: {'; '.join(parts)}{also}. {tightest.remedy}"))
    # What the terminal summary says in one line (glue/summary.py), from these numbers, not the finding's text.
    result.extra["size_cut"] = cut
    if caps:
        plan = dataclasses.replace(plan, caps=caps)
    return plan, options
