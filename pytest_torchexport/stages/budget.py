"""[Memory Budget] Keep drawn sizes within what the machine can hold and the time limit allows.

A drawn call's cost is estimated from the measured recorded call by each dim's growth (a batch
dim linearly, any other squared, as attention scales). The memory cap is an absolute allowance,
never a multiple of the recorded call. See docs/howto-dims.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch

from ..inputs.specs import DEFAULT_DIM, InputPlan, derived
from ..isolation import runner
from ..options import Options, size_limits
from ..reference.eager import EagerCall, nbytes
from ..results.report import Finding, Result
from .shared_search import explicit_draws, grown_draw

#: The least memory the machine-derived allowance gives a check.
MEMORY_FLOOR = 64 * 2**20
#: Share of each check's memory its drawn calls may take; the rest is for what the estimate misses.
MEMORY_SHARE = 0.5
#: Drawn calls held at once: eager's outputs (kept for comparison) and the artifact's.
PEAK_FACTOR = 2.0
#: Share of the time limit the search's calls may take; the rest is for export and shrinking.
TIME_SHARE = 0.5
#: The time limit never cuts a search predicted below this many seconds.
TIME_FLOOR = 30.0
#: Each example runs eager and the artifact.
CALLS_PER_EXAMPLE = 2
#: Calls a check makes besides its examples (export, probes, latency).
FIXED_CALLS = 10


def exponents(plan: InputPlan) -> dict[str, int]:
    """How a dim's growth counts: 1 for a batch dim, 2 for any other (may be attention's)."""
    axes: dict[str, set[int]] = {name: set() for name in plan.dims}
    for leaf in plan.tensors.values():
        for ax, entry in enumerate(leaf.shape):
            if isinstance(entry, str):
                axes.setdefault((derived(entry) or (entry, 0))[0], set()).add(ax)
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
    """The largest size of each dim that keeps every joint draw's growth within ``allowed``.

    Each dim gets an equal share in log space; a dim with less range hands the rest on."""
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
        # Never below the recorded size nor the declared min.
        cap = max(int(ratio * max(examples.get(name, 1), 1) + 1e-9), examples.get(name, 1), d.min)
        if cap < d.max:
            out[name] = cap
    return out


# -- the measured limits --


@dataclasses.dataclass(frozen=True)
class Machine:
    """The memory one check may use, shared among xdist workers and parallel checks."""

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
    lift: str = ""  # the remedy in a few words, for the summary


def explicit_calls(plan: InputPlan, options: Options) -> int:
    """How many explicit examples the search runs before its drawn ones."""
    return len(explicit_draws(plan, grown_draw(plan), options.special_values))


def allowance(options: Options | None, machine: Machine) -> tuple[float, str] | None:
    """The bytes one check's drawn calls may hold, and where that comes from; None if unlimited."""
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
    """The growth that keeps ``PEAK_FACTOR`` drawn calls within the allowance."""
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
    """The growth that keeps a check's calls of the model within ``TIME_SHARE`` of the time limit."""
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
    recorded_inputs: tuple[tuple[Any, ...], dict[str, Any]],
    first: EagerCall,
    result: Result,
    options: Options,
    *,
    machine: Machine | None = None,
) -> tuple[InputPlan, Options]:
    """The plan capped by every limit, and fewer examples if even the recorded size is over time."""
    recorded = max(nbytes(recorded_inputs), nbytes(first.outputs))
    result.extra["eager_s"] = round(first.seconds, 4)
    if first.peak_bytes is not None:
        result.extra["eager_peak_mb"] = round(first.peak_bytes / 2**20, 1)
    if not size_limits():  # TORCHEXPORT_SIZE_LIMITS=off
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
    # Only memory caps sizes, so a dim's declared bounds are always tried; time can only cut examples.
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
    # Lifting only the tightest limit would not lift the caps.
    also = "".join(f" (the {limit.name} limit would also cap them)" for limit in biting[1:])
    result.findings.append(Finding("size_budget", f"{tightest.why}: {'; '.join(parts)}{also}. {tightest.remedy}"))
    # For glue/summary.py's one-line summary.
    result.extra["size_cut"] = cut
    if caps:
        plan = dataclasses.replace(plan, caps=caps)
    return plan, options
