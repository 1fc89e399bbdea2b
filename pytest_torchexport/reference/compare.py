"""Compare an artifact's outputs with eager ones: nested outputs become (path, leaf) pairs.

Structure, shape and dtype are checked before values, as ``torch.testing`` does; values
use ``torch.isclose`` (``assert_close``'s own primitive, NaN equal to NaN) with one
per-dtype tolerance table, so the numbers here mean what users know from
``assert_close``. This module never exports anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import pytree

from .leaf_diff import CHUNK as CHUNK  # noise.py's chunks are these
from .leaf_diff import LeafDiff, dtype_name, leaf_diff, scale_of

# (rtol, atol) per dtype, exactly ``torch.testing.assert_close``'s defaults
# (torch/testing/_comparison.py::_DTYPE_PRECISIONS); integers and bools are exact.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (0.001, 1e-5),
    torch.bfloat16: (0.016, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex32: (0.001, 1e-5),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}

# Backends that re-lower ops (onnxruntime kernels, inductor fusions) reorder float
# arithmetic. Measured here: onnxruntime differs from eager by up to ~1e-5 relative on
# real CNNs and encoders, real defects by 0.1 or more; these leave two decades of margin
# on each side. trace, script and export replay eager's own kernels and stay at
# assert_close's defaults.
RELOWERED_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
    torch.float32: (1e-3, 1e-4),
    torch.float64: (1e-6, 1e-6),
    torch.complex64: (1e-3, 1e-4),
}


def tolerances_for(dtype: torch.dtype, relowered: bool, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if not (dtype.is_floating_point or dtype.is_complex):
        return 0.0, 0.0
    table = RELOWERED_TOLERANCES if relowered else DEFAULT_TOLERANCES
    d_rtol, d_atol = table.get(dtype, DEFAULT_TOLERANCES.get(dtype, (1.3e-6, 1e-5)))
    return (d_rtol if rtol is None else rtol), (d_atol if atol is None else atol)


def normalize(obj: Any) -> Any:
    """Make dataclass-style model outputs visible to pytree (as dicts of their fields)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and type(obj) not in pytree.SUPPORTED_NODES:
        return {f.name: normalize(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping) and type(obj) not in pytree.SUPPORTED_NODES:
        return {k: normalize(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(normalize(v) for v in obj)
    if isinstance(obj, dict):
        return {k: normalize(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any) -> tuple[list[tuple[str, Any]], pytree.TreeSpec]:
    """Leaves of a nested output with ``torch.testing``-style id paths (``['logits'][0]``)."""
    with_path, spec = pytree.tree_flatten_with_path(normalize(obj))
    return [(pytree.keystr(path), leaf) for path, leaf in with_path], spec


def unflatten_like(leaves: list[Any], spec: pytree.TreeSpec) -> Any:
    return pytree.tree_unflatten(leaves, spec)


@dataclass
class Compared:
    """[What A Verdict Rests On] How much of the outputs were compared (the report's ``compared``, docs/report.md).

    ``elements``: output elements whose values were judged (a non-tensor leaf counts as one),
    ``of``: the elements eager's outputs hold, both summed over ``inputs``; ``leaves``: one
    call's output leaves by kind: ``tensors`` and ``values`` (non-tensor leaves compared by
    value), ``compare=`` (handed to the user's function), ``skipped`` with the reason (a None
    leaf carries nothing, and exported graphs drop it). A check whose ``elements`` is 0 rests
    on nothing and is not a pass (search.py).
    """

    elements: int = 0
    of: int = 0
    inputs: int = 0
    leaves: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Compared) -> None:
        self.elements += other.elements
        self.of += other.of
        self.inputs += other.inputs
        self.leaves = self.leaves or other.leaves  # one call's structure: the first input's

    def as_dict(self) -> dict[str, Any]:
        return {"elements": self.elements, "of": self.of, "inputs": self.inputs, "leaves": self.leaves}


def _counted(leaves: list[tuple[str, Any]], custom: bool) -> Compared:
    """One call's outputs counted, before any value is compared (``elements`` still 0)."""
    kinds: dict[str, Any] = {}
    skipped: dict[str, int] = {}
    of = 0
    for _, leaf in leaves:
        if leaf is None:
            skipped["None"] = skipped.get("None", 0) + 1
            continue
        kind = "compare=" if custom else "tensors" if isinstance(leaf, torch.Tensor) else "values"
        kinds[kind] = kinds.get(kind, 0) + 1
        of += leaf.numel() if isinstance(leaf, torch.Tensor) else 1
    if skipped:
        kinds["skipped"] = skipped
    return Compared(of=of, inputs=1, leaves=kinds)


@dataclass
class Comparison:
    """The verdict on one example. ``problem`` is a structural difference (no values)."""

    ok: bool = True
    problem: str | None = None
    diffs: list[LeafDiff] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    rtol: float | None = None
    atol: float | None = None
    custom_message: str | None = None
    compared: Compared = field(default_factory=Compared)  # how much of the outputs the verdict read
    of_scale: float = 0.0  # [Scale Budget] the greatest error over the leaves, a fraction of the leaf's scale
    allowed: float | None = None  # the tolerance at ``max_abs``'s element (LeafDiff.allowed)

    def lines(self) -> list[str]:
        if self.problem:
            return [self.problem]
        if self.custom_message is not None:
            return ["compare= rejected the outputs:", *self.custom_message.splitlines()]
        lines = []
        for d in self.diffs:
            pct = 100.0 * d.mismatched / max(d.numel, 1)
            lines += [
                f"output {d.path or '(the output)'}: {d.dtype}{list(d.shape)}",
                f"  Mismatched elements: {d.mismatched} / {d.numel} ({pct:.1f}%)",
                f"  Greatest absolute difference: {_g(d.max_abs)} at index {d.abs_index} (up to {_g(d.atol)} allowed)",
                f"  Greatest relative difference: {_g(d.max_rel)} at index {d.rel_index} (up to {_g(d.rtol)} allowed)",
                f"  Absolute error p50 {_g(d.p50)}, p99 {_g(d.p99)}; would pass with atol={_g(d.needed_atol)}"
                f" (rtol kept) or rtol={_g(d.needed_rtol)} (atol kept)",
            ]
            if d.budget is not None and d.scale is not None:
                lines.append(
                    f"  Off by {_pct(d.of_scale)} of the output's scale (its greatest |eager| value, {_g(d.scale)}); "
                    f"the budget allows {_pct(d.budget)}"
                )
            if d.one_sided_nonfinite:
                lines.append(
                    f"  {d.one_sided_nonfinite} element(s) are NaN or inf on one side only: no tolerance covers that"
                )
        return lines


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%" if math.isfinite(x) else str(x)


def compare(
    expected: Any,
    actual: Any,
    *,
    relowered: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    compare_fn: Callable[[Any, Any], Any] | None = None,
    scale_budget: float | None = None,
    scale_floor: Mapping[str, float] | None = None,
) -> Comparison:
    """Compare nested outputs. ``actual`` may be the same structure or its flat leaves.

    [Scale Budget] ``scale_budget`` (a post-processed artifact: float16, int8) judges each
    floating leaf by its greatest error as a fraction of the leaf's scale: its greatest
    finite |eager| value, or ``scale_floor[path]`` (the recorded call's) where that is larger.
    An int8 step is a fraction of the range the model was calibrated on, not of each element
    nor of one input's outputs, so an element near zero (or an input whose outputs cancel to
    small values) may be off by as much as the largest. It replaces the default tolerances,
    never explicit ``rtol``/``atol``.
    """
    all_expected, spec = flatten(expected)
    counted = _counted(all_expected, compare_fn is not None)
    # None leaves (an unused hidden state, say) carry nothing, and exported graphs drop them.
    exp_leaves = [(p, v) for p, v in all_expected if v is not None]
    act_leaves = [(p, v) for p, v in flatten(actual)[0] if v is not None]
    problem = _structure(exp_leaves, act_leaves)
    if problem:
        return Comparison(ok=False, problem=problem, compared=counted)
    # From here every leaf's values are judged (a differing one decides the verdict).
    counted.elements = counted.of
    result = Comparison(compared=counted)
    if compare_fn is not None:
        values = iter(a for _, a in act_leaves)
        actual_like = unflatten_like([None if v is None else next(values) for _, v in all_expected], spec)
        try:
            compare_fn(expected, actual_like)
        except AssertionError as exc:
            return Comparison(ok=False, custom_message=str(exc) or type(exc).__name__, compared=counted)
        return result
    for (path, e), (_, a) in zip(exp_leaves, act_leaves):
        if not isinstance(e, torch.Tensor):
            if e != a and not _both_nan(e, a):
                result.ok = False
                result.problem = f"output {path or '(the output)'}: eager returns {e!r}, the artifact {a!r}"
                return result
            continue
        _judge_leaf(result, path, e, a, (relowered, rtol, atol, scale_budget, scale_floor))
    return result


def _judge_leaf(result: Comparison, path: str, e: torch.Tensor, a: Any, rule: tuple[Any, ...]) -> None:
    """One tensor leaf's values, at its tolerances (or its scale budget), into ``result``."""
    relowered, rtol, atol, scale_budget, scale_floor = rule
    leaf_rtol, leaf_atol = tolerances_for(e.dtype, relowered, rtol, atol)
    scale = None
    if scale_budget is not None and rtol is None and atol is None and e.is_floating_point():
        scale = max(scale_of(e), (scale_floor or {}).get(path, 0.0))
        leaf_rtol, leaf_atol = 0.0, max(scale_budget * scale, leaf_atol)
    diff = leaf_diff(path, e, torch.as_tensor(a), leaf_rtol, leaf_atol)
    if scale is not None:
        diff.scale, diff.budget = scale, scale_budget
        result.of_scale = max(result.of_scale, diff.of_scale)
    result.rtol, result.atol = diff.rtol, diff.atol
    if result.allowed is None or diff.max_abs > result.max_abs:
        result.allowed = diff.allowed
    result.max_abs = max(result.max_abs, diff.max_abs)
    result.max_rel = max(result.max_rel, diff.max_rel)
    if diff.mismatched:
        result.ok = False
        result.diffs.append(diff)

def output_scales(outputs: Any) -> dict[str, float]:
    """Each floating output leaf's scale (greatest finite |value|), by path: the recorded
    call's, the floor of a drawn input's scale under a budget."""
    return {p: scale_of(v) for p, v in flatten(outputs)[0] if isinstance(v, torch.Tensor) and v.is_floating_point()}


def _both_nan(e: Any, a: Any) -> bool:
    return isinstance(e, float) and isinstance(a, float) and math.isnan(e) and math.isnan(a)


def _structure(exp_leaves: list[tuple[str, Any]], act_leaves: list[tuple[str, Any]]) -> str | None:
    """How the two outputs' structure differs (leaf count, then each leaf's kind, shape and
    dtype, before any value: a value comparison across them would be noise); None if alike."""
    if len(act_leaves) != len(exp_leaves):
        return (
            f"Output structure differs: eager returns {len(exp_leaves)} leaves "
            f"({', '.join(p or '(the output)' for p, _ in exp_leaves[:6])}), the artifact {len(act_leaves)}"
        )
    for (path, e), (_, a) in zip(exp_leaves, act_leaves):
        problem = _structural(path, e, a)
        if problem:
            return problem
    return None


def _structural(path: str, e: Any, a: Any) -> str | None:
    where = f"output {path or '(the output)'}"
    if isinstance(e, torch.Tensor):
        if not isinstance(a, torch.Tensor):
            if isinstance(a, (int, float, bool)) and e.dim() == 0:
                return None
            return f"{where}: eager returns a tensor, the artifact {type(a).__name__}"
        if tuple(a.shape) != tuple(e.shape):
            return f"{where}: shape {list(a.shape)} != eager's {list(e.shape)}"
        if a.dtype != e.dtype:
            return f"{where}: dtype {dtype_name(a.dtype)} != eager's {dtype_name(e.dtype)}"
    return None


def equal_trees(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of two nested values (NaN equal): for side-effect checks."""
    a_leaves, _ = flatten(a)
    b_leaves, _ = flatten(b)
    if len(a_leaves) != len(b_leaves):
        return False
    for (_, x), (_, y) in zip(a_leaves, b_leaves):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if not torch.equal(x.detach().cpu(), y.detach().cpu()):
                if not (x.is_floating_point() and torch.allclose(x.cpu(), y.cpu(), rtol=0, atol=0, equal_nan=True)):
                    return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return False
        elif x != y and not _both_nan(x, y):
            return False
    return True
