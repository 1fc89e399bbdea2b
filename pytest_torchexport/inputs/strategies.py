"""Hypothesis strategies for module inputs: sizes that break exports, values that flip branches.

A ``Draw`` is small and hashable (sizes, a seed, a value mode), so hypothesis shrinks it well
and eager outputs can be cached by it. ``materialize`` turns a draw into tensors with torch's
own generator; drawing elements through hypothesis would be slow and shrink to nothing readable.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from hypothesis import strategies

from .._compat import pytree
from .specs import InputPlan, LeafPlan, entry_size

if TYPE_CHECKING:
    from hypothesis import strategies as st


def _strategies() -> types.ModuleType:
    """hypothesis's strategies, imported when a search draws: a check the verdict cache reuses, which
    only keys its inputs, never pays hypothesis's import."""
    return strategies


#: Value modes, plainest first (hypothesis shrinks towards the front).
MODES = ("recorded", "normal", "negative", "positive", "wide", "tiny")
#: Modes far from the recorded scale, drawn only with ``special_values=True``: deep nets are
#: ill-conditioned there and would fail healthy models on inputs no user feeds them.
FAR_MODES = {"wide": 100.0, "tiny": 1e-3}
SPECIAL_VALUES = (math.nan, math.inf, -math.inf, 0.0, 3.0e38, -3.0e38)
#: The values ``special_values=True`` probes in each float input, by name (a name compares
#: equal to itself, NaN does not); the extremes come from the input's ``torch.finfo``.
PROBE_VALUES = ("nan", "inf", "-inf", "0.0", "-0.0", "max", "min", "tiny")
#: How many float inputs (in call order) get special-value probes, to bound their number.
PROBE_INPUTS = 3


@dataclass(frozen=True)
class Draw:
    """One generated input, before it becomes tensors."""

    sizes: tuple[tuple[str, int], ...]
    mode: str = "recorded"
    seed: int = 0
    special: bool = False
    scalars: tuple[tuple[int, Any], ...] = ()
    #: A special-value probe: (flat input index, PROBE_VALUES name, "one" or "all").
    probe: tuple[int, str, str] | None = None

    def describe(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes)
        extra = ", special values" if self.special else ""
        if self.probe is not None:
            _, value, where = self.probe
            extra += f", probe: {value} in {'its first element' if where == 'one' else 'every element'}"
        return f"{sizes or 'static shapes'}; values {self.mode} (seed {self.seed}){extra}"


def interesting_sizes(lo: int, hi: int, example: int | None) -> list[int]:
    """Sizes where exports break: 1, 2, the example and its neighbours, non-divisible, larger."""
    cands = {lo, 1, 2, 3, 5, 7, hi}
    if example is not None:
        cands |= {example - 1, example, example + 1, 2 * example + 1, 3 * example}
        # Not divisible by the example's small factors (pooling, patching, heads).
        cands |= {example + f - 1 for f in (2, 3, 4, 8) if example % f == 0}
    return sorted(s for s in cands if lo <= s <= hi)


def sizes(lo: int, hi: int, example: int | None = None) -> st.SearchStrategy[int]:
    st = _strategies()
    picks = interesting_sizes(lo, hi, example)
    return st.one_of(st.sampled_from(picks), st.integers(lo, hi)) if picks else st.integers(lo, hi)


def draws(plan: InputPlan, *, special_values: bool = False, vary_scalars: bool = False) -> st.SearchStrategy[Draw]:
    """All inputs of one module call, as one strategy."""
    st = _strategies()
    examples = plan.example_sizes()
    size_strats = {name: sizes(d.min, plan.draw_max(name), examples.get(name)) for name, d in sorted(plan.dims.items())}
    modes: tuple[str, ...] = MODES if plan.recorded else MODES[1:]
    if not special_values:
        modes = tuple(m for m in modes if m not in FAR_MODES)
    scalar_strats = {i: _scalar(v) for i, v in plan.scalars.items()} if vary_scalars else {}

    @st.composite
    def build(data: strategies.DrawFn) -> Draw:
        drawn = tuple((name, data(s)) for name, s in size_strats.items())
        mode = data(st.sampled_from(modes))
        seed = data(st.integers(0, 2**16))
        special = data(st.booleans()) if special_values else False
        scal = tuple((i, data(s)) for i, s in sorted(scalar_strats.items()))
        return Draw(drawn, mode, seed, special, scal)

    return build()


def _scalar(value: Any) -> st.SearchStrategy[Any]:
    st = _strategies()
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        bound = max(4, 2 * abs(value) + 1)
        return st.integers(-bound if value < 0 else 0, bound)
    bound = max(4.0, 2 * abs(value) + 1)
    return st.floats(-bound, bound, allow_nan=False)


def probe_draws(plan: InputPlan) -> list[Draw]:
    """Explicit examples run before the search: the smallest sizes in each sign mode.

    They are already minimal, so nothing is lost unshrunk, and they make the commonest defects
    (a frozen sign-dependent branch, a size-1 specialization) show on every run.
    """
    small = tuple(sorted((name, max(d.min, 1)) for name, d in plan.dims.items()))
    modes = ("recorded", "normal", "negative", "positive") if plan.recorded else ("normal", "negative", "positive")
    probes = [Draw(small, mode=m) for m in modes]
    recorded = recorded_draw(plan)
    probes += [dataclasses.replace(recorded, mode=m) for m in ("negative", "positive")]
    return [p for p in dict.fromkeys(probes) if p != recorded]


def special_probes(plan: InputPlan) -> list[Draw]:
    """Explicit examples for ``special_values=True``: each special value in one element and in all.

    Each is the passing recorded input with one change, so a failing probe names its value;
    random draws would reach NaN only by luck, making failures flaky.
    """
    base = recorded_draw(plan)
    sizes = dict(base.sizes)
    probes = []
    floats = [i for i, leaf in plan.tensors.items() if leaf.dtype.is_floating_point][:PROBE_INPUTS]
    for i in floats:
        shape = plan.tensors[i].shape
        numel = math.prod(entry_size(e, sizes) for e in shape)
        if numel == 0:
            continue
        places = ("one", "all") if numel > 1 else ("all",)
        probes += [dataclasses.replace(base, probe=(i, value, where)) for where in places for value in PROBE_VALUES]
    return probes


def probe_value(name: str, dtype: torch.dtype) -> float:
    """A PROBE_VALUES name as a number of ``dtype``."""
    info = torch.finfo(dtype)
    return {
        "nan": math.nan,
        "inf": math.inf,
        "-inf": -math.inf,
        "0.0": 0.0,
        "-0.0": -0.0,
        "max": info.max,
        "min": info.min,
        "tiny": info.tiny,
    }[name]


def recorded_draw(plan: InputPlan) -> Draw:
    """The draw that reproduces the recorded call exactly (hypothesis's explicit example)."""
    mode = "recorded" if plan.recorded else "normal"
    return Draw(tuple(sorted(plan.example_sizes().items())), mode=mode)


def materialize(
    plan: InputPlan, draw: Draw, device: str | torch.device = "cpu"
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The args and kwargs of a draw, as fresh tensors on ``device``."""
    sizes = dict(draw.sizes)
    scalars = dict(draw.scalars)
    values = list(plan.leaves)
    for i, leaf in plan.tensors.items():
        shape = [entry_size(e, sizes) for e in leaf.shape]
        gen = torch.Generator().manual_seed(draw.seed * 7919 + i)
        tensor = _tensor(leaf, shape, draw, gen)
        if draw.probe is not None and draw.probe[0] == i:
            tensor = _probed(tensor, draw.probe[1], draw.probe[2])
        values[i] = tensor.to(device)
    for i, v in scalars.items():
        values[i] = v
    if draw.mode != "recorded":
        _labels_ignored_where_padded(plan, values)
    args, kwargs = pytree.tree_unflatten(values, plan.spec)
    return tuple(args), dict(kwargs)


#: The label a loss skips (``CrossEntropyLoss``'s default ``ignore_index``).
IGNORE_INDEX = -100


def _labels_ignored_where_padded(plan: InputPlan, values: list[Any]) -> None:
    """Set integer ``labels`` to the ignore index where the same-shaped mask pads, and at the first
    kept position after padding (a causal LM's shifted loss predicts it from a padded one), so a
    loss depends only on positions whose outputs are defined."""
    labelled = [i for i, leaf in plan.tensors.items() if "label" in leaf.name.lower()]
    if not labelled:
        return
    masks = [
        values[i]
        for i, leaf in plan.tensors.items()
        if (leaf.mask or _int_mask(leaf)) and "pad" not in leaf.name.lower()
    ]
    for i in labelled:
        labels = values[i]
        if labels.is_floating_point() or labels.dtype == torch.bool:
            continue
        mask = next((m for m in masks if m.shape == labels.shape), None)
        if mask is None:
            continue
        padded = mask == 0
        after_padding = torch.zeros_like(padded)
        after_padding[..., 1:] = padded[..., :-1] & ~padded[..., 1:]
        values[i] = labels.masked_fill(padded | after_padding, IGNORE_INDEX)


def _tensor(leaf: LeafPlan, shape: list[int], draw: Draw, gen: torch.Generator) -> torch.Tensor:
    dtype = leaf.dtype
    if draw.mode == "recorded" and leaf.example is not None:
        if leaf.mask and list(leaf.example.shape) != shape:
            return _resized_mask(leaf.example.detach().cpu(), shape, leaf.name)
        return resize_like(leaf.example.detach().cpu(), shape).clone()
    if dtype == torch.bool:
        return _mask(leaf, shape, draw, gen)
    additive = _additive_mask(leaf)
    if additive is not None:
        # Drawn as the 0/1 mask it encodes, then given its two values: never values in between,
        # nor the recorded minimum scaled past the dtype's range (a mask of inf and NaN).
        masked, recorded = additive
        kept = _mask(dataclasses.replace(leaf, example=recorded, mask=True), shape, draw, gen)
        return torch.where(kept, torch.zeros((), dtype=dtype), torch.full((), masked, dtype=dtype))
    if leaf.mask or _int_mask(leaf):
        return _mask(leaf, shape, draw, gen).to(dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        lo, hi = _int_range(leaf)
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int64).to(dtype)
    if leaf.low is not None or leaf.high is not None:
        lo = leaf.low if leaf.low is not None else (leaf.high - 2.0)  # type: ignore[operator,assignment]  # float here, int above
        hi = leaf.high if leaf.high is not None else lo + 2.0  # type: ignore[assignment]
        out = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
    else:
        base = torch.randn(shape, generator=gen, dtype=torch.float64)
        scale = leaf.scale
        if draw.mode == "negative":
            out = -base.abs() * scale - abs(leaf.center)
        elif draw.mode == "positive":
            out = base.abs() * scale + abs(leaf.center)
        elif draw.mode in FAR_MODES:
            out = base * scale * FAR_MODES[draw.mode]
        else:
            out = base * scale + leaf.center
    if draw.special and out.numel():
        idx = torch.randint(0, out.numel(), (max(1, out.numel() // 8),), generator=gen)
        pick = torch.randint(0, len(SPECIAL_VALUES), idx.shape, generator=gen)
        flat = out.flatten()
        flat[idx] = torch.tensor(SPECIAL_VALUES, dtype=torch.float64)[pick]
        out = flat.reshape(out.shape)
    return out.to(dtype)


def _probed(tensor: torch.Tensor, value: str, where: str) -> torch.Tensor:
    number = probe_value(value, tensor.dtype)
    if where == "all":
        return torch.full_like(tensor, number)
    out = tensor.clone()
    out[(0,) * out.dim()] = number
    return out


def _mask(leaf: LeafPlan, shape: list[int], draw: Draw, gen: torch.Generator) -> torch.Tensor:
    """A random mask in which every row keeps at least one element.

    Which value means "keep" is read from the recorded example (``kept_value``). A row with
    nothing kept is rarely a real input, so only ``special_values=True`` draws it.
    """
    p = {"positive": 0.9, "negative": 0.1}.get(draw.mode, 0.5)
    mask = torch.rand(shape, generator=gen) < p
    if leaf.example is None or leaf.example.numel() == 0 or not shape or shape[-1] == 0 or draw.special:
        return mask
    keep = kept_value(leaf.example, leaf.name)
    ascending = _padding_form(leaf.example)
    if ascending is not None or leaf.mask:
        # Draw padding on the recorded side (either side if none shows), not holes a tokenizer
        # never makes. A row of padding only is drawn only if the recorded mask had one.
        n = shape[-1]
        fewest = 0 if _padding_only_row(leaf.example, keep) else 1
        kept = torch.randint(fewest, n + 1, (*shape[:-1], 1), generator=gen)
        if ascending is None:
            left = torch.randint(0, 2, (*shape[:-1], 1), generator=gen).bool()
        else:
            left = torch.full((*shape[:-1], 1), (not ascending) != keep)
        position = torch.arange(n)
        kept_here = torch.where(left, position >= n - kept, position < kept)
        return kept_here == keep
    index = torch.randint(0, shape[-1], (*shape[:-1], 1), generator=gen)
    return mask.scatter(-1, index, torch.full(index.shape, keep))


#: Name words of a mask whose 1 marks padding (``key_padding_mask``).
PADDING_WORDS = ("pad",)


def kept_value(example: torch.Tensor, name: str = "") -> bool:
    """Which value of a recorded 0/1 mask keeps a position (True for 1).

    By name convention first (``*padding_mask`` pads with 1, ``attention_mask`` keeps with 1);
    else the value every row holds, as a tokenizer never pads a whole row; else 1 for integer
    masks and the majority value for bool ones.
    """
    lowered = name.lower()
    if any(word in lowered for word in PADDING_WORDS):
        return False
    if "attention_mask" in lowered:
        return True
    if example.dim() == 0 or example.shape[-1] == 0:
        return True
    rows = example.detach().cpu().reshape(-1, example.shape[-1]) != 0
    ones, zeros = bool(rows.any(-1).all()), bool((~rows).any(-1).all())
    if ones != zeros:
        return ones
    if example.dtype != torch.bool:
        return True
    return bool(rows.float().mean() >= 0.5)


def _padding_only_row(example: torch.Tensor, keep: bool) -> bool:
    """Whether the recorded mask has a row that keeps nothing."""
    rows = example.detach().cpu().reshape(-1, example.shape[-1]) != 0
    return bool(((rows == keep).sum(-1) == 0).any())


#: The largest value an additive attention mask puts at a masked position: transformers uses the
#: dtype's minimum, other code -inf or -1e4 (a float16-safe minimum).
ADDITIVE_MASKED = -1e4


def _additive_mask(leaf: LeafPlan) -> tuple[float, torch.Tensor] | None:
    """An additive attention mask (0 where a key is kept, one large negative value where it is
    masked, as transformers builds its 4-D masks): that value and the recorded mask as kept
    positions, else None."""
    example = leaf.example
    if example is None or not example.is_floating_point() or example.dim() < 2 or example.numel() == 0:
        return None
    if "mask" not in leaf.name.lower() or leaf.low is not None or leaf.high is not None:
        return None
    # Called on every input made: the one min/max pass rules out most tensors first.
    low, high = (float(v) for v in example.aminmax())
    if high != 0 or low > ADDITIVE_MASKED:
        return None
    kept = example == 0
    return (low, kept) if bool((kept | (example == low)).all()) else None


def _int_mask(leaf: LeafPlan) -> bool:
    """An unnamed attention mask: a recorded rank >= 2 tensor of exactly 0s and 1s."""
    example = leaf.example
    if leaf.low is not None or leaf.high is not None or example is None or example.dim() < 2:
        return False
    if example.numel() == 0 or example.is_complex() or example.dtype == torch.bool:
        return False
    # Called on every input made, so avoid ``unique``'s sort: one min/max pass rules out most
    # tensors, and only a float one with min 0 and max 1 needs an element-wise check.
    low, high = example.aminmax()
    if low.item() != 0 or high.item() != 1:
        return False
    return not example.is_floating_point() or bool(((example == 0) | (example == 1)).all())


def _resized_mask(example: torch.Tensor, shape: list[int], name: str = "") -> torch.Tensor:
    """A recorded mask at another length, padding kept at its side and each row keeping at least
    one element (a tokenizer never makes a row of padding only)."""
    out = resize_like(example, shape, edge=True).clone()
    if not shape or shape[-1] == 0 or out.numel() == 0:
        return out
    keep = kept_value(example, name)
    if _padding_only_row(example, keep):  # the test itself sent a row of padding only
        return out
    ascending = _padding_form(example)
    rows = out.reshape(-1, shape[-1])
    empty = (rows.float() >= 0.5) != keep
    lost = empty.all(dim=-1)
    if bool(lost.any()):
        # left padding keeps its last element, right padding its first
        at = -1 if (ascending is None or ascending == bool(keep)) else 0
        rows[lost, at] = torch.tensor(bool(keep), dtype=rows.dtype)
    return rows.reshape(out.shape)


def _padding_form(example: torch.Tensor) -> bool | None:
    """True when every row of a 0/1 example ascends (0s then 1s), False when every row descends,
    None otherwise (holes, or nothing padded)."""
    if example.dim() < 1 or example.shape[-1] < 2 or example.numel() == 0:
        return None
    rows = example.detach().cpu().to(torch.int8).reshape(-1, example.shape[-1])
    step = rows[:, 1:] - rows[:, :-1]
    if not bool(step.any()):
        return None
    if bool((step >= 0).all()):
        return True
    if bool((step <= 0).all()):
        return False
    return None


def _int_range(leaf: LeafPlan) -> tuple[int, int]:
    if leaf.low is not None or leaf.high is not None:
        lo = int(leaf.low) if leaf.low is not None else 0
        hi = int(leaf.high) if leaf.high is not None else lo + 9
        return lo, hi
    if leaf.example is not None and leaf.example.numel():
        # Keep token ids within the observed range, so they stay valid for their embedding.
        return int(leaf.example.min()), int(leaf.example.max())
    return 0, 9


def resize_like(example: torch.Tensor, shape: list[int], *, edge: bool = False) -> torch.Tensor:
    """The example's values at another size, rows repeating cyclically so structure survives;
    with ``edge`` a grown axis repeats its last row (``[1, 1, 0]`` -> ``[1, 1, 0, 0]``)."""
    out = example
    for ax, size in enumerate(shape):
        have = out.shape[ax]
        if have == size:
            continue
        if have == 0:
            new_shape = list(out.shape)
            new_shape[ax] = size
            return torch.zeros(new_shape, dtype=example.dtype) if size else out
        index = torch.arange(size, device=out.device)
        index = index.clamp(max=have - 1) if edge else index % have
        out = out.index_select(ax, index)
    return out


def summarize(args: tuple[Any, ...], kwargs: dict[str, Any], plan: InputPlan) -> dict[str, dict[str, Any]]:
    """Shapes, dtypes and a value summary per input, for messages and the JSON report."""
    flat = pytree.tree_leaves((args, kwargs))
    out: dict[str, dict[str, Any]] = {}
    for i, leaf in plan.tensors.items():
        t = flat[i] if i < len(flat) else None
        if not isinstance(t, torch.Tensor):
            continue
        entry: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        if t.numel():
            v = t.detach().cpu()
            if v.dtype == torch.bool:
                entry["true"] = int(v.sum())
            else:
                vf = v.double()
                finite = vf[torch.isfinite(vf)]
                if finite.numel():
                    entry.update(
                        min=_r(float(finite.min())), max=_r(float(finite.max())), mean=_r(float(finite.mean()))
                    )
                if finite.numel() != vf.numel():
                    entry["non_finite"] = int(vf.numel() - finite.numel())
        out[leaf.name] = entry
    for i in plan.scalars:
        if i < len(flat):
            out[plan.scalar_names.get(i, f"scalar{i}")] = {"value": flat[i]}
    return out


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def describe_inputs(summary: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, e in summary.items():
        if "value" in e:
            parts.append(f"{name}={e['value']!r}")
            continue
        stats = ""
        if "min" in e:
            stats = f" (min {e['min']}, max {e['max']}, mean {e['mean']})"
        elif "true" in e:
            stats = f" ({e['true']} true)"
        if e.get("non_finite"):
            stats += f" with {e['non_finite']} non-finite"
        parts.append(f"{name}: {e['dtype']}{e['shape']}{stats}")
    return "; ".join(parts)
