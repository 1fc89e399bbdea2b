"""The plugin's own guesses, tested once per check before anything is held to them.

An assumed batch dim that eager rejects at other sizes is held at the example's size, and a dim
grown from 0/1 to 2 for the export is exported once at its recorded size, as a user's script
would. Declared dims stay strict. See docs/howto-dims.md.
"""

from __future__ import annotations

import dataclasses

from ..backends.base import ExportContext
from ..inputs.specs import (
    DECODER_SEQUENCE_DIM,
    DEFAULT_DIM,
    DEFAULT_DIMS,
    PAST_DIM,
    SAMPLES_DIM,
    SEQUENCE_DIM,
    InputPlan,
    derived,
    entry_size,
)
from ..inputs.strategies import materialize, recorded_draw
from ..options import Options
from ..reference.eager import Eager, ModelRaised
from ..results import explain
from ..results.report import Finding, Result
from .check import Check
from .exporting import export_once, quiet_call


def assumed_batch(plan: InputPlan, options: Options, name: str = DEFAULT_DIM) -> bool:
    """Whether dim ``name`` is in the plan only because nothing was declared."""
    return options.dynamic is None and options.inputs is None and name in plan.dims and name not in (options.dims or {})


def _on(entry: object, name: str) -> bool:
    """Whether a shape entry is dim ``name`` or derived from it."""
    return entry == name or (derived(entry) or ("", 0))[0] == name


#: What the finding calls each assumed dim.
ASSUMED = {
    DEFAULT_DIM: "dim 0 of the inputs was assumed to be a batch dim",
    SEQUENCE_DIM: "dim 1 of the token inputs was assumed to be a sequence dim",
    DECODER_SEQUENCE_DIM: "dim 1 of the decoder's token inputs was assumed to be a sequence dim",
    SAMPLES_DIM: "dim 1 of the audio inputs was assumed to be a waveform's length",
    PAST_DIM: "dim 2 of the KV cache was assumed to be its length, and the mask's to be that plus the step's tokens",
}


def hold_rejected_batch(plan: InputPlan, eager: Eager, options: Options, result: Result) -> InputPlan:
    """Hold each assumed dim at the example's size where eager rejects other sizes (not 1: broadcasting)."""
    for name in DEFAULT_DIMS:
        if assumed_batch(plan, options, name):
            plan = _hold_rejected(plan, eager, result, name)
    return plan


def _hold_rejected(plan: InputPlan, eager: Eager, result: Result, name: str) -> InputPlan:
    dim = plan.dims[name]
    size = plan.example_sizes().get(name)
    if size is None:
        return plan
    others = [s for s in (size + 1, size + 2, size - 1) if s >= 2 and dim.min <= s <= dim.max and s != size][:2]
    if len(others) < 2:
        return plan
    rejected = []
    draw = recorded_draw(plan)
    for other in others:
        sizes = tuple((k, other if k == name else v) for k, v in draw.sizes)
        args, kwargs = materialize(plan, dataclasses.replace(draw, sizes=sizes), eager.device)
        try:
            eager(args, kwargs)
        except ModelRaised as raised:  # eager refusing the size is the answer
            rejected.append((other, f"{type(raised.error).__name__}: {explain.trim_error(raised.error, limit=1)}"))
    if len(rejected) < len(others):
        return plan
    sizes_text = " and ".join(str(s) for s, _ in rejected)
    result.findings.append(
        Finding(
            "assumed_dim",
            f"{ASSUMED[name]} (nothing declared it), but eager rejects sizes "
            f"{sizes_text} ({rejected[0][1].splitlines()[0][:200]}): it is not one, so it was held at the example's "
            f"size {size} and no exporter is held to it. Declare dynamic= or dims= if it does vary",
        )
    )
    tensors = {
        i: dataclasses.replace(
            leaf, shape=tuple(entry_size(e, {name: size}) if _on(e, name) else e for e in leaf.shape)
        )
        for i, leaf in plan.tensors.items()
    }
    dims = {k: v for k, v in plan.dims.items() if k != name}
    return dataclasses.replace(plan, tensors=tensors, dims=dims)


def recorded_size_export(check: Check) -> None:
    """One export at the recorded sizes, for a dim the check grew from 0/1 to 2 for its export.

    ``torch.export`` assumes dynamic sizes are >= 2 and makes a size of 0 or 1 a constant.
    """
    backend, plan, result, scratch = check.backend, check.plan, check.result, check.scratch
    grown = check.export_sizes
    if not grown or not backend.specializes_small_dims:
        return
    recorded = dict(recorded_draw(plan).sizes)
    small = {d: recorded[d] for d in grown if d in recorded and recorded[d] < 2}
    if not small:
        return
    args, kwargs = materialize(plan, recorded_draw(plan), result.device)
    (scratch / "recorded-size").mkdir(exist_ok=True)
    ctx = ExportContext(device=result.device, plan=plan, module=check.eager.module, scratch=scratch / "recorded-size")
    artifact, failure = export_once(check, args, kwargs, ctx)
    at = ", ".join(f"{d}={s}" for d, s in sorted(small.items()))
    name = result.backend
    if failure is not None:
        # trim_error ends a cut message with a "..." line: the reason is the last line before it.
        lines = explain.trim_error(failure, limit=2).splitlines()
        why = [line.strip() for line in lines if line.strip() not in ("", "...")]
        detail = f"fails ({why[-1][:200] if why else type(failure).__name__})"
    else:
        static = {dim for _, _, dim, _ in plan.static_in(quiet_call(result, backend.input_shapes, artifact))}
        if not static & set(small):
            return
        detail = f"makes {', '.join(sorted(static & set(small)))} a constant"
    result.findings.append(
        Finding(
            "specialized_dim",
            f"exported at the recorded size {at}, as an export script given this example would do it, {name} "
            f"{detail}: {name} assumes dynamic sizes are >= 2. This check exported at size 2; export at a size "
            ">= 2 in your own script too",
        )
    )
