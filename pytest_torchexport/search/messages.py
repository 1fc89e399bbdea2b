"""What a person reads: the message and findings that explain a check's outcome.

Pure composition over what the search recorded (``Stats``, the shrunk ``Failure``): no
exporting, no pytest. Headline first, then the smallest failing input, the numbers, the
likely cause at the user's line, and the remedy last, as ``torch.testing`` writes a mismatch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..inputs.specs import InputPlan
from ..inputs.strategies import describe_inputs, materialize, summarize
from ..reference.noise import verdict_words
from ..results import explain
from ..results.outcome import Outcome
from ..results.report import CauseKind, Finding, Result
from ..stages.check import Check
from .failure import Failure, Stats
from .likely_cause import likely_cause
from .located_words import diverges_at
from .shipped_words import budget_remedy, check_budget
from .shipped_words import shipped_words as shipped_words  # search.py names it from here


def vacuous_finding(result: Result, stats: Stats) -> None:
    if stats.examples < 2 or not stats.vacuous:
        return
    if all(zero or const for zero, const, _ in stats.vacuous.values()):
        detail = ", ".join(
            f"{p or '(the output)'} {'is ~0' if z else f'is always {v:g}'}" for p, (z, c, v) in stats.vacuous.items()
        )
        result.findings.append(
            Finding(
                "vacuous_output",
                f"every output is constant or near zero on all {stats.examples} inputs ({detail}), so parity proves "
                "nothing: random-init heads, an uncalibrated BatchNorm? Load trained weights or a calibrated state.",
            )
        )


def rejection_finding(result: Result, stats: Stats, plan: InputPlan) -> None:
    if stats.rejected and stats.rejected >= stats.examples:
        result.findings.append(
            Finding(
                "rejected_inputs",
                f"eager rejected {stats.rejected} of {stats.rejected + stats.examples} generated inputs: "
                f"declare the valid sizes and values with dims=/inputs= (now: {plan.describe()}; dims "
                + ", ".join(f"{d.name}=({d.min}, {d.max})" for d in plan.dims.values())
                + ")",
            )
        )


def pass_message(check: Check, stats: Stats) -> str:
    assert check.artifacts is not None
    parts = [f"{check.name} matches eager on {stats.examples} inputs {check.header}"]
    if len(stats.paths) > 1:
        parts.append(f"the inputs took {len(stats.paths)} control-flow paths through the model's code")
    elif stats.paths:
        parts.append("every input took the same path through the model's code, so control flow was not exercised")
    recorded = dict(check.recorded.draw.sizes)
    grown = ", ".join(
        f"{d}={new} (recorded {recorded[d]})" for d, new in check.artifacts.export_draw.sizes if new != recorded.get(d)
    )
    if grown:
        parts.append(f"exported at {grown}: exporters turn sizes 0 and 1 into constants; size 1 was still drawn")
    return "; ".join(parts)


def nothing_compared(check: Check, stats: Stats) -> Outcome:
    """A check whose outputs held nothing to compare: skipped, not a pass; why, and what to change."""
    leaves = stats.compared.leaves if stats.compared is not None else {}
    held = (
        ", ".join(
            f"{kind} {n}" if not isinstance(n, dict) else ", ".join(f"{why} skipped {m}" for why, m in n.items())
            for kind, n in leaves.items()
        )
        or "none"
    )
    why = (
        f"on {stats.examples} inputs eager's outputs held no element to compare (leaves: {held}; 0 elements), "
        "so matching them proves nothing about the export."
    )
    return Outcome(
        "skipped",
        f"{check.name} compared nothing {check.header}: {why}\n"
        "Return the tensors the model computes from forward, or check the module whose outputs matter (module=)",
        f"{check.name} compared nothing: {why}",
        "nothing_compared",
    )


def explain_failure(check: Check, failure: Failure, stats: Stats, export_path: Any) -> Outcome:
    """The verdict on the search's shrunk ``failure``; ``export_path``: the lines the export
    example ran, where it is the recorded call."""
    result, name, header = check.result, check.name, check.header
    check.failure = failure  # kept by --torchexport-bundle with the inputs tried
    summary = summarize(failure.args, failure.kwargs, check.plan)
    result.failing_example = {"inputs": summary, "draw": failure.draw.describe()}
    if failure.state is not None:
        return _state_lost(check, failure, stats, summary)
    headline = {
        "mismatch": f"Exported outputs differ from eager {header}",
        "run_error": (
            f"The {name} artifact accepted an input outside the shapes its export proved {header}"
            if failure.guard
            else f"The {name} artifact raised on an input eager accepts {header}"
        ),
        "roundtrip_mismatch": f"The {name} artifact changed in the save/load round trip {header}",
    }[failure.status]
    lines = [
        headline,
        f"Failed on {stats.failed} of {stats.examples} inputs tried (search and shrinking); smallest failing input:",
        f"  {describe_inputs(summary)}",
    ]
    numbers, passes_with = _numbers(result, failure)
    lines += numbers + _error_lines(check, failure) + diverges_at(result, failure, name)
    cause, kind = likely_cause(check, failure, stats, export_path)
    if cause:
        lines.append(f"Likely cause: {cause}")
    lines += _reproduce(check, failure) + _remedy(failure, name, passes_with, result)
    return Outcome(failure.status, "\n".join(lines), cause, kind)  # type: ignore[arg-type]  # a failure's status is a Status


def _state_lost(check: Check, failure: Failure, stats: Stats, summary: Any) -> Outcome:
    """[State After Every Input] The outputs matched eager's on the failing input; the state the
    artifact kept after it did not (or its second call from that state shows it did not)."""
    assert failure.state is not None and failure.comparison is not None
    names, what = failure.state
    state, name, cmp = ", ".join(names[:3]), check.name, failure.comparison
    result = check.result
    result.max_abs_err, result.max_rel_err = cmp.max_abs, cmp.max_rel
    at_recorded = "" if check.mutates_state else " (the recorded call left it unchanged)"
    kind: CauseKind
    compared = (
        f"the {name} artifact's buffers after the input differ from eager's"
        if what == "buffers"
        else "a second call on the same input, from the state the first left, differs from eager's second call"
    )
    if failure.status == "roundtrip_mismatch":
        cause = (
            f"forward updates {state} on this input{at_recorded}; the in-memory artifact keeps the update and the loaded "
            f"one does not: {compared.replace(f'the {name} artifact', 'the loaded artifact')}, both called the same "
            "number of times from the same state."
        )
        headline, kind = f"The {name} artifact changed in the save/load round trip {check.header}", "roundtrip"
        remedy = f'Save the buffers {state} with the artifact (persistent=True), or mark it known with xfail={{"{name}": "reason"}}'
        result.findings.append(
            Finding("side_effects", f"{name} loses the state update of {state} in the save/load round trip")
        )
    else:
        cause = (
            f"forward updates {state} on this input{at_recorded}; the {name} artifact does not keep the update: "
            f"{compared} (each started from the module's initial state)."
        )
        headline, kind = f"Side effects differ from eager {check.header}", "side_effects"
        remedy = (
            "Return the updated state as an output instead of keeping it in a buffer, or use a backend that keeps "
            f'buffers (export, script); or mark it known with xfail={{"{name}": "reason"}}'
        )
        result.findings.append(
            Finding("side_effects", f"{name} loses the state update of {state} on inputs that change it")
        )
    lines = [
        headline,
        f"Failed on {stats.failed} of {stats.examples} inputs tried (search and shrinking); smallest failing input:",
        f"  {describe_inputs(summary)}",
        f"State compared: {', '.join(names[:5])} ({what})",
        *cmp.lines(),
        f"Likely cause: {cause}",
        *_reproduce(check, failure),
        remedy,
    ]
    return Outcome(failure.status, "\n".join(lines), cause, kind)  # type: ignore[arg-type]  # a failure's status is a Status


def _numbers(result: Result, failure: Failure) -> tuple[list[str], dict[str, float] | None]:
    """The comparison's lines, its numbers recorded on ``result``; and the tolerances that would pass."""
    cmp, lines, passes_with = failure.comparison, [], None
    if cmp is not None:
        result.max_abs_err, result.max_rel_err = cmp.max_abs, cmp.max_rel
        result.rtol, result.atol = cmp.rtol, cmp.atol
        if cmp.diffs:
            worst = max(cmp.diffs, key=lambda d: d.max_abs)
            passes_with = {"atol": worst.needed_atol, "rtol": worst.needed_rtol}
            result.extra.update(error_p50=worst.p50, error_p99=worst.p99, passes_with=passes_with)
        if failure.status == "roundtrip_mismatch":
            lines.append("The loaded artifact differs from the one in memory:")
        lines += cmp.lines()
    if failure.status == "run_error":
        result.max_abs_err = result.max_rel_err = None  # the failing input produced no numbers
    return lines, passes_with


def _error_lines(check: Check, failure: Failure) -> list[str]:
    """What the artifact raised, at the user's line; the torch.export guard the input violates."""
    lines, result = [], check.result
    if failure.error is not None:
        err = failure.error
        lines.append(explain.trim_error(err, limit=8))
        site = explain.innermost_user_frame(err)
        if site:
            result.findings.append(
                Finding("error_site", f"the artifact raised at {explain.where(*site)}", explain.where(*site))
            )
    if failure.guard:
        result.findings.append(
            Finding(
                "specialized_dim",
                f"the input violates a guard torch.export proved for this model ({failure.guard}), yet the {check.name} "
                "artifact ran it: the ONNX graph drops torch.export's runtime asserts",
            )
        )
        if failure.comparison is None:
            lines.append(
                f"The artifact ran and returned values, but torch.export's guard fails on this input: {failure.guard}"
            )
    return lines


def _reproduce(check: Check, failure: Failure) -> list[str]:
    """How to see it again: onnxruntime's setting, the replay file, the kept artifact."""
    lines = []
    optimizer = failure.runtime_optimizer
    if optimizer is not None:
        best = optimizer.passes_at[-1]
        lines.append(
            "Reproduce: so = onnxruntime.SessionOptions(); so.graph_optimization_level = "
            f'onnxruntime.GraphOptimizationLevel.{optimizer.fails_from}; onnxruntime.InferenceSession("model.onnx", so) '
            f"differs from eager on this input, and with {best} it matches. Serve with {best} until onnxruntime fixes "
            "the rewrite (report it with the model and this input)"
        )
    repro = _save_repro(check, failure)
    if repro and check.result.failing_example is not None:
        check.result.failing_example["repro"] = repro
        lines.append(f"Replay: python -m pytest_torchexport replay {repro}")
    if check.artifact_dir:
        from ..stages.artifacts import link_replay

        lines.append(f"Artifact kept in {check.artifact_dir} (as saved, with its readable form)")
        if repro:
            link_replay(check.artifact_dir, repro)
    return lines


def _remedy(failure: Failure, name: str, passes_with: dict[str, float] | None, result: Result) -> list[str]:
    """The last lines: what to change (the tolerance that would pass, the argument to pass as a tensor)."""
    lines = []
    xfail = f'mark it known with xfail={{"{name}": "reason"}}'
    if failure.status == "mismatch" and passes_with and check_budget(result) is not None:
        lines.append(budget_remedy(failure, result, xfail))
    elif failure.status == "mismatch" and passes_with:
        pw = passes_with
        # [Noise Oracle] Only the float64 run may call a difference a defect (noise.py).
        verdict = (
            "all of it at query positions that attend to no key"
            if failure.masked_rows is not None
            else verdict_words(failure.noise)
        )
        if failure.noise is not None:
            result.extra["float64_check"] = failure.noise.as_dict()
        noise = failure.noise
        if noise is not None and noise.judged and not noise.rounding and failure.masked_rows is None:
            # The float64 run called it a defect: no tolerance is the fix, so none is offered.
            fix = "" if failure.baked_scalars else f" Fix the cause above, or {xfail}"
            lines.append(f"This is {verdict}.{fix}")
            return lines + _scalars_remedy(failure, xfail)
        remedy = (
            "" if failure.baked_scalars else f' Loosen with rtol=/atol= (per backend: {{"{name}": ...}}) or {xfail}'
        )
        verdict = f" ({verdict})" if verdict else ""
        lines.append(f"Would pass with atol={pw['atol']:.3g} or rtol={pw['rtol']:.3g}{verdict}.{remedy}")
    scalars = _scalars_remedy(failure, xfail)
    if scalars:
        lines += scalars
    elif failure.status == "run_error":
        lines.append(f"Declare the sizes the model supports with dims=, or {xfail}")
    return lines


def _scalars_remedy(failure: Failure, xfail: str) -> list[str]:
    if not failure.baked_scalars:
        return []
    args = ", ".join(arg for arg, _, _ in failure.baked_scalars)
    return [f"Pass {args} as a tensor if callers vary it, or leave vary_scalars off if it is a constant; or {xfail}"]


def _save_repro(check: Check, failure: Failure) -> str | None:
    options, session, name, device, plan = check.options, check.session, check.name, check.device, check.plan
    if not options.repro_dir:
        return None
    from .repro import save

    directory = Path(options.repro_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", (session.test or "check").rsplit("::", 1)[-1]).strip("_")
    path = directory / f"{stem}-{name}{'' if device == 'cpu' else '-' + device}.pt"
    assert check.artifacts is not None
    export_args, export_kwargs = materialize(plan, check.artifacts.export_draw, "cpu")
    save(
        path,
        module=check.eager.module,
        backend=name,
        device=device,
        export_inputs=(export_args, export_kwargs),
        failing_inputs=tuple(v.cpu() if isinstance(v, torch.Tensor) else v for v in failure.args),
        failing_kwargs={k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in failure.kwargs.items()},
        options={"dims": dict(options.dims), "dynamic": options.dynamic, "rtol": check.rtol, "atol": check.atol},
        test=session.nodeid or session.test,
        artifact_dir=check.artifact_dir,
    )
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel
