"""The cause experiments: each suspect of a failure is undone once, and blamed only if that passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend
from ..inputs.specs import InputPlan
from ..inputs.strategies import FAR_MODES, Draw
from .failure import Failure


def blame(failure: Failure, still_fails: Callable[[Draw], bool | None], plan: InputPlan, export_draw: Draw) -> None:
    """[Cause Experiments] Blame a suspect only when undoing it makes the failing input pass.

    The shrunk input is the smallest that fails, so it holds *every* size at its minimum:
    a batch of 1 sits next to the sequence length that really broke the artifact, and a
    varied scalar next to a harmless batch size. One extra run per suspect tells them
    apart: the small dims grown to their export size, the varied scalars set back to the
    recorded values.
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
        restored = dataclasses.replace(failure.draw, scalars=tuple((i, recorded.get(i, v)) for i, v in failure.draw.scalars))
        if still_fails(restored) is False:
            failure.baked_scalars = [(plan.scalar_names.get(i, f"argument {i}"), recorded[i], v) for i, v in varied.items()]
    far_scale(failure, still_fails)


def far_scale(failure: Failure, still_fails: Callable[[Draw], bool | None]) -> None:
    """An input far from the recorded scale (``special_values=True``'s x100, x1e-3): the
    same draw at the recorded scale tells an export defect from an ill-conditioned model."""
    factor = FAR_MODES.get(failure.draw.mode)
    if factor is not None and still_fails(dataclasses.replace(failure.draw, mode="normal")) is False:
        failure.far_scale = factor


@dataclass(frozen=True)
class RuntimeOptimizer:
    """The failing input passes with the runtime's graph rewrites off: they changed the result."""

    runtime: str  # "onnxruntime 1.32.0"
    deployed: str  # the level the check ran at, the runtime's default (ORT_ENABLE_ALL)
    passes_at: tuple[str, ...]  # the levels where the input passes, least rewriting first
    fails_from: str  # the least rewriting level where it fails


def runtime_optimizer(
    failure: Failure, backend: Backend, artifact: Any, still_fails_on: Callable[[Any, Draw], bool | None]
) -> int:
    """[Runtime Optimizer] An artifact whose runtime rewrites the graph at load (onnxruntime's
    ``GraphOptimizationLevel``, ``Backend.graph_optimizer``): rerun the failing input with the
    rewrites off. When that passes, the exported graph is right and the runtime's optimizer
    changed the result, so the levels in between are tried too, to name the least one that
    breaks it.

    Sets ``failure.runtime_optimizer`` (a ``RuntimeOptimizer``) when blamed; returns how
    many sessions were built (0: not applicable). ``still_fails_on(artifact, draw)`` is the
    search's own verdict with another artifact in the loaded one's place.
    """
    optimizer = backend.graph_optimizer(artifact)
    if optimizer is None or failure.status not in ("mismatch", "run_error") or failure.guard:
        return 0
    levels, deployed = optimizer.levels, optimizer.deployed
    if len(levels) < 2 or deployed not in levels:
        return 0
    below = levels[: levels.index(deployed)]
    if not below:  # served with the rewrites off already (an offline-optimized file): nothing to undo
        return 0
    passes: list[str] = []
    fails_from, built = deployed, 0
    for built, level in enumerate(below, start=1):
        try:
            other = backend.at_level(artifact, level)
        except Exception:  # noqa: BLE001 - a runtime may refuse a session at this level in any way; it tells nothing
            other = None
        # Its run's errors are judged inside (a run_error); anything else is a bug of ours and surfaces.
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

    step: str  # "export": the exported model already fails, before any step
    before: str | None  # the stage it passes on ("export", or an earlier step); None for "export"


def shipped_step(failure: Failure, post: Any, still_fails_on: Callable[[Any, Draw], bool | None]) -> int:
    """[ONNX As Shipped] A post-processed artifact (``Backend.post_processing``): rerun the failing
    input on the model after each step in turn, the export first, judged as the artifact is;
    the first that fails names the step to blame. Sets ``failure.shipped_step``; returns how
    many models ran (0: not applicable)."""
    if post is None or failure.status not in ("mismatch", "run_error") or failure.guard:
        return 0
    before = None
    for ran, (name, model) in enumerate(post.stages, start=1):
        verdict = still_fails_on(model, failure.draw)  # a stage's model that cannot run is a run_error: it fails
        if verdict:
            failure.shipped_step = ShippedStep(name, before)
            return ran
        if verdict is None:
            return ran
        before = name
    return len(post.stages)
