"""The sizes nobody declared: after a pass, each static dim is tried at n-1, n+1 and 2n.

n±1 is where a size baked into the artifact breaks; 2n keeps every factor of n for stride-bound
models. Where eager accepts a size and the artifact fails, the row gets a ``static_size``
finding, never a failure. See docs/howto-dims.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._compat import pytree
from ..inputs.specs import DEFAULT_DIM
from ..inputs.strategies import resize_like
from ..reference.eager import Eager, EagerCall, ModelRaised, nbytes
from ..reference.noise import Float64Reference, judge_noise
from ..results.report import Finding
from . import search_budget
from .check import Check

if TYPE_CHECKING:
    from ..inputs.specs import InputPlan
    from ..options import Options
    from ..results.outcome import Outcome

#: Static dims probed per check, in input order: each costs up to three eager calls.
MAX_DIMS = 4
#: The probe's time: this share of the search's, or at least MIN_S seconds.
SHARE, MIN_S = 0.1, 2.0


@dataclass
class Probe:
    """One static dim, or several of one size varied together: (input index, axis) pairs."""

    axes: list[tuple[int, int]]
    size: int
    tried: list[int] = field(default_factory=list)  # sizes eager accepted
    failed: dict[int, str] = field(default_factory=dict)  # size -> what the artifact did there


def declared(check: Check) -> bool:
    """Whether the user said which dims vary (then the undeclared ones are meant static)."""
    return declared_in(check.options)


def declared_in(options: Options) -> bool:
    return (
        options.dynamic is not None or options.inputs is not None or any(name != DEFAULT_DIM for name in options.dims)
    )


def static_dims(plan: InputPlan) -> list[tuple[int, int, int]]:
    """(input index, axis, recorded size) of every dim the plan keeps static, in input order."""
    return [
        (index, axis, size)
        for index, leaf in sorted(plan.tensors.items())
        for axis, size in enumerate(leaf.shape)
        if isinstance(size, int) and size >= 1
    ]


def eager_runs(
    eager: Eager,
    plan: InputPlan,
    recorded: tuple[Any, Any],
    seconds: float,
    room: int,
    *,
    per_input_byte: float,
    until: float | None = None,
) -> dict[Any, EagerCall | None]:
    """Eager at the sizes ``probe`` tries, once for every backend: (axes, size) -> call, or None if refused.

    Outputs are held while they fit in ``room`` bytes; larger ones are left to the children."""
    runs: dict[Any, EagerCall | None] = {}
    t0 = time.perf_counter()
    deadline = min(t0 + max(MIN_S, SHARE * seconds), math.inf if until is None else until)
    static = static_dims(plan)
    done: set[tuple[int, int]] = set()
    probed = 0

    def run(axes: list[tuple[int, int]], size: int) -> bool:
        nonlocal room, per_input_byte
        accepted = False
        for near in nearby(size):
            if time.perf_counter() > deadline:
                break
            args, kwargs = _resized(recorded, axes, near)
            given = nbytes((args, kwargs))
            if per_input_byte * given > room:
                # Too large to hold: each child runs eager on it itself (_try).
                accepted = True
                continue
            try:
                call = eager(args, kwargs, trace_lines=True)
            except ModelRaised:  # eager takes no such size: the probe skips it
                runs[(tuple(axes), near)] = None
                continue
            accepted = True
            made = nbytes(call.outputs)
            per_input_byte = max(per_input_byte, made / max(1, given))
            if made <= room:
                room -= made
                runs[(tuple(axes), near)] = dataclasses.replace(call, inputs_after=((), {}))
        return accepted

    for index, axis, size in static:
        if (index, axis) in done or probed >= MAX_DIMS or time.perf_counter() > deadline:
            continue
        probed += 1
        if not run([(index, axis)], size):
            together = [(i, a) for i, a, s in static if s == size and (i, a) not in done]
            if len(together) > 1:
                run(together, size)
                done.update(together)
        done.add((index, axis))
    return runs


def nearby(size: int) -> list[int]:
    return [s for s in dict.fromkeys((size - 1, size + 1, 2 * size)) if s >= 1 and s != size]


class StaticSizes:
    """The optional stage (``stages/optional.py``): after a pass, the static dims tried at nearby
    sizes, where the search budget covers it."""

    name = "static_sizes"

    def prepare(self, backend: str, spec: object, options: Options) -> None:
        pass

    def begin(self, check: Check) -> None:
        pass

    def join(self, check: Check, verdict: Outcome | None) -> None:
        passed = verdict is not None and verdict.status == "pass"
        if passed and search_budget.affords(check.clock, "static_size probes"):
            probe(check, until=search_budget.until(check.clock))


def probe(check: Check, *, until: float | None = None) -> None:
    """Add the ``static_size`` findings after a pass; never changes the verdict."""
    if declared(check) or check.mutates_state or check.artifacts is None:
        return
    t0 = time.perf_counter()
    static = static_dims(check.plan)
    done: set[tuple[int, int]] = set()
    probed = 0
    share = max(MIN_S, SHARE * check.result.timings.get("search_s", 0.0))
    deadline = min(t0 + share, math.inf if until is None else until)
    for index, axis, size in static:
        if (index, axis) in done or probed >= MAX_DIMS or time.perf_counter() > deadline:
            continue
        probed += 1
        found = _try(check, Probe([(index, axis)], size), deadline)
        if not found.tried:
            together = [(i, a) for i, a, s in static if s == size and (i, a) not in done]
            if len(together) > 1:
                found = _try(check, Probe(together, size), deadline)
                done.update(together)
        done.add((index, axis))
        if found.failed:
            check.result.findings.append(_finding(check, found))
    check.result.timings["static_size_s"] = time.perf_counter() - t0


def _inputs(check: Check, axes: list[tuple[int, int]], size: int) -> tuple[Any, Any]:
    return _resized((check.recorded.args, check.recorded.kwargs), axes, size)


def _resized(recorded: tuple[Any, Any], axes: list[tuple[int, int]], size: int) -> tuple[Any, Any]:
    leaves, spec = pytree.tree_flatten(recorded)
    for index, axis in axes:
        tensor = leaves[index]
        shape = list(tensor.shape)
        shape[axis] = size
        leaves[index] = resize_like(tensor, shape, edge=True)  # not a batch dim: keep its rows in order
    return pytree.tree_unflatten(leaves, spec)


def _try(check: Check, found: Probe, deadline: float) -> Probe:
    for size in nearby(found.size):
        if time.perf_counter() > deadline:
            break
        args, kwargs = _inputs(check, found.axes, size)
        shared = getattr(check.shared, "sizes", {})
        if (tuple(found.axes), size) in shared:  # eager already ran it in the test's process
            held = shared[(tuple(found.axes), size)]
            if held is None:
                continue
            expected = held.outputs
        else:
            try:
                expected = check.eager(args, kwargs).outputs
            except ModelRaised:  # eager takes no such size: nothing to learn there
                continue
        found.tried.append(size)
        try:
            actual, _ = check.run(check.artifacts.runnable, args, kwargs)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the artifact refuses a size eager takes
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            # TorchScript's first line only says that an operation failed: its last says why.
            line = lines[-1] if lines and lines[0].startswith("The following operation failed") else (lines or [""])[0]
            why = line.removeprefix(f"{type(exc).__name__}: ")[:120]
            found.failed[size] = f"raises {type(exc).__name__}" + (f" ({why})" if why else "")
            continue
        cmp = check.compare(expected, actual)
        if not cmp.ok and not _rounding(check, (tuple(found.axes), size), (args, kwargs), (expected, actual, cmp)):
            found.failed[size] = (
                f"differs (max abs err {cmp.max_abs:.3g})" if cmp.problem is None else f"differs ({cmp.problem})"
            )
    return found


def _rounding(check: Check, key: Any, inputs: tuple[Any, Any], judged: tuple[Any, Any, Any]) -> bool:
    """[Noise Oracle] Under default tolerances, a difference as close to float64 as eager's is rounding."""
    if check.rtol is not None or check.atol is not None or check.options.compare is not None:
        return False
    expected, actual, cmp = judged
    reference = Float64Reference(check.eager)(key, *inputs)
    return reference is not None and judge_noise(cmp, expected, actual, reference).rounding


def _finding(check: Check, found: Probe) -> Finding:
    plan = check.plan
    names = [f"{plan.tensors[i].name} dim {a}" for i, a in found.axes]
    dim = f"{plan.tensors[found.axes[0][0]].name}_{found.axes[0][1]}"
    dynamic: dict[str, dict[int, str]] = {}
    for index, axis in found.axes:
        leaf = plan.tensors[index]
        axes = {ax: entry for ax, entry in enumerate(leaf.shape) if isinstance(entry, str) and "+" not in entry}
        dynamic.setdefault(leaf.name, axes)[axis] = dim
    span = (min(found.tried + [found.size]), max(found.tried + [found.size]))
    dynamic_text = (
        "{"
        + ", ".join(
            f'"{name}": {{' + ", ".join(f'{ax}: "{entry}"' for ax, entry in sorted(axes.items())) + "}"
            for name, axes in dynamic.items()
        )
        + "}"
    )
    dims_text = f'{{"{dim}": {span}}}'
    by_what: dict[str, list[int]] = {}
    for size, what in sorted(found.failed.items()):
        by_what.setdefault(what, []).append(size)
    failing = "; ".join(f"at {', '.join(map(str, sizes))} it {what}" for what, sizes in by_what.items())
    passing = [s for s in found.tried if s not in found.failed]
    also = f"; at {', '.join(map(str, passing))} it matches" if passing else ""
    return Finding(
        "static_size",
        f"{' and '.join(names)} (recorded at {found.size}) {'are' if len(names) > 1 else 'is'} not declared dynamic; tried at "
        f"{', '.join(map(str, found.tried))}, where eager runs, the {check.name} artifact fails: {failing}{also}. "
        f"Other sizes are not checked; if callers send them, make them a checked requirement: "
        f"dynamic={dynamic_text}, dims={dims_text}",
        where=", ".join(names),
    )


__all__ = ["MAX_DIMS", "declared", "nearby", "probe"]
