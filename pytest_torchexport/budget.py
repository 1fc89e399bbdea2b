"""[Memory Budget] Drawn sizes stay within a few times the recorded call's memory.

A module recorded with a 268 MB output, searched with batches up to 16x the recorded
one, drove one check to 24 GB resident. The budget is derived from the recorded call:
its bytes (the larger of all tensor inputs and all tensor outputs, from the first eager
run) times ``MEMORY_FACTOR``, but never below ``MEMORY_FLOOR`` (a small model keeps its
whole search range: at a few MB nothing is at risk, and its verdicts must not move).

A drawn input's bytes are estimated from the recorded ones by the growth of each dynamic
dim, ``drawn / recorded``: a batch dim (``batch``, or any dim only at axis 0) counts once,
since outputs and activations grow linearly with it; every other dim counts squared,
since it may be a sequence that attention scales quadratically (a conv's spatial dims
are then held tighter than they need be, which costs range, not memory). Each dim gets
an equal share of the allowed growth (in log space; a dim whose own range is smaller
hands the rest to the others), so every joint draw is within budget.

The budget also clips the user's ``dims=``: the memory at risk is the same, and a
``size_budget`` finding says what was clipped and how to get the full range (record the
call at the size to be checked: the budget scales with it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.utils._pytree as pytree

from .report import Finding, Result
from .specs import DEFAULT_DIM, InputPlan

#: A drawn input may cost this many times the recorded call. 4 leaves the search sizes
#: that break exports (2x+1, 3x the recorded size for one batch dim) while the check's
#: peak stays a small multiple of what the user's own test already holds: eager's and the
#: artifact's outputs at 4x, the recorded call's, and chunked comparison on top.
MEMORY_FACTOR = 4.0
#: Below this many bytes a drawn call is never clipped (64 MiB: a model this small could
#: draw every size of its range ten processes at a time without troubling a CI runner).
MEMORY_FLOOR = 64 * 2**20
#: Set to False to measure without the budget (benchmarks/bench_memory.py --no-budget).
ENABLED = True


def nbytes(tree: Any) -> int:
    """Bytes of every tensor in a nested value (inputs or outputs)."""
    leaves = pytree.tree_leaves(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


def exponents(plan: InputPlan) -> dict[str, int]:
    """How a dim's growth counts: 1 for a batch dim, 2 for any other (may be attention's)."""
    axes: dict[str, set[int]] = {name: set() for name in plan.dims}
    for leaf in plan.tensors.values():
        for ax, entry in enumerate(leaf.shape):
            if isinstance(entry, str):
                axes.setdefault(entry, set()).add(ax)
    return {name: 1 if name == DEFAULT_DIM or found == {0} else 2 for name, found in axes.items()}


def size_caps(plan: InputPlan, recorded_bytes: int) -> dict[str, int]:
    """The largest size of each dynamic dim that keeps every drawn call within the budget."""
    if not ENABLED or recorded_bytes <= 0:
        return {}
    allowed = max(MEMORY_FLOOR, MEMORY_FACTOR * recorded_bytes) / recorded_bytes
    examples = plan.example_sizes()
    weight = exponents(plan)
    # Each dim's widest growth: its declared max over its recorded size.
    growth = {
        name: d.max / max(examples.get(name, 1), 1) for name, d in plan.dims.items() if name in examples and d.max > 1
    }
    if math.prod(g ** weight[n] for n, g in growth.items()) <= allowed:
        return {}
    caps: dict[str, float] = {}
    left = math.log(allowed)
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


def apply(plan: InputPlan, recorded_inputs: Any, recorded_outputs: Any, result: Result) -> InputPlan:
    """The plan with its draws capped by the budget, and a finding when a cap bites."""
    recorded = max(nbytes(recorded_inputs), nbytes(recorded_outputs))
    caps = size_caps(plan, recorded)
    result.extra["memory_budget_mb"] = round(max(MEMORY_FLOOR, MEMORY_FACTOR * recorded) / 2**20, 1)
    if not caps:
        return plan
    result.extra["size_caps"] = dict(caps)
    clipped = ", ".join(f"{n} to {c} (of {plan.dims[n].max})" for n, c in sorted(caps.items()))
    result.findings.append(
        Finding(
            "size_budget",
            f"the recorded call holds {recorded / 2**20:.0f} MB of tensors, so drawn sizes were capped at "
            f"{MEMORY_FACTOR:g}x its memory: {clipped}. Record the call at the largest size to be checked to search "
            "beyond it (the budget scales with the recorded call)",
        )
    )
    return dataclasses.replace(plan, caps=caps)
