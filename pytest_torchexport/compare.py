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
import torch.utils._pytree as pytree

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
class LeafDiff:
    """How one output leaf differs; every number is what a person reads in the message."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    mismatched: int
    numel: int
    max_abs: float
    max_rel: float
    abs_index: tuple[int, ...]
    rel_index: tuple[int, ...]
    p50: float
    p99: float
    rtol: float
    atol: float
    needed_atol: float
    needed_rtol: float
    one_sided_nonfinite: int = 0  # NaN/inf on one side only: no tolerance covers these


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
            if d.one_sided_nonfinite:
                lines.append(
                    f"  {d.one_sided_nonfinite} element(s) are NaN or inf on one side only: no tolerance covers that"
                )
        return lines


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def compare(
    expected: Any,
    actual: Any,
    *,
    relowered: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    compare_fn: Callable[[Any, Any], Any] | None = None,
) -> Comparison:
    """Compare nested outputs. ``actual`` may be the same structure or its flat leaves."""
    all_expected, spec = flatten(expected)
    # None leaves (an unused hidden state, say) carry nothing, and exported graphs drop them.
    exp_leaves = [(p, v) for p, v in all_expected if v is not None]
    act_leaves = [(p, v) for p, v in flatten(actual)[0] if v is not None]
    if len(act_leaves) != len(exp_leaves):
        return Comparison(
            ok=False,
            problem=f"Output structure differs: eager returns {len(exp_leaves)} leaves "
            f"({', '.join(p or '(the output)' for p, _ in exp_leaves[:6])}), the artifact {len(act_leaves)}",
        )
    result = Comparison()
    # Shapes and dtypes first: a value comparison across them would be noise.
    for (path, e), (_, a) in zip(exp_leaves, act_leaves):
        problem = _structural(path, e, a)
        if problem:
            return Comparison(ok=False, problem=problem)
    if compare_fn is not None:
        values = iter(a for _, a in act_leaves)
        actual_like = unflatten_like([None if v is None else next(values) for _, v in all_expected], spec)
        try:
            compare_fn(expected, actual_like)
        except AssertionError as exc:
            return Comparison(ok=False, custom_message=str(exc) or type(exc).__name__)
        return result
    for (path, e), (_, a) in zip(exp_leaves, act_leaves):
        if not isinstance(e, torch.Tensor):
            if e != a and not _both_nan(e, a):
                result.ok = False
                result.problem = f"output {path or '(the output)'}: eager returns {e!r}, the artifact {a!r}"
                return result
            continue
        diff = _leaf_diff(path, e, torch.as_tensor(a), relowered, rtol, atol)
        result.rtol, result.atol = diff.rtol, diff.atol
        result.max_abs = max(result.max_abs, diff.max_abs)
        result.max_rel = max(result.max_rel, diff.max_rel)
        if diff.mismatched:
            result.ok = False
            result.diffs.append(diff)
    return result


def _both_nan(e: Any, a: Any) -> bool:
    return isinstance(e, float) and isinstance(a, float) and math.isnan(e) and math.isnan(a)


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
            return f"{where}: dtype {_dtype(a.dtype)} != eager's {_dtype(e.dtype)}"
    return None


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _leaf_diff(
    path: str, e: torch.Tensor, a: torch.Tensor, relowered: bool, rtol: float | None, atol: float | None
) -> LeafDiff:
    rtol_v, atol_v = tolerances_for(e.dtype, relowered, rtol, atol)
    if e.numel() == 0:  # shapes already agree: nothing to differ
        return LeafDiff(path, tuple(e.shape), _dtype(e.dtype), 0, 0, 0.0, 0.0, (), (), 0.0, 0.0, rtol_v, atol_v, 0.0, 0.0)
    e_cpu = e.detach().cpu()
    a_cpu = a.detach().cpu().to(e_cpu.dtype)
    if e_cpu.dtype == torch.bool:
        e_cpu, a_cpu = e_cpu.to(torch.uint8), a_cpu.to(torch.uint8)
    close = torch.isclose(a_cpu, e_cpu, rtol=rtol_v, atol=atol_v, equal_nan=True)
    wide = torch.float64 if not e_cpu.dtype.is_complex else torch.complex128
    e64, a64 = e_cpu.to(wide), a_cpu.to(wide)
    abs_err = (a64 - e64).abs().to(torch.float64) if e_cpu.numel() else torch.zeros(0, dtype=torch.float64)
    both_nan = torch.isnan(e64.abs()) & torch.isnan(a64.abs()) if e_cpu.numel() else abs_err.bool()
    same_inf = (e64 == a64) if e_cpu.numel() else abs_err.bool()
    abs_err = torch.where(both_nan | same_inf, torch.zeros_like(abs_err), abs_err)
    abs_err = torch.nan_to_num(abs_err, nan=math.inf)
    mag = e64.abs().to(torch.float64)
    rel_err = torch.where(abs_err == 0, torch.zeros_like(abs_err), abs_err / mag)
    rel_err = torch.nan_to_num(rel_err, nan=math.inf, posinf=math.inf)
    mismatched = int((~close).sum())
    if not mismatched:
        # The common case, once per example: only the greatest errors feed the summary;
        # quantiles (two sorts) and the would-pass tolerances explain a mismatch.
        return LeafDiff(path, tuple(e.shape), _dtype(e.dtype), 0, e.numel(), float(abs_err.max()),
                        float(rel_err.max()), (), (), 0.0, 0.0, rtol_v, atol_v, 0.0, 0.0)
    finite_e, finite_a = torch.isfinite(e64), torch.isfinite(a64)
    one_sided = int((finite_e != finite_a).sum()) if e_cpu.numel() else 0
    if abs_err.numel():
        flat_abs = abs_err.flatten()
        abs_i = int(flat_abs.argmax())
        rel_i = int(rel_err.flatten().argmax())
        finite = flat_abs[torch.isfinite(flat_abs)]
        p50 = float(finite.quantile(0.5)) if finite.numel() else math.inf
        p99 = float(finite.quantile(0.99)) if finite.numel() else math.inf
        needed_atol = float((abs_err - rtol_v * mag).nan_to_num(nan=math.inf, posinf=math.inf).clamp(min=0).max())
        over = (abs_err - atol_v).clamp(min=0)
        needed_rtol = float(torch.where(over == 0, torch.zeros_like(over), over / mag).nan_to_num(nan=math.inf, posinf=math.inf).max())
        max_abs, max_rel = float(flat_abs[abs_i]), float(rel_err.flatten()[rel_i])
        abs_index, rel_index = _unravel(abs_i, e.shape), _unravel(rel_i, e.shape)
    else:
        p50 = p99 = needed_atol = needed_rtol = max_abs = max_rel = 0.0
        abs_index = rel_index = ()
    return LeafDiff(
        path=path,
        shape=tuple(e.shape),
        dtype=_dtype(e.dtype),
        mismatched=mismatched,
        numel=e.numel(),
        max_abs=max_abs,
        max_rel=max_rel,
        abs_index=abs_index,
        rel_index=rel_index,
        p50=p50,
        p99=p99,
        rtol=rtol_v,
        atol=atol_v,
        needed_atol=needed_atol,
        needed_rtol=needed_rtol,
        one_sided_nonfinite=one_sided,
    )


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


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
