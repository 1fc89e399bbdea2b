"""Input specs: one declaration drives hypothesis, ``torch.export`` and ONNX dynamic axes.

``Dim`` names a dynamic dimension; ``TensorSpec`` describes one tensor input. An ``InputPlan``,
inferred from the recorded call when nothing is declared, is the single source for the
strategies, the exporters' dynamic shapes and ONNX dynamic axes. Inputs are named after
``forward``'s parameters (``leaf_name``). See docs/howto-dims.md.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import pytree, tree_flatten_with_path
from ..errors import InvalidArgument

DEFAULT_DIM = "batch"
#: Default sequence dims (``_sequence_axes``); decoder tokens have their own length.
SEQUENCE_DIM = "seq"
DECODER_SEQUENCE_DIM = "decoder_seq"
#: A waveform's length (AUDIO_WORDS), searched like a text model's sequence.
SAMPLES_DIM = "samples"
#: A decode step's KV cache length (``_past_axes``): its mask is this dim plus the step's tokens.
PAST_DIM = "past"
#: The dims named by default, when the user declares none.
DEFAULT_DIMS = (DEFAULT_DIM, SEQUENCE_DIM, DECODER_SEQUENCE_DIM, SAMPLES_DIM, PAST_DIM)


def derived(entry: object) -> tuple[str, int] | None:
    """``("past", 1)`` for the shape entry ``"past+1"``: a size that is a dim's plus a constant, as a
    decode step's mask is its cache's length plus its tokens'. None for a plain entry."""
    if isinstance(entry, str) and "+" in entry:
        base, offset = entry.split("+", 1)
        if offset.isdigit():
            return base, int(offset)
    return None


def entry_size(entry: int | str, sizes: Mapping[str, int]) -> int:
    """The size of one shape entry under the dim ``sizes``: an int as it is, a dim's size, a derived
    entry's base size plus its offset (0 for a dim ``sizes`` lacks)."""
    if not isinstance(entry, str):
        return entry
    found = derived(entry)
    if found is not None:
        return sizes.get(found[0], 0) + found[1]
    return sizes.get(entry, 0)


@dataclass(frozen=True)
class Dim:
    """A named dynamic dimension: ``Dim("batch", 1, 32)``. Same name, same size everywhere."""

    name: str
    min: int = 1
    max: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise InvalidArgument(f"Dim name must be an identifier, got {self.name!r}")
        if not (isinstance(self.min, int) and isinstance(self.max, int) and 0 <= self.min <= self.max):
            raise InvalidArgument(
                f"Dim({self.name!r}) needs integers 0 <= min <= max, got min={self.min!r}, max={self.max!r}"
            )


@dataclass(frozen=True)
class TensorSpec:
    """One tensor input: ``TensorSpec(("batch", "seq"), torch.int64, 0, 999)``.

    Shape entries are ints, dim names declared in ``dims=``, or ``Dim``s; ``low``/``high`` are inclusive.
    """

    shape: tuple[int | str | Dim, ...]
    dtype: torch.dtype = torch.float32
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.shape, (tuple, list)):
            raise InvalidArgument(f"TensorSpec shape must be a tuple of ints and dim names, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(self.shape))
        for entry in self.shape:
            if (
                not isinstance(entry, (int, str, Dim))
                or isinstance(entry, bool)
                or (isinstance(entry, int) and entry < 0)
            ):
                raise InvalidArgument(
                    f"TensorSpec shape entries are ints >= 0 or dim names, got {entry!r} in {self.shape!r}"
                )
        if not isinstance(self.dtype, torch.dtype):
            raise InvalidArgument(f"TensorSpec dtype must be a torch.dtype, got {self.dtype!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InvalidArgument(f"TensorSpec low={self.low!r} is above high={self.high!r}")


@dataclass
class LeafPlan:
    """How to make one tensor input."""

    path: str
    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype
    low: float | None
    high: float | None
    example: torch.Tensor | None
    scale: float = 1.0
    center: float = 0.0
    #: an attention mask: drawn as padding, never as holes
    mask: bool = False

    def describe(self) -> str:
        return f"{self.name}: {str(self.dtype).removeprefix('torch.')}[{', '.join(map(str, self.shape))}]"


@dataclass
class InputPlan:
    """Everything the engine needs to make, vary and export a module's inputs."""

    tree: Any  # (args, kwargs)
    spec: pytree.TreeSpec
    leaves: list[Any]  # flat leaves of ``tree``
    tensors: dict[int, LeafPlan]  # flat index -> plan, for tensor leaves
    scalars: dict[int, Any]  # flat index -> recorded Python scalar
    scalar_names: dict[int, str]  # flat index -> forward's parameter name
    dims: dict[str, Dim]
    param_names: list[str]
    recorded: bool  # the example values are real, not placeholders built from specs
    # dim name -> largest size drawn, set by the memory budget; exports still use ``dims``
    caps: dict[str, int] = field(default_factory=dict)

    @property
    def args(self) -> tuple[Any, ...]:
        return self.tree[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.tree[1]

    def example_sizes(self) -> dict[str, int]:
        """Dim sizes of the example call."""
        sizes: dict[str, int] = {}
        for index, leaf in self.tensors.items():
            example = leaf.example if leaf.example is not None else self.leaves[index]
            for entry, size in zip(leaf.shape, example.shape):
                if isinstance(entry, str) and derived(entry) is None:
                    sizes.setdefault(entry, int(size))
        return sizes

    def describe(self) -> str:
        return ", ".join(leaf.describe() for leaf in self.tensors.values())

    def draw_max(self, name: str) -> int:
        """The largest size drawn for a dim: its declared max, clipped by the memory budget."""
        d = self.dims[name]
        return max(d.min, min(d.max, self.caps.get(name, d.max)))

    # -- what the exporters need -------------------------------------------------------
    @property
    def derives(self) -> bool:
        """Whether a shape entry is derived from a dim (``"past+1"``)."""
        return any(derived(e) is not None for leaf in self.tensors.values() for e in leaf.shape)

    def export_dynamic_shapes(
        self, module: torch.nn.Module, relaxed: frozenset[str] = frozenset(), *, derived_auto: bool = False
    ) -> dict[str, Any] | tuple[Any, ...] | None:
        """``dynamic_shapes`` for ``torch.export``/dynamo ONNX: keyed by forward's parameter names.

        ``relaxed`` dims are left to the exporter (``Dim.AUTO``), for when the model's code
        proved a declared range impossible, so the artifact can still be checked; with
        ``derived_auto`` so are derived entries, for an exporter that cannot name an expression.
        """
        if not any(isinstance(e, str) for leaf in self.tensors.values() for e in leaf.shape):
            return None
        if derived_auto:  # the dims derived entries come from go to the exporter too, or it finds them violated
            relaxed = relaxed | {
                found[0] for leaf in self.tensors.values() for e in leaf.shape if (found := derived(e))
            }
        tdims: dict[str, Any] = {
            name: torch.export.Dim.AUTO if name in relaxed else torch.export.Dim(name, min=max(d.min, 0), max=d.max)
            for name, d in self.dims.items()
        }

        def exported(entry: str) -> object:
            # A derived entry ("past+1") is its dim plus the offset, unless left to the exporter: the
            # dynamo ONNX exporter fails on an expression ("expected sympy.Symbol", torch 2.13).
            found = derived(entry)
            if found is None:
                return tdims[entry]
            base = tdims[found[0]]
            return torch.export.Dim.AUTO if derived_auto or base is torch.export.Dim.AUTO else base + found[1]

        flat = []
        for i in range(len(self.leaves)):
            if i in self.tensors:
                entries = self.tensors[i].shape
                axes = {ax: exported(e) for ax, e in enumerate(entries) if isinstance(e, str)}
                flat.append(axes or None)
            else:
                flat.append(None)
        args_shapes, kwargs_shapes = _as_exported(self.tree, flat)
        names = self.param_names
        bound: dict[str, Any] = {}
        positional = list(args_shapes)
        rest = var_positional(module)
        if rest is None and len(positional) > len(names):  # no signature to bind to
            return (*positional, *kwargs_shapes.values()) if not kwargs_shapes else None
        for name, shapes in zip(names, positional):
            bound[name] = shapes
        if rest is not None and len(positional) > len(names):
            # torch.export binds the call to forward's signature, so `forward(self, *xs)` called
            # as (a, b) is one input xs=(a, b), and its shapes must be one tuple too.
            bound[rest] = tuple(positional[len(names) :])
        bound.update(kwargs_shapes)
        return bound

    def onnx_input_names(self) -> list[str]:
        return [leaf.name for _, leaf in sorted(self.tensors.items())]

    def onnx_dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {}
        for leaf in self.tensors.values():
            dyn = {ax: e for ax, e in enumerate(leaf.shape) if isinstance(e, str)}
            if dyn:
                axes[leaf.name] = dyn
        return axes

    def static_in(self, shapes: list[tuple[Any, ...]] | None) -> list[tuple[str, int, str, int]]:
        """Declared-dynamic axes that an artifact's input shapes fix: (input, axis, dim, size)."""
        if not shapes:
            return []
        found = []
        for (_, leaf), shape in zip(sorted(self.tensors.items()), shapes):
            for ax, entry in enumerate(leaf.shape):
                if isinstance(entry, str) and derived(entry) is None and ax < len(shape) and isinstance(shape[ax], int):
                    found.append((leaf.name, ax, entry, shape[ax]))
        return found


def _as_exported(
    tree: tuple[tuple[object, ...], dict[str, object]], values: list[Any]
) -> tuple[tuple[object, ...], dict[str, object]]:
    """``tree`` with its leaves replaced by ``values`` and each pytree-registered class (e.g.
    transformers' ``DynamicCache``) replaced by its flattened children: ``torch.export`` takes
    dynamic shapes for such inputs in that form, since the class may not hold dim specs."""
    it = iter(values)

    def is_leaf(t: object) -> bool:  # pytree treats a namedtuple as a tuple
        return type(t) not in pytree.BUILTIN_TYPES and not isinstance(t, tuple)

    def each(t: object) -> object:
        kind = type(t)
        if kind in pytree.SUPPORTED_NODES:
            return pytree.tree_map(each, pytree.SUPPORTED_NODES[kind].flatten_fn(t)[0], is_leaf=is_leaf)
        return next(it)

    return pytree.tree_map(each, tree, is_leaf=is_leaf)


def plan_inputs(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    *,
    dims: Mapping[str, tuple[int, int]] | None = None,
    dynamic: Mapping[Any, Mapping[int, str]] | None = None,
    inputs: object = None,
) -> InputPlan:
    """Build the plan from the example call (and the user's declarations, when given)."""
    kwargs = dict(kwargs or {})
    param_names = forward_params(module)
    declared_dims: dict[str, Dim] = {}
    for name, rng in (dims or {}).items():
        declared_dims[name] = Dim(name, *rng)
    if inputs is not None:
        args, kwargs, spec_by_index = _from_specs(inputs, args, kwargs, declared_dims)
    else:
        spec_by_index = {}
    tree = (tuple(args), kwargs)
    with_path, spec = tree_flatten_with_path(tree)
    leaves = [leaf for _, leaf in with_path]
    paths = [pytree.keystr(p) for p, _ in with_path]
    tensor_idx = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    rest = var_positional(module)
    names = {i: leaf_name(paths[i], param_names, rest) for i in tensor_idx}
    dedupe(names)

    axes_for = _dynamic_axes(spec_by_index, dynamic, leaves, tensor_idx, (paths, names, param_names))
    tensors = _leaf_plans(leaves, tensor_idx, axes_for, spec_by_index, (paths, names))
    if not spec_by_index:
        _embedding_ranges(module, tensors)
    all_dims = _all_dims(tensors, declared_dims)

    scalars = {i: leaf for i, leaf in enumerate(leaves) if isinstance(leaf, (bool, int, float)) and i not in tensors}
    scalar_names = {i: leaf_name(paths[i], param_names, rest) for i in scalars}
    return InputPlan(
        tree=tree,
        spec=spec,
        leaves=leaves,
        tensors=tensors,
        scalars=scalars,
        scalar_names=scalar_names,
        dims=all_dims,
        param_names=param_names,
        recorded=not spec_by_index,
    )


def _dynamic_axes(
    spec_by_index: dict[int, Any],
    dynamic: Mapping[Any, Mapping[int, str]] | None,
    leaves: list[Any],
    tensor_idx: list[int],
    naming: tuple[list[str], dict[int, str], list[str]],
) -> dict[int, dict[int, str]]:
    """Which dims are dynamic: as declared, else the defaults (batch, then sequence)."""
    paths, names, param_names = naming
    axes_for: dict[int, dict[int, str]] = {}
    if spec_by_index:
        for i, ts in spec_by_index.items():
            axes_for[i] = {
                ax: (e.name if isinstance(e, Dim) else e) for ax, e in enumerate(ts.shape) if isinstance(e, (str, Dim))
            }
    elif dynamic is not None:
        for key, axes in dynamic.items():
            i = resolve_input(key, paths, names, tensor_idx, param_names)
            axes_for[i] = dict(axes)
    else:
        batched = _batched(leaves, tensor_idx, names)
        if batched:
            for i in batched:
                axes_for[i] = {0: DEFAULT_DIM}
            # A sequence is searched only beside a batch (graph edge lists [2, E] can share a size
            # without being one). ``encoder_*`` inputs of a decoder call have the encoder's length,
            # which may equal the decoder's by coincidence, so they keep their recorded sizes.
            for dim, prefix in ((SEQUENCE_DIM, ""), (DECODER_SEQUENCE_DIM, "decoder_")):
                members = [i for i in batched if _group(names[i]) == prefix]
                found = _sequence_axes(leaves, members, names)
                if prefix == "" and any(_is_audio(leaves[i], names[i]) for i in found):
                    dim = SAMPLES_DIM  # a waveform's samples (and its mask)
                for i in found:
                    axes_for[i][1] = dim
                for i in _cache_axes(leaves, [i for i in batched if i not in found], names, found):
                    axes_for[i][2] = dim
            for i, entry in _past_axes(leaves, batched, names, axes_for).items():
                axes_for[i][2 if entry == PAST_DIM else 1] = entry
    return axes_for


def _past_axes(
    leaves: list[Any], batched: list[int], names: dict[int, str], axes_for: dict[int, dict[int, str]]
) -> dict[int, str]:
    """A decode step's KV cache length, searched: the cache tensors (``[batch, heads, length,
    head_dim]``, all one length L) get ``past`` on dim 2, and each 2-D mask, of length L plus the
    step's q tokens, ``past+q``. Only where every mask has that length, so a static cache (whose mask
    spans its fixed size) keeps its shape; and only beside token ids, which give q."""
    caches = [i for i in batched if 2 not in axes_for[i] and _kv_cache(leaves[i], names[i])]
    lengths = {int(leaves[i].shape[2]) for i in caches}
    if not caches or len(lengths) != 1 or (length := lengths.pop()) < 1:
        return {}
    flat2 = [
        i
        for i in batched
        if leaves[i].dim() == 2
        and not (leaves[i].is_floating_point() or leaves[i].is_complex())
        and 1 not in axes_for[i]
    ]
    masks = [i for i in flat2 if "mask" in names[i].lower()]
    ids = {int(leaves[i].shape[1]) for i in flat2 if i not in masks and any(w in names[i].lower() for w in ID_WORDS)}
    if len(ids) != 1 or (step := ids.pop()) < 1:
        return {}
    if any(int(leaves[i].shape[1]) != length + step for i in masks):
        return {}
    return {**{i: PAST_DIM for i in caches}, **{i: f"{PAST_DIM}+{step}" for i in masks}}


#: Name words of a KV cache input (``past_key_values``).
CACHE_WORDS = ("cache", "past")


def _cache_axes(leaves: list[Any], others: list[int], names: dict[int, str], found: list[int]) -> list[int]:
    """The KV cache tensors (``[batch, heads, length, head_dim]``) whose length is the sequence of
    ``found``, so a draw never pairs ids of one length with a cache of another."""
    if not found:
        return []
    length = int(leaves[found[0]].shape[1])
    return [i for i in others if _kv_cache(leaves[i], names[i]) and int(leaves[i].shape[2]) == length]


def _kv_cache(t: torch.Tensor, name: str) -> bool:
    """A KV cache tensor: 4-D float (``[batch, heads, length, head_dim]``), named like a cache."""
    return t.dim() == 4 and t.is_floating_point() and any(word in name.lower() for word in CACHE_WORDS)


#: Text-model inputs without a batch dim (``head_mask [layers, heads]``).
UNBATCHED_WORDS = ("head_mask",)


def _batched(leaves: list[Any], tensor_idx: list[int], names: dict[int, str]) -> list[int]:
    """The tensor inputs whose dim 0 is the default batch dim: all of them if they share that size.
    A text model's unbatched inputs (``head_mask``) are left out so they do not block the batch."""
    if not tensor_idx or not all(leaves[i].dim() > 0 for i in tensor_idx):
        return []
    first = leaves[tensor_idx[0]]
    text = first.dim() == 2 and not (first.is_floating_point() or first.is_complex() or first.dtype == torch.bool)
    carrying = [i for i in tensor_idx if not (text and any(w in names[i].lower() for w in UNBATCHED_WORDS))]
    return carrying if len({leaves[i].shape[0] for i in carrying}) == 1 else []


def _group(name: str) -> str | None:
    """An input's sequence group: ``"decoder_"``, None for ``encoder_*`` inputs, or ``""`` for the call's own."""
    lowered = name.lower()
    return "decoder_" if lowered.startswith("decoder_") else None if lowered.startswith("encoder_") else ""


#: Name words that make dim 1 a sequence.
SEQUENCE_WORDS = ("ids", "token", "mask", "embeds")
#: Names of a 2-D float raw-audio input whose length is searched: transformers' ``input_values``
#: (Wav2Vec2, HuBERT, WavLM). Other waveform names keep their recorded length, because on-device
#: audio models are often served fixed windows and XNNPACK's reshape takes one dynamic dim
#: (docs/howto-edge.md); declare ``dynamic=`` to search them.
AUDIO_WORDS = ("input_values",)


def _sequence_axes(leaves: list[Any], tensor_idx: list[int], names: dict[int, str]) -> list[int]:
    """The inputs whose dim 1 is one default sequence dim (see docs/howto-dims.md).

    Candidates (chosen by dtype, rank or name, never by a size shared by coincidence) are 2-D
    integer/bool inputs, 3-D float ``*embeds`` and raw audio. Dim 1 is the sequence when they
    share a size above 1 (one token is a decode step) and several share it or a name says so.
    """
    candidates = []
    for i in tensor_idx:
        t, words = leaves[i], names[i].lower()
        token_like = t.dim() == 2 and (t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()))
        embeds = t.dim() == 3 and t.is_floating_point() and "embeds" in words
        if token_like or embeds or _is_audio(t, words):
            candidates.append(i)
    if not candidates:
        return []
    lengths = {int(leaves[i].shape[1]) for i in candidates}
    if len(lengths) != 1 or lengths.pop() < 2:
        return []
    if len(candidates) == 1 and not any(word in names[candidates[0]].lower() for word in SEQUENCE_WORDS + AUDIO_WORDS):
        return []
    return candidates


def _is_audio(t: torch.Tensor, name: str) -> bool:
    """A (batch, samples) float input named like raw audio."""
    return t.dim() == 2 and t.is_floating_point() and any(word in name.lower() for word in AUDIO_WORDS)


#: Name words of an integer input that indexes an embedding.
ID_WORDS = ("ids", "token")


def _embedding_ranges(module: torch.nn.Module, tensors: dict[int, LeafPlan]) -> None:
    """Draw integer inputs named like ids within the embedding they index, found without calling
    the module: by name stem, else ``get_input_embeddings()``, else the smallest fitting one."""
    embeddings = [(name, sub) for name, sub in module.named_modules() if isinstance(sub, torch.nn.Embedding)]
    if not embeddings:
        return
    ids: dict[int, tuple[str, int]] = {}
    for index, leaf in tensors.items():
        words, example = leaf.name.lower(), leaf.example
        if (
            leaf.mask
            or leaf.dtype == torch.bool
            or leaf.dtype.is_floating_point
            or leaf.dtype.is_complex
            or example is None
            or example.numel() == 0
            or not any(w in words for w in ID_WORDS)
        ):
            continue
        low, high = (int(v) for v in example.aminmax())
        if low >= 0:
            ids[index] = (words.removesuffix("_ids").removesuffix("ids").strip("_"), high)
    found: dict[int, Any] = {}
    for index, (stem, high) in ids.items():
        named = [sub for name, sub in embeddings if stem and stem in name.rsplit(".", 1)[-1].lower()]
        if stem not in ("", "input") and len(named) == 1 and named[0].num_embeddings > high:
            found[index] = named[0]
    claimed = {id(sub) for sub in found.values()}
    own = getattr(module, "get_input_embeddings", None)
    try:
        given = own() if callable(own) else None
    except (NotImplementedError, AttributeError):
        given = None
    for index, (_, high) in ids.items():
        if index in found:
            continue
        if isinstance(given, torch.nn.Embedding) and given.num_embeddings > high:
            found[index] = given
            continue
        holding = [sub for _, sub in embeddings if id(sub) not in claimed and sub.num_embeddings > high]
        if holding:
            found[index] = min(holding, key=lambda sub: sub.num_embeddings)
    for index, sub in found.items():
        tensors[index].low, tensors[index].high = 0.0, float(sub.num_embeddings - 1)


def _leaf_plans(
    leaves: list[Any],
    tensor_idx: list[int],
    axes_for: dict[int, dict[int, str]],
    spec_by_index: dict[int, Any],
    naming: tuple[list[str], dict[int, str]],
) -> dict[int, LeafPlan]:
    """Each tensor input's plan, with its dynamic dims named."""
    paths, names = naming
    tensors: dict[int, LeafPlan] = {}
    for i in tensor_idx:
        t = leaves[i]
        axes = axes_for.get(i, {})
        for ax in axes:
            if ax >= t.dim() or ax < -t.dim():
                raise InvalidArgument(f"dynamic= names dim {ax} of input {names[i]!r}, which has shape {list(t.shape)}")
        shape = tuple(axes.get(ax, axes.get(ax - t.dim(), int(s))) for ax, s in enumerate(t.shape))
        ts = spec_by_index.get(i)
        low = ts.low if ts else None
        high = ts.high if ts else None
        tensors[i] = LeafPlan(
            path=paths[i],
            name=names[i],
            shape=shape,
            dtype=t.dtype,
            low=low,
            high=high,
            example=None if ts is not None else t.detach(),
            mask=ts is None and _is_mask(t, names[i]),
            **_value_stats(t, low, high),
        )
    return tensors


#: Name words of a mask input.
MASK_WORDS = ("mask",)


def _is_mask(t: torch.Tensor, name: str) -> bool:
    """A 0/1 input named like a mask, or an integer input of rank >= 2 holding exactly 0s and 1s."""
    if t.numel() == 0 or t.is_floating_point() or t.is_complex():
        return False
    low, high = (int(v) for v in t.aminmax()) if t.dtype != torch.bool else (0, 1)
    if low < 0 or high > 1:
        return False
    if any(word in name.lower() for word in MASK_WORDS):
        return True
    return t.dtype != torch.bool and t.dim() >= 2 and (low, high) == (0, 1)


def _all_dims(tensors: dict[int, LeafPlan], declared_dims: dict[str, Dim]) -> dict[str, Dim]:
    """The declared dims plus a default range for dims named only by the inputs; each dim must
    have one size in the example, within its range."""
    example_sizes: dict[str, list[int]] = {}
    for leaf in tensors.values():
        for entry, size in zip(leaf.shape, leaf.example.shape if leaf.example is not None else leaf.shape):
            if isinstance(entry, str) and derived(entry) is None and isinstance(size, int):
                example_sizes.setdefault(entry, []).append(size)
    all_dims = dict(declared_dims)
    for name, sizes in example_sizes.items():
        if len(set(sizes)) > 1:
            raise InvalidArgument(
                f"dim {name!r} has different sizes in the example inputs ({sorted(set(sizes))}); "
                "inputs that share a dim name must share its size"
            )
        if name not in all_dims:
            n = sizes[0]
            all_dims[name] = Dim(name, 1, max(16, 2 * n))
        elif not all_dims[name].min <= sizes[0] <= all_dims[name].max:
            d = all_dims[name]
            raise InvalidArgument(
                f"the example's {name!r} size {sizes[0]} is outside dims={{{name!r}: ({d.min}, {d.max})}}"
            )
    for leaf in tensors.values():
        for e in leaf.shape:
            if isinstance(e, str) and (derived(e) or (e, 0))[0] not in all_dims:
                raise InvalidArgument(
                    f"dim {e!r} is used but not declared in dims=; declared: {', '.join(all_dims) or '(none)'}"
                )
    return all_dims


def _value_stats(t: torch.Tensor, low: float | None, high: float | None) -> dict[str, float]:
    if not t.is_floating_point() or t.numel() == 0:
        return {"scale": 1.0, "center": 0.0}
    finite = t.detach().float()
    finite_mask = torch.isfinite(finite)
    if not bool(finite_mask.all()):  # copy only when there is a NaN or inf
        finite = finite[finite_mask]
    if finite.numel() == 0:
        return {"scale": 1.0, "center": 0.0}
    std = float(finite.std()) if finite.numel() > 1 else 0.0
    low_value, high_value = torch.aminmax(finite)
    absmax = max(-float(low_value), float(high_value))
    scale = std if std > 0 else (absmax if absmax > 0 else 1.0)
    if not math.isfinite(scale):
        scale = 1.0
    return {"scale": scale, "center": float(finite.mean())}


def _from_specs(
    inputs: object, args: tuple[Any, ...], kwargs: dict[str, Any], dims: dict[str, Dim]
) -> tuple[tuple[Any, ...], dict[str, Any], dict[int, TensorSpec]]:
    """Replace the example call by placeholders built from ``inputs=`` specs."""
    if isinstance(inputs, Mapping):
        in_args, in_kwargs = (), dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        in_args, in_kwargs = tuple(inputs), {}
    else:
        raise InvalidArgument(f"inputs= takes a tuple of specs (positional) or a dict (keyword), got {inputs!r}")
    for leaf in pytree.tree_leaves((in_args, in_kwargs), is_leaf=lambda x: isinstance(x, TensorSpec)):
        if isinstance(leaf, TensorSpec):
            for e in leaf.shape:
                if isinstance(e, Dim):
                    dims.setdefault(e.name, e)
                elif isinstance(e, str) and e not in dims:
                    raise InvalidArgument(
                        f"TensorSpec shape {leaf.shape!r} uses dim {e!r}, which dims= does not declare; "
                        f"declared: {', '.join(dims) or '(none)'}"
                    )

    def placeholder(spec: TensorSpec) -> torch.Tensor:
        shape = [_placeholder_size(e, dims) for e in spec.shape]
        return torch.zeros(shape, dtype=spec.dtype)

    flat, tspec = pytree.tree_flatten((in_args, in_kwargs), is_leaf=lambda x: isinstance(x, TensorSpec))
    by_index = {i: s for i, s in enumerate(flat) if isinstance(s, TensorSpec)}
    values = [placeholder(s) if isinstance(s, TensorSpec) else s for s in flat]
    new_args, new_kwargs = pytree.tree_unflatten(values, tspec)
    return tuple(new_args), dict(new_kwargs), by_index


def _placeholder_size(entry: int | str | Dim, dims: dict[str, Dim]) -> int:
    if isinstance(entry, int):
        return entry
    d = dims[entry.name if isinstance(entry, Dim) else entry]
    return min(max(d.min, 2), d.max)


# --- which input is which: leaves named after forward's parameters ----------------------------------


#: One step of a ``keystr`` path: ``[0]``, ``['x']``, ``["x"]`` or ``.field``.
_PATH_PART = re.compile(r"""\[(?:'([^']*)'|"([^"]*)"|(-?\d+))\]|\.(\w+)""")


def forward_params(module: torch.nn.Module) -> list[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def var_positional(module: torch.nn.Module) -> str | None:
    """The name of forward's ``*args`` parameter, if it has one."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    return next((p.name for p in sig.parameters.values() if p.kind is p.VAR_POSITIONAL), None)


def leaf_name(path: str, param_names: list[str], var_positional: str | None) -> str:
    # path looks like "[0][1]['x']" over (args, kwargs), or "[0][0].a" for a dataclass field.
    parts = [next(g for g in groups if g) for groups in _PATH_PART.findall(path)]
    if not parts:
        return "input"
    head = parts[0]
    rest = parts[1:]
    if head == "0" and rest:
        idx = int(rest[0])
        if idx < len(param_names):
            base = param_names[idx]
        else:  # a position of *args
            base = f"{var_positional}_{idx - len(param_names)}" if var_positional else f"arg{idx}"
        rest = rest[1:]
    elif head == "1" and rest:
        base, rest = rest[0], rest[1:]
    else:
        base = "input"
    return "_".join([base, *rest]) if rest else base


def dedupe(names: dict[int, str]) -> None:
    seen: dict[str, int] = {}
    for i, name in names.items():
        if name in seen:
            seen[name] += 1
            names[i] = f"{name}_{seen[name]}"
        else:
            seen[name] = 0


def resolve_input(
    key: int | str, paths: list[str], names: dict[int, str], tensor_idx: list[int], params: list[str]
) -> int:
    if isinstance(key, int):
        candidates = [i for i in tensor_idx if paths[i].startswith(f"[0][{key}]")]
    else:
        candidates = [i for i in tensor_idx if names[i] == key or paths[i] == f"[1]['{key}']"]
        if not candidates and key in params:
            pos = params.index(key)
            candidates = [i for i in tensor_idx if paths[i].startswith(f"[0][{pos}]")]
    if len(candidates) != 1:
        raise InvalidArgument(
            f"dynamic= names input {key!r}, which is not one tensor input; "
            f"tensor inputs: {', '.join(names[i] for i in tensor_idx)}"
        )
    return candidates[0]
