"""Compare an artifact's outputs with eager ones, leaf by leaf, as ``torch.testing`` does.

Structure, shape and dtype are checked before values; values use ``torch.isclose`` with
``assert_close``'s tolerances. See docs/howto-tolerances.md.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import pytree, tree_flatten_with_path

# (rtol, atol) per dtype: ``torch.testing.assert_close``'s defaults; integers and bools are exact.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (0.001, 1e-5),
    torch.bfloat16: (0.016, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex32: (0.001, 1e-5),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}

# Backends that re-lower ops (onnxruntime, inductor) reorder float arithmetic, so they get
# looser tolerances; trace, script and export run eager's own kernels.
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


class NotCompared:
    """An output leaf that cannot be compared by value (``why``): skipped and named on the row.
    Two are equal when they say the same, so eager never seems to disagree with itself."""

    __slots__ = ("of", "why")

    def __init__(self, of: str, why: str) -> None:
        self.of, self.why = of, why

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NotCompared) and (self.of, self.why) == (other.of, other.why)

    def __hash__(self) -> int:
        return hash((self.of, self.why))

    def __repr__(self) -> str:
        return f"<{self.of}: {self.why}>"


class Held:
    """The parts of an object pytree does not flatten (a ``DynamicCache``), by their keys;
    registered with pytree so every comparison walks it like any other node."""

    __slots__ = ("of", "keys", "values")

    def __init__(self, of: str, keys: tuple[Any, ...], values: list[Any]) -> None:
        self.of, self.keys, self.values = of, keys, values

    def __repr__(self) -> str:
        return f"{self.of}({', '.join(pytree.keystr((k,)) for k in self.keys)})"


if Held not in pytree.SUPPORTED_NODES:  # a reloaded module keeps the first registration
    pytree.register_pytree_node(
        Held,
        lambda h: (list(h.values), (h.of, h.keys)),
        lambda values, context: Held(context[0], context[1], list(values)),
        flatten_with_keys_fn=lambda h: (list(zip(h.keys, h.values)), (h.of, h.keys)),
    )

#: Leaves compared by ``==``.
_VALUES = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size, enum.Enum)
#: How deep an object's attributes are followed (a linked structure would go on forever).
_DEPTH = 32


class _Unsupported(Exception):
    """This reader does not apply: try the next."""


def normalize(obj: object) -> object:
    """``obj`` in a form pytree flattens to the leaves compared by value (``_READERS``).

    An object is compared through its attributes, never by ``!=``, which is identity for a
    class without ``__eq__``. It is rebuilt only where something inside it changed."""
    return _read(obj, ())


def _read(obj: object, inside: tuple[int, ...]) -> object:
    if isinstance(obj, (torch.Tensor, NotCompared, *_VALUES)):
        return obj
    if id(obj) in inside or len(inside) > _DEPTH:
        return NotCompared(type(obj).__name__, "it holds itself" if id(obj) in inside else "it is nested too deep")
    inside = (*inside, id(obj))
    for reader in _READERS:
        try:
            return reader(obj, lambda v: _read(v, inside))
        except _Unsupported:
            continue
    return NotCompared(type(obj).__name__, "it holds no tensor or value and defines no ==")


def _containers(obj: Any, read: Callable[[object], object]) -> object:
    if type(obj) in (list, tuple):
        parts = [read(v) for v in obj]
        return obj if all(p is v for p, v in zip(parts, obj)) else type(obj)(parts)
    if type(obj) is dict or (isinstance(obj, Mapping) and type(obj) not in pytree.SUPPORTED_NODES):
        mapped = {k: read(v) for k, v in obj.items()}
        return obj if type(obj) is dict and all(mapped[k] is v for k, v in obj.items()) else mapped
    raise _Unsupported


def _pytree_node(obj: object, read: Callable[[object], object]) -> object:
    """A node pytree flattens (``ModelOutput``, a namedtuple): itself, unless a child changed."""
    children, _ = tree_flatten_with_path(obj, is_leaf=lambda node: node is not obj)
    if len(children) == 1 and children[0][0] == () and children[0][1] is obj:
        raise _Unsupported  # pytree takes it for a leaf
    parts = [read(child) for _, child in children]
    if all(p is c for p, (_, c) in zip(parts, children)):
        return obj
    return Held(type(obj).__name__, tuple(path[0] for path, _ in children), parts)


def _dataclass(obj: object, read: Callable[[object], object]) -> object:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise _Unsupported
    return {f.name: read(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _not_data(obj: object, read: Callable[[object], object]) -> object:
    """A module, function or class in an output is code, not a computed value."""
    if isinstance(obj, (torch.nn.Module, type)) or callable(obj):
        return NotCompared(type(obj).__name__, "it is code (a module, a class or a function), not a value")
    raise _Unsupported


def _attributes(obj: object, read: Callable[[object], object]) -> object:
    """An object's attributes that hold a tensor or a value; without a tensor, an ``==`` of
    the class's own judges it instead."""
    names = [n for n in getattr(obj, "__dict__", {}) if not n.startswith("__")]
    for cls in type(obj).__mro__:
        slots = getattr(cls, "__slots__", ())
        names += [n for n in ((slots,) if isinstance(slots, str) else slots) if n not in names and hasattr(obj, n)]
    held = {}
    for name in names:
        part = read(getattr(obj, name))
        if not isinstance(part, NotCompared):
            held[name] = part
    has_tensor = any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(list(held.values())))
    if not has_tensor and getattr(type(obj), "__eq__") is not object.__eq__:  # noqa: B009 - typed Any: mypy sees two callable types
        return obj
    if not held:
        raise _Unsupported
    return Held(type(obj).__name__, tuple(pytree.GetAttrKey(n) for n in held), list(held.values()))


#: The ways an output is read, in order (``normalize``).
_READERS: tuple[Callable[[Any, Callable[[object], object]], object], ...] = (
    _containers,
    _pytree_node,
    _dataclass,
    _not_data,
    _attributes,
)


def flatten(obj: object) -> tuple[list[tuple[str, Any]], pytree.TreeSpec]:
    """Leaves of a nested output with ``torch.testing``-style id paths (``['logits'][0]``)."""
    with_path, spec = tree_flatten_with_path(normalize(obj))
    return [(pytree.keystr(path), leaf) for path, leaf in with_path], spec


def unflatten_like(leaves: list[Any], spec: pytree.TreeSpec) -> object:
    return pytree.tree_unflatten(leaves, spec)


@dataclass
class Compared:
    """How much of the outputs were compared: the report's ``compared`` (docs/report.md).
    A check with 0 ``elements`` is not a pass."""

    elements: int = 0
    of: int = 0
    inputs: int = 0
    leaves: dict[str, Any] = field(default_factory=dict)
    #: Elements left out as undefined (queries the attention mask gives no key).
    masked: int = 0

    def add(self, other: Compared) -> None:
        self.elements += other.elements
        self.of += other.of
        self.inputs += other.inputs
        self.masked += other.masked
        self.leaves = self.leaves or other.leaves  # one call's structure

    def as_dict(self) -> dict[str, Any]:
        counts = {"elements": self.elements, "of": self.of, "inputs": self.inputs, "leaves": self.leaves}
        return {**counts, "masked": self.masked} if self.masked else counts


def _counted(leaves: list[tuple[str, Any]], custom: bool) -> Compared:
    """One call's outputs counted, before any value is compared."""
    kinds: dict[str, Any] = {}
    skipped: dict[str, int] = {}
    of = 0
    for path, leaf in leaves:
        if leaf is None:
            skipped["None"] = skipped.get("None", 0) + 1
            continue
        if isinstance(leaf, NotCompared):
            skipped[f"{path or '(the output)'} ({leaf.of}: {leaf.why})"] = 1
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
    compared: Compared = field(default_factory=Compared)
    of_scale: float = 0.0  # the greatest error as a fraction of its leaf's scale
    allowed: float | None = None  # the tolerance at ``max_abs``'s element

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
                    f"the allowed error is {_pct(d.budget)}"
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
    expected: object,
    actual: object,
    *,
    relowered: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    compare_fn: Callable[[Any, Any], Any] | None = None,
    scale_budget: float | None = None,
    scale_floor: Mapping[str, float] | None = None,
) -> Comparison:
    """Compare nested outputs. ``actual`` may be the same structure or its flat leaves.

    ``scale_budget`` (a quantised artifact) judges each floating leaf's greatest error as a
    fraction of its scale, since a quantisation step is a fraction of the calibrated range.
    It replaces the default tolerances, never explicit ``rtol``/``atol``.
    """
    all_expected, spec = flatten(expected)
    counted = _counted(all_expected, compare_fn is not None)
    # Exported graphs drop None leaves; what cannot be compared is left out on both sides.
    exp_leaves = [(p, v) for p, v in all_expected if _carries(v)]
    act_leaves = [(p, v) for p, v in flatten(actual)[0] if _carries(v)]
    problem = _structure(exp_leaves, act_leaves)
    if problem:
        return Comparison(ok=False, problem=problem, compared=counted)
    counted.elements = counted.of
    result = Comparison(compared=counted)
    if compare_fn is not None:
        values = iter(a for _, a in act_leaves)
        actual_like = unflatten_like([next(values) if _carries(v) else v for _, v in all_expected], spec)
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


def _judge_leaf(result: Comparison, path: str, e: torch.Tensor, a: object, rule: tuple[Any, ...]) -> None:
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


def output_scales(outputs: object) -> dict[str, float]:
    """Each floating output leaf's greatest finite |value|, by path."""
    return {p: scale_of(v) for p, v in flatten(outputs)[0] if isinstance(v, torch.Tensor) and v.is_floating_point()}


def _carries(leaf: object) -> bool:
    """Whether a leaf holds something to compare (None and ``NotCompared`` do not)."""
    return leaf is not None and not isinstance(leaf, NotCompared)


def not_compared(outputs: object) -> list[tuple[str, NotCompared]]:
    """The leaves of ``outputs`` no comparison reads, with their id paths."""
    return [(p, v) for p, v in flatten(outputs)[0] if isinstance(v, NotCompared)]


def _both_nan(e: object, a: object) -> bool:
    return isinstance(e, float) and isinstance(a, float) and math.isnan(e) and math.isnan(a)


def _structure(exp_leaves: list[tuple[str, Any]], act_leaves: list[tuple[str, Any]]) -> str | None:
    """How the two outputs' structure differs (leaf count, kind, shape, dtype); None if alike."""
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


def _structural(path: str, e: object, a: object) -> str | None:
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


def equal_trees(a: object, b: object) -> bool:
    """Bit-for-bit equality of two nested values (NaN equal): for side-effect checks."""
    a_leaves, _ = flatten(a)
    b_leaves, _ = flatten(b)
    if len(a_leaves) != len(b_leaves):
        return False
    for (at, x), (bt, y) in zip(a_leaves, b_leaves):
        if at != bt:
            return False
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


# --- one leaf's difference, chunk by chunk ---


@dataclass
class LeafDiff:
    """How one output leaf differs, as the failure message reports it."""

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
    scale: float | None = None  # the greatest finite |eager|, where a scale budget judged the leaf
    budget: float | None = None  # the error allowed, as a fraction of ``scale``
    #: The error allowed at the element of the greatest absolute error (for the HTML plots).
    allowed: float = 0.0

    @property
    def of_scale(self) -> float:
        """The greatest error as a fraction of the output's scale (inf where it has none)."""
        if self.scale is None:
            return 0.0
        if self.one_sided_nonfinite:  # no budget covers a NaN or inf on one side
            return math.inf
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else math.inf)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Outputs can be huge: statistics work CHUNK elements at a time in the output's dtype, with
# quantiles on a SAMPLE. A chunk stays in the CPU's cache and, at torch's grain size, on one thread.
CHUNK = 1 << 15
SAMPLE = 1 << 20


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        return dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype == torch.complex32:
        return torch.complex64
    return torch.float64  # integers and bools: exact below 2**53, one chunk at a time


def _errors(e: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(absolute error, relative error, |eager|) of a chunk; NaN==NaN and equal infs are 0."""
    work = _work_dtype(e.dtype)
    e, a = e.to(work), a.to(work)
    abs_err = (a - e).abs()
    abs_err = torch.where((e.isnan() & a.isnan()) | (e == a), torch.zeros_like(abs_err), abs_err)
    abs_err = torch.nan_to_num(abs_err, nan=math.inf)
    mag = e.abs()
    rel_err = torch.where(abs_err == 0, torch.zeros_like(abs_err), abs_err / mag)
    rel_err = torch.nan_to_num(rel_err, nan=math.inf, posinf=math.inf)
    return abs_err, rel_err, mag


@dataclass
class _Tally:
    """One leaf's statistics, gathered chunk by chunk (the first greatest error wins a tie)."""

    mismatched: int = 0
    one_sided: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    abs_i: int = 0
    rel_i: int = 0
    needed_atol: float = 0.0
    needed_rtol: float = 0.0

    def greatest(self, start: int, abs_at: tuple[float, int], rel_at: tuple[float, int]) -> None:
        if start == 0 or abs_at[0] > self.max_abs:
            self.max_abs, self.abs_i = abs_at[0], start + abs_at[1]
        if start == 0 or rel_at[0] > self.max_rel:
            self.max_rel, self.rel_i = rel_at[0], start + rel_at[1]


_FAST_DTYPES = (torch.float32, torch.float64)


def _matching_chunk(ec: torch.Tensor, ac: torch.Tensor, rtol: float, atol: float) -> tuple | None:
    """A fast path: the greatest errors of a chunk where every element matches; else None."""
    diff = torch.sub(ac, ec).abs_()
    i = int(diff.argmax())
    max_abs = float(diff[i])
    if not math.isfinite(max_abs):
        return None
    if max_abs == 0:
        return (0.0, 0), (0.0, 0)
    # isclose allows at least atol, so within atol every element matches.
    if not max_abs <= atol and not bool(torch.isclose(ac, ec, rtol=rtol, atol=atol).all()):
        return None
    rel = diff.div_(ec.abs()).nan_to_num_(nan=0.0, posinf=math.inf)  # 0/0: equal elements
    j = int(rel.argmax())
    return (max_abs, i), (float(rel[j]), j)


def _exact_chunk(tally: _Tally, start: int, chunk: tuple[torch.Tensor, torch.Tensor], rtol: float, atol: float) -> None:
    ec, ac = chunk
    close = torch.isclose(ac, ec, rtol=rtol, atol=atol, equal_nan=True)
    abs_err, rel_err, mag = _errors(ec, ac)
    i, j = int(abs_err.argmax()), int(rel_err.argmax())
    tally.greatest(start, (float(abs_err[i]), i), (float(rel_err[j]), j))
    bad = int((~close).sum())
    if not bad:
        return
    # Only a mismatch needs the would-pass tolerances and the one-sided NaN/infs.
    tally.mismatched += bad
    tally.one_sided += int((torch.isfinite(ec) != torch.isfinite(ac)).sum())
    need_a = (abs_err - rtol * mag).nan_to_num(nan=math.inf, posinf=math.inf).clamp(min=0).max()
    over = (abs_err - atol).clamp(min=0)
    need_r = torch.where(over == 0, torch.zeros_like(over), over / mag).nan_to_num(nan=math.inf, posinf=math.inf).max()
    tally.needed_atol = max(tally.needed_atol, float(need_a))
    tally.needed_rtol = max(tally.needed_rtol, float(need_r))


def leaf_diff(path: str, e: torch.Tensor, a: torch.Tensor, rtol: float, atol: float) -> LeafDiff:
    """One leaf's differences at the given tolerances."""
    shape, dtype = tuple(e.shape), dtype_name(e.dtype)
    if e.numel() == 0:  # shapes already agree: nothing to differ
        return LeafDiff(path, shape, dtype, 0, 0, 0.0, 0.0, (), (), 0.0, 0.0, rtol, atol, 0.0, 0.0)
    e_flat = e.detach().cpu().reshape(-1)
    a_flat = a.detach().cpu().to(e_flat.dtype).reshape(-1)
    if e_flat.dtype == torch.bool:
        e_flat, a_flat = e_flat.to(torch.uint8), a_flat.to(torch.uint8)
    tally = _Tally()
    # Bit-equal outputs (eager's own kernels) need only one read of each.
    if not torch.equal(e_flat, a_flat):
        fast = e_flat.dtype in _FAST_DTYPES
        for start in range(0, e_flat.numel(), CHUNK):
            chunk = e_flat[start : start + CHUNK], a_flat[start : start + CHUNK]
            greatest = _matching_chunk(*chunk, rtol, atol) if fast else None
            if greatest is not None:
                tally.greatest(start, *greatest)
            else:
                _exact_chunk(tally, start, chunk, rtol, atol)
    allowed = _allowed_at(e_flat, tally.abs_i, rtol, atol)
    if not tally.mismatched:
        # The common case: quantiles (a sort) are only needed to explain a mismatch.
        return LeafDiff(
            path,
            shape,
            dtype,
            0,
            e.numel(),
            tally.max_abs,
            tally.max_rel,
            (),
            (),
            0.0,
            0.0,
            rtol,
            atol,
            0.0,
            0.0,
            allowed=allowed,
        )
    p50, p99 = _abs_quantiles(e_flat, a_flat)
    return LeafDiff(
        path=path,
        shape=shape,
        dtype=dtype,
        mismatched=tally.mismatched,
        numel=e.numel(),
        max_abs=tally.max_abs,
        max_rel=tally.max_rel,
        abs_index=_unravel(tally.abs_i, e.shape),
        rel_index=_unravel(tally.rel_i, e.shape),
        p50=p50,
        p99=p99,
        rtol=rtol,
        atol=atol,
        needed_atol=tally.needed_atol,
        needed_rtol=tally.needed_rtol,
        one_sided_nonfinite=tally.one_sided,
        allowed=allowed,
    )


def _allowed_at(e_flat: torch.Tensor, index: int, rtol: float, atol: float) -> float:
    """The error ``isclose`` allows at one element: atol + rtol * |eager|."""
    magnitude = abs(float(e_flat[index])) if e_flat.numel() else 0.0
    return atol + rtol * magnitude if math.isfinite(magnitude) else atol


def _abs_quantiles(e_flat: torch.Tensor, a_flat: torch.Tensor) -> tuple[float, float]:
    """p50 and p99 of the finite absolute errors, on a fixed sample above SAMPLE elements."""
    if e_flat.numel() > SAMPLE:
        index = torch.randint(e_flat.numel(), (SAMPLE,), generator=torch.Generator().manual_seed(0))
        e_flat, a_flat = e_flat[index], a_flat[index]
    abs_err = _errors(e_flat, a_flat)[0]
    finite = abs_err[torch.isfinite(abs_err)]
    if not finite.numel():
        return math.inf, math.inf
    q = torch.quantile(finite, torch.tensor([0.5, 0.99], dtype=finite.dtype))
    return float(q[0]), float(q[1])


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def scale_of(e: torch.Tensor) -> float:
    """The greatest finite |value| of a leaf, chunk by chunk."""
    flat, scale = e.detach().reshape(-1), 0.0
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start : start + CHUNK].abs()
        chunk = chunk[torch.isfinite(chunk)]
        if chunk.numel():
            scale = max(scale, float(chunk.max()))
    return scale
