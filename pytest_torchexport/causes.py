"""The cause experiments: each suspect of a failure is undone once, and blamed only if that passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .outcome import Failure
from .specs import InputPlan
from .strategies import FAR_MODES, Draw


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
