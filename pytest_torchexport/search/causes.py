"""The cause experiments: each suspect of a failure is undone once, and blamed only if that passes."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .._compat import quiet_torch
from ..backends.base import Backend, ExportContext, GraphLevels
from ..inputs.specs import InputPlan
from ..inputs.strategies import FAR_MODES, PADDING_WORDS, Draw, materialize
from ..reference.compare import flatten, unflatten_like
from ..reference.eager import copy_module
from .failure import Failure

if TYPE_CHECKING:
    from ..backends.base import PostProcessing
    from ..stages.check import Check


def blame(failure: Failure, still_fails: Callable[[Draw], bool | None], plan: InputPlan, export_draw: Draw) -> None:
    """Blame a suspect only when undoing it makes the failing input pass.

    The shrunk input holds every size at its minimum, so a harmless batch of 1 sits next to the
    dim that really broke the artifact. One extra run per suspect tells them apart: small dims
    grown to their export size, varied scalars set back to their recorded values.
    """
    exported = dict(export_draw.sizes)
    sizes = dict(failure.draw.sizes)
    small = {d: exported[d] for d, v in sizes.items() if v < 2 and exported.get(d, 0) >= 2}
    if small:
        grown = dataclasses.replace(failure.draw, sizes=tuple(sorted({**sizes, **small}.items())))
        failure.small_dims_blamed = still_fails(grown) is False
    recorded = dict(plan.scalars)
    varied = {i: v for i, v in failure.draw.scalars if i in recorded and v != recorded[i]}
    if varied:
        restored = dataclasses.replace(
            failure.draw, scalars=tuple((i, recorded.get(i, v)) for i, v in failure.draw.scalars)
        )
        if still_fails(restored) is False:
            failure.baked_scalars = [
                (plan.scalar_names.get(i, f"argument {i}"), recorded[i], v) for i, v in varied.items()
            ]
    far_scale(failure, still_fails)


def far_scale(failure: Failure, still_fails: Callable[[Draw], bool | None]) -> None:
    """For an input far from the recorded scale, rerun it at the recorded scale to tell an
    export defect from an ill-conditioned model."""
    factor = FAR_MODES.get(failure.draw.mode)
    if factor is not None and still_fails(dataclasses.replace(failure.draw, mode="normal")) is False:
        failure.far_scale = factor


@dataclass(frozen=True)
class RuntimeOptimizer:
    """The failing input passes with the runtime's graph rewrites off: they changed the result."""

    runtime: str
    deployed: str  # the level the check ran at (the runtime's default)
    passes_at: tuple[str, ...]  # least rewriting first
    fails_from: str  # the least rewriting level where it fails


def runtime_optimizer(
    failure: Failure, backend: Backend, artifact: object, still_fails_on: Callable[[Any, Draw], bool | None]
) -> int:
    """Rerun the failing input with the runtime's load-time graph rewrites off (onnxruntime's
    ``GraphOptimizationLevel``). If it passes, the optimizer changed the result, and the levels
    in between are tried to name the least one that breaks it.

    Sets ``failure.runtime_optimizer`` when blamed and returns how many sessions were built
    (0: not applicable). ``still_fails_on(artifact, draw)`` is the search's verdict on another artifact.
    """
    if not isinstance(backend, GraphLevels):  # only ONNX's backend has levels to rerun at
        return 0
    optimizer = backend.graph_optimizer(artifact)
    if optimizer is None or failure.status not in ("mismatch", "run_error") or failure.guard:
        return 0
    levels, deployed = optimizer.levels, optimizer.deployed
    if len(levels) < 2 or deployed not in levels:
        return 0
    below = levels[: levels.index(deployed)]
    if not below:  # already served with the rewrites off: nothing to undo
        return 0
    passes: list[str] = []
    fails_from, built = deployed, 0
    for built, level in enumerate(below, start=1):
        try:
            other = backend.at_level(artifact, level)
        except Exception:  # noqa: BLE001 - a refused session at this level tells nothing
            other = None
        # Run errors are judged inside as a run_error; any other exception is our bug and surfaces.
        verdict = None if other is None else still_fails_on(other, failure.draw)
        if verdict is False:
            passes.append(level)
            continue
        if not passes:
            return built  # fails (or cannot tell) with the rewrites off: the export's own defect
        if verdict:
            fails_from = level
        break  # None: this level cannot tell; the deployed one is the least known to fail
    failure.runtime_optimizer = RuntimeOptimizer(optimizer.runtime, deployed, tuple(passes), fails_from)
    return built


@dataclass(frozen=True)
class ShippedStep:
    """[ONNX As Shipped] The failing input passes on the model before ``step`` and fails after it."""

    step: str  # "export": the exported model already fails
    before: str | None  # the stage it passes on; None for "export"


def shipped_step(
    failure: Failure, post: PostProcessing | None, still_fails_on: Callable[[Any, Draw], bool | None]
) -> int:
    """[ONNX As Shipped] Rerun the failing input on the model after each post-processing step,
    the export first; the first that fails is the step to blame. Sets ``failure.shipped_step``
    and returns how many models ran (0: not applicable)."""
    if post is None or failure.status not in ("mismatch", "run_error") or failure.guard:
        return 0
    before = None
    for ran, (name, model) in enumerate(post.stages, start=1):
        verdict = still_fails_on(model, failure.draw)  # a model that cannot run is a run_error, so it fails
        if verdict:
            failure.shipped_step = ShippedStep(name, before)
            return ran
        if verdict is None:
            return ran
        before = name
    return len(post.stages)


@dataclass(frozen=True)
class MaskedRows:
    """The outputs differ only at queries that attend to no key (left padding before a causal
    query, or a row of padding only). A softmax over no key is each runtime's own choice (eager
    gives 0 or the like, onnxruntime the mean of V), so it is reported as such, not as a numeric defect."""

    mask: str  # the mask input's name
    positions: tuple[tuple[int, int], ...]  # (batch row, position) where the outputs differ
    outputs: tuple[str, ...]  # the output leaves that differ there
    #: Batch rows of padding only, where even a pooled output is undefined.
    rows: tuple[int, ...] = ()
    #: output elements at those positions, left out of the comparison
    elements: int = 0
    #: Batch rows whose pooled outputs (no position axis) read such a query, as eager showed
    #: (``no_key_queries_moved``): BERT's pooler reads position 0, which left padding leaves no key.
    pooled_rows: tuple[int, ...] = ()

    @property
    def left_padding(self) -> tuple[tuple[int, int], ...]:
        """The positions with no key because left padding precedes a causal query."""
        return tuple(p for p in self.positions if p[0] not in self.rows)


def is_causal(module: torch.nn.Module) -> bool:
    """Whether ``module`` attends causally, as an attention submodule's ``is_causal`` (transformers) says."""
    return (
        any(getattr(m, "is_causal", False) is True for m in module.modules())
        if isinstance(module, torch.nn.Module)
        else False
    )


def no_key_positions(
    module: torch.nn.Module,
    expected: object,
    actual: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    *,
    eager_moved: Callable[[], tuple[object, object]] | None = None,
) -> tuple[MaskedRows, Any] | None:
    """Where the attention mask leaves a query no key, outputs are undefined. Returns where ``actual``
    differs there, and ``actual`` with eager's values put there; None when nothing differs there.

    ``eager_moved()``: eager's outputs on the same input, plain and under ``no_key_queries_moved``;
    a pooled output that moves there reads an undefined query, in rows that also keep keys."""
    found = _attention_mask(args, kwargs)
    if found is None:
        return None
    name, kept = found
    # Batch rows of padding only, in this mask or in a cross-attention mask (encoder_attention_mask):
    # a decoder row whose encoder keeps nothing has no key for any of its queries.
    empty = ~kept.any(-1) | _rows_keeping_nothing(kwargs, name, kept.shape[0]).to(kept.device)
    no_key = (kept.cumsum(-1) == 0) | empty[:, None] if is_causal(module) else empty[:, None].expand_as(kept)
    if not bool(no_key.any()):
        return None
    exp_flat, _ = flatten(expected)
    act_flat, act_spec = flatten(actual)
    if len(exp_flat) != len(act_flat):
        return None
    partial = no_key.any(-1) & ~empty  # rows with an undefined query that also keep keys
    moved = _Moved(eager_moved, kept.shape, no_key) if eager_moved is not None and bool(partial.any()) else None
    patched_leaves, leaves = [], []
    differing: set[Any] = set()
    rows_differing: set[int] = set()
    pooled_rows: set[int] = set()
    masked = 0
    for (path, e), (_, a) in zip(exp_flat, act_flat):
        if not (isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor)) or tuple(a.shape) != tuple(e.shape):
            patched_leaves.append(a)
            continue
        axis = _position_axis(e, kept.shape)
        if axis is None and _pooled(e, kept.shape):
            # A pooled output has no position axis: a row of padding only is undefined, and so is
            # what eager shows to read an undefined query.
            by_row = (-1,) + (1,) * (e.dim() - 1)
            undefined = empty.to(e.device).view(by_row).expand_as(e)
            keeps_keys = partial.to(e.device).view(by_row)
            differs = e != a
            # eager runs twice more, only where a pooled value differs in a row that keeps keys
            if moved is not None and bool((differs & keeps_keys).any()):
                reads = moved.reads(path)
                if reads is not None and reads.shape == e.shape:  # eager's rerun gave this leaf its shape
                    undefined = undefined | (reads.to(e.device) & keeps_keys)
            if not bool(undefined.any()):
                patched_leaves.append(a)
                continue
            a = a.clone()
            where = differs & undefined
            if bool(where.any()):
                leaves.append(path)
                for row in where.reshape(e.shape[0], -1).any(-1).nonzero().flatten().tolist():
                    (rows_differing if bool(empty[row]) else pooled_rows).add(int(row))
            masked += int(undefined.sum())
            a[undefined] = e[undefined]
            patched_leaves.append(a)
            continue
        if axis is None:
            patched_leaves.append(a)
            continue
        a = a.clone()
        moved_e, moved_a = e.movedim(axis, 1), a.movedim(axis, 1)  # (batch, position, ...) views
        rows = no_key.to(e.device)
        where = (moved_e[rows] != moved_a[rows]).reshape(int(rows.sum()), -1).any(-1)
        if bool(where.any()):
            leaves.append(path)
            differing.update(tuple(int(i) for i in ix) for ix in rows.nonzero()[where].tolist())
        masked += int(moved_e[rows].numel())
        moved_a[rows] = moved_e[rows]
        patched_leaves.append(a)
    if not (differing or rows_differing or pooled_rows):
        return None
    rows_differing.update(b for b, _ in differing if bool(empty[b]))
    found_rows = MaskedRows(
        name,
        tuple(sorted(differing)),
        tuple(leaves),
        tuple(sorted(rows_differing)),
        masked,
        tuple(sorted(pooled_rows)),
    )
    return found_rows, unflatten_like(patched_leaves, act_spec)


class _Moved:
    """Which elements of eager's outputs move when the queries that attend to no key are perturbed:
    those read such a query. Trusted only where nothing at a defined position moved, so a model
    whose outputs differ between two runs, or a perturbation that leaked, tells nothing."""

    def __init__(self, run: Callable[[], tuple[object, object]], mask_shape: torch.Size, no_key: torch.Tensor) -> None:
        self._run, self._shape, self._no_key = run, mask_shape, no_key
        self._reads: dict[str, torch.Tensor] | None = None

    def reads(self, path: str) -> torch.Tensor | None:
        if self._reads is None:
            self._reads = self._compare()
        return self._reads.get(path)

    def _compare(self) -> dict[str, torch.Tensor]:
        try:
            plain, moved = self._run()
        except Exception:  # noqa: BLE001 - eager refusing a rerun tells nothing: nothing is left out
            return {}
        plain_flat, moved_flat = flatten(plain)[0], flatten(moved)[0]
        if [p for p, _ in plain_flat] != [p for p, _ in moved_flat]:
            return {}
        reads: dict[str, torch.Tensor] = {}
        for (path, p), (_, m) in zip(plain_flat, moved_flat):
            if not (isinstance(p, torch.Tensor) and isinstance(m, torch.Tensor)) or p.shape != m.shape:
                continue
            changed = (p != m) & ~(p.isnan() & m.isnan()) if p.is_floating_point() else p != m
            axis = _position_axis(p, self._shape)
            if axis is not None:
                if bool(changed.movedim(axis, 1)[~self._no_key.to(p.device)].any()):
                    return {}  # a defined position moved: the rerun is not the same computation
                continue
            if _pooled(p, self._shape):
                reads[path] = changed
        return reads


@contextlib.contextmanager
def no_key_queries_moved() -> Iterator[None]:
    """``scaled_dot_product_attention`` with noise added to its outputs at queries whose mask keeps
    no key, so that any output reading one of them moves while the rest stays the same bit for bit.
    (A masked key's weight is exactly 0, so the noise reaches no other query.) Models whose attention
    does not call it are not perturbed, and nothing they return is left out."""
    functional = torch.nn.functional
    generator = torch.Generator().manual_seed(0)

    original: Callable[..., torch.Tensor] = functional.scaled_dot_product_attention  # its options pass through

    def moved(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        *options: object,  # dropout_p, is_causal, ...: torch's MultiheadAttention passes them by position
        **named: object,
    ) -> torch.Tensor:
        out = original(query, key, value, attn_mask, *options, **named)
        if not isinstance(attn_mask, torch.Tensor) or not isinstance(out, torch.Tensor):
            return out
        if attn_mask.dtype == torch.bool:
            none = ~attn_mask.any(-1)
        elif attn_mask.is_floating_point():
            none = (attn_mask <= torch.finfo(attn_mask.dtype).min / 2).all(-1)  # -inf, or the dtype's min
        else:
            return out
        if not bool(none.any()):
            return out
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
        try:
            return torch.where(none.unsqueeze(-1), out + noise, out)
        except RuntimeError:  # a mask laid out otherwise: left as it is
            return out

    functional.scaled_dot_product_attention = moved
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def _pooled(leaf: torch.Tensor, mask_shape: torch.Size) -> bool:
    """Whether ``leaf`` holds one value (or vector) per batch row of the mask."""
    return leaf.dim() >= 1 and leaf.shape[0] == mask_shape[0]


def _attention_mask(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[str, torch.Tensor] | None:
    """The 2-D (batch, position) 0/1 input named like a mask, as a bool tensor of the kept positions."""
    for name, value in (kwargs or {}).items():
        kept = _kept(name, value)
        if kept is not None:
            return name, kept
    return None


def _kept(name: str, value: object) -> torch.Tensor | None:
    """A 2-D (batch, position) 0/1 input named like a mask, as a bool tensor of the kept positions."""
    if "mask" in name and isinstance(value, torch.Tensor) and value.dim() == 2 and not value.is_floating_point():
        if bool(((value == 0) | (value == 1)).all()):
            pads = any(word in name.lower() for word in PADDING_WORDS)  # key_padding_mask: True pads
            return ~value.bool() if pads else value.bool()
    return None


def _rows_keeping_nothing(kwargs: dict[str, Any] | None, besides: str, batch: int) -> torch.Tensor:
    """The batch rows that another 2-D 0/1 mask of the call (a cross-attention mask) keeps nothing of."""
    empty = torch.zeros(batch, dtype=torch.bool)
    for name, value in (kwargs or {}).items():
        kept = _kept(name, value) if name != besides else None
        if kept is not None and kept.shape[0] == batch:
            empty |= ~kept.any(-1).cpu()
    return empty


def _position_axis(leaf: torch.Tensor, mask_shape: torch.Size) -> int | None:
    """The axis of ``leaf`` that runs over the mask's positions (dim 0 is its batch), or None."""
    if leaf.dim() < 2 or leaf.shape[0] != mask_shape[0]:
        return None
    return next((axis for axis in range(1, leaf.dim()) if leaf.shape[axis] == mask_shape[1]), None)


@dataclass(frozen=True)
class KeywordOrder:
    """The artifact binds keyword arguments by order, not name: re-exported in ``forward``'s order,
    the failing input passes (it differed from eager, or raised). torch.export's non-strict capture of an fx ``GraphModule`` does this
    (torch 2.13), e.g. feeding ``attention_mask`` to ``token_type_ids``."""

    passed: tuple[str, ...]  # the order the test passed them in
    declared: tuple[str, ...]  # forward's order


def keyword_order(check: Check, failure: Failure) -> KeywordOrder | None:
    """Re-export with the keyword arguments in ``forward``'s order; blame the order only if the
    failing input then passes."""
    # A mismatch, or a run error: a token id fed to a smaller embedding is out of its range.
    if failure.status not in ("mismatch", "run_error") or failure.state or check.artifacts is None:
        return None
    module = check.eager.module
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):  # a forward with no signature Python can read
        return None
    passed = list(failure.kwargs or {})
    declared = sorted(passed, key=lambda k: params.index(k) if k in params else len(params))
    if declared == passed:
        return None
    args, kwargs = materialize(check.plan, check.artifacts.export_draw, check.device)
    kwargs = {k: kwargs[k] for k in sorted(kwargs, key=lambda k: params.index(k) if k in params else len(params))}
    # A separate folder, so this export cannot overwrite the check's own artifact files.
    scratch = check.scratch / "keyword-order"
    scratch.mkdir(exist_ok=True)
    ctx = ExportContext(device=check.device, plan=check.plan, module=module, scratch=scratch)
    try:
        # Quiet, as the check's own export: an exporter's warnings are no error here, even under -W error.
        with torch.no_grad(), quiet_torch():
            artifact = check.backend.export(copy_module(module), args, kwargs, ctx)
            # Fed in forward's order too: ONNX feeds a call's tensors by position.
            actual, _ = check.run(artifact, failure.args, {k: failure.kwargs[k] for k in declared})
    except Exception:  # noqa: BLE001 - such a failure tells nothing about the order
        return None
    expected = check.eager(failure.args, failure.kwargs).outputs
    if not check.compare(expected, actual).ok:
        return None
    return KeywordOrder(tuple(passed), tuple(declared))
