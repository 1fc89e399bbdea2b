"""Compare an artifact's outputs with eager ones: nested outputs become (path, leaf) pairs.

Structure, shape and dtype are checked before values, as ``torch.testing`` does; values
use ``torch.isclose`` (``assert_close``'s own primitive, NaN equal to NaN) with one
per-dtype tolerance table, so the numbers here mean what users know from
``assert_close``. This module never exports anything.
"""

from __future__ import annotations

import dataclasses
import enum
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


class NotCompared:
    """An output leaf that cannot be compared by value (``why``): skipped like a None leaf,
    and named on the row (``Compared.leaves``' ``skipped``, a ``not_compared`` finding). Two
    of them are alike when they say the same: an output eager cannot compare is no sign that
    eager disagrees with itself."""

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
    """What an object pytree does not flatten holds (a transformers ``DynamicCache``, a user's
    class), or a pytree node with such an object inside: its parts by the keys that name them
    (``GetAttrKey("layers")``), so the id path reads ``['past_key_values'].layers[0].keys``.
    Registered with pytree below, so every comparison (values, structure, ``equal_trees``)
    walks it like any other node."""

    __slots__ = ("of", "keys", "values")

    def __init__(self, of: str, keys: tuple[Any, ...], values: list[Any]) -> None:
        self.of, self.keys, self.values = of, keys, values

    def __repr__(self) -> str:
        return f"{self.of}({', '.join(pytree.keystr((k,)) for k in self.keys)})"


if Held not in pytree.SUPPORTED_NODES:  # a second import of this module (a test reloading it) keeps the first
    pytree.register_pytree_node(
        Held,
        lambda h: (list(h.values), (h.of, h.keys)),
        lambda values, context: Held(context[0], context[1], list(values)),
        flatten_with_keys_fn=lambda h: (list(zip(h.keys, h.values)), (h.of, h.keys)),
    )

#: Leaves compared by ``==``: values, whose equality is their value.
_VALUES = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size, enum.Enum)
#: How deep an object's attributes are followed before the rest is said not compared (a linked structure).
_DEPTH = 32


class _Unsupported(Exception):
    """This way of reading an output does not apply to it: the next is tried."""


def normalize(obj: Any) -> Any:
    """``obj`` as pytree flattens it to the leaves compared by value.

    Each way of reading an output is tried in turn, as ``torch.testing``'s ``_comparison.py``
    tries each ``Pair`` class (``_READERS``): a tensor or a plain value is a leaf; a container
    or pytree node is walked; a dataclass (or an unregistered mapping) is the dict of its
    fields; any other object is what its attributes hold (``Held``), so a transformers cache
    is compared through its tensors, never by ``!=`` (which is identity for a class without
    ``__eq__``: two equal caches would differ). What none of them reads is a ``NotCompared``
    leaf. An object is rebuilt only where something inside it changed, so outputs pytree
    already reads keep their types (for ``compare=``).
    """
    return _read(obj, ())


def _read(obj: Any, inside: tuple[int, ...]) -> Any:
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


def _containers(obj: Any, read: Callable[[Any], Any]) -> Any:
    if type(obj) in (list, tuple):
        parts = [read(v) for v in obj]
        return obj if all(p is v for p, v in zip(parts, obj)) else type(obj)(parts)
    if type(obj) is dict or (isinstance(obj, Mapping) and type(obj) not in pytree.SUPPORTED_NODES):
        mapped = {k: read(v) for k, v in obj.items()}
        return obj if type(obj) is dict and all(mapped[k] is v for k, v in obj.items()) else mapped
    raise _Unsupported


def _pytree_node(obj: Any, read: Callable[[Any], Any]) -> Any:
    """A node pytree flattens (a registered type such as transformers' ``ModelOutput``, a
    namedtuple): itself, unless a child needed reading; then its children by their keys."""
    children, _ = pytree.tree_flatten_with_path(obj, is_leaf=lambda node: node is not obj)
    if len(children) == 1 and children[0][0] == () and children[0][1] is obj:
        raise _Unsupported  # pytree takes it for a leaf
    parts = [read(child) for _, child in children]
    if all(p is c for p, (_, c) in zip(parts, children)):
        return obj
    return Held(type(obj).__name__, tuple(path[0] for path, _ in children), parts)


def _dataclass(obj: Any, read: Callable[[Any], Any]) -> Any:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise _Unsupported
    return {f.name: read(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _not_data(obj: Any, read: Callable[[Any], Any]) -> Any:
    """A module, a function or a class held by an output is code, not a value the model computed."""
    if isinstance(obj, (torch.nn.Module, type)) or callable(obj):
        return NotCompared(type(obj).__name__, "it is code (a module, a class or a function), not a value")
    raise _Unsupported


def _attributes(obj: Any, read: Callable[[Any], Any]) -> Any:
    """What an object holds in its attributes, those that hold a tensor or a value; code and
    what cannot be compared are left out. Where none holds a tensor and its class has an
    ``==`` of its own, that ``==`` judges it instead."""
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


#: The ways an output is read, in the order they are tried (``normalize``).
_READERS: tuple[Callable[[Any, Callable[[Any], Any]], Any], ...] = (
    _containers,
    _pytree_node,
    _dataclass,
    _not_data,
    _attributes,
)


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
    # None leaves (an unused hidden state, say) carry nothing, and exported graphs drop them;
    # what cannot be compared by value is named in ``counted`` and left out on both sides.
    exp_leaves = [(p, v) for p, v in all_expected if _carries(v)]
    act_leaves = [(p, v) for p, v in flatten(actual)[0] if _carries(v)]
    problem = _structure(exp_leaves, act_leaves)
    if problem:
        return Comparison(ok=False, problem=problem, compared=counted)
    # From here every leaf's values are judged (a differing one decides the verdict).
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


def _carries(leaf: Any) -> bool:
    """Whether a leaf holds something to compare (None and ``NotCompared`` do not)."""
    return leaf is not None and not isinstance(leaf, NotCompared)


def not_compared(outputs: Any) -> list[tuple[str, NotCompared]]:
    """The leaves of ``outputs`` no comparison reads, with their id paths."""
    return [(p, v) for p, v in flatten(outputs)[0] if isinstance(v, NotCompared)]


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
