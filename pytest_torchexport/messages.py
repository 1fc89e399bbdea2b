"""What a person reads: the message and findings that explain a check's outcome.

Pure composition over what the search recorded (``Stats``, the shrunk ``Failure``): no
exporting, no pytest. Headline first, then the smallest failing input, the numbers, the
likely cause at the user's line, and the remedy last (STYLE habit 6).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from . import explain
from .backends.base import Backend
from .noise import verdict_words
from .options import Options
from .outcome import Failure, Stats
from .report import Finding, Result
from .session import Session
from .specs import InputPlan
from .strategies import Draw, describe_inputs, materialize, probe_value, summarize


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


def pass_message(result: Result, stats: Stats, header: str, export_draw: Draw, seed_draw: Draw) -> str:
    parts = [f"{result.backend} matches eager on {stats.examples} inputs {header}"]
    if len(stats.paths) > 1:
        parts.append(f"the inputs took {len(stats.paths)} control-flow paths through the model's code")
    elif stats.paths:
        parts.append("every input took the same path through the model's code, so control flow was not exercised")
    recorded = dict(seed_draw.sizes)
    grown = ", ".join(f"{d}={new} (recorded {recorded[d]})" for d, new in export_draw.sizes if new != recorded.get(d))
    if grown:
        parts.append(f"exported at {grown}: exporters turn sizes 0 and 1 into constants; size 1 was still drawn")
    return "; ".join(parts)


def explain_failure(
    result: Result, failure: Failure, stats: Stats, backend: Backend, plan: InputPlan, options: Options,
    session: Session, name: str, header: str, export_path: Any, rtol: float | None, atol: float | None,
    eager_module: torch.nn.Module, device: str, export_draw: Draw,
) -> None:
    summary = summarize(failure.args, failure.kwargs, plan)
    result.status = failure.status
    result.failing_example = {"inputs": summary, "draw": failure.draw.describe()}
    headline = {
        "mismatch": f"Exported outputs differ from eager {header}",
        "run_error": (
            f"The {name} artifact accepted an input outside the shapes its export proved {header}"
            if failure.guard
            else f"The {name} artifact raised on an input eager accepts {header}"
        ),
        "roundtrip_mismatch": f"The {name} artifact changed in the save/load round trip {header}",
    }[failure.status]
    lines = [headline]
    lines.append(
        f"Failed on {stats.failed} of {stats.examples} inputs tried (search and shrinking); smallest failing input:"
    )
    lines.append(f"  {describe_inputs(summary)}")
    if failure.comparison is not None:
        cmp = failure.comparison
        result.max_abs_err, result.max_rel_err = cmp.max_abs, cmp.max_rel
        result.rtol, result.atol = cmp.rtol, cmp.atol
        if cmp.diffs:
            worst = max(cmp.diffs, key=lambda d: d.max_abs)
            result.extra.update(
                error_p50=worst.p50,
                error_p99=worst.p99,
                passes_with={"atol": worst.needed_atol, "rtol": worst.needed_rtol},
            )
        if failure.status == "roundtrip_mismatch":
            lines.append("The loaded artifact differs from the one in memory:")
        lines += cmp.lines()
    if failure.status == "run_error":
        result.max_abs_err = result.max_rel_err = None  # the failing input produced no numbers
    if failure.error is not None:
        err = failure.error
        lines.append(explain.trim_error(err, limit=8))
        site = explain.innermost_user_frame(err)
        if site:
            result.findings.append(Finding("error_site", f"the artifact raised at {explain.where(*site)}", explain.where(*site)))
    if failure.guard:
        result.findings.append(
            Finding(
                "specialized_dim",
                f"the input violates a guard torch.export proved for this model ({failure.guard}), yet the {name} "
                "artifact ran it: the ONNX graph drops torch.export's runtime asserts",
            )
        )
        if failure.comparison is None:
            lines.append(f"The artifact ran and returned values, but torch.export's guard fails on this input: {failure.guard}")
    lines += _diverges_at(result, failure, name)
    cause = _likely_cause(result, failure, stats, plan, export_path, name, backend)
    if cause:
        lines.append(f"Likely cause: {cause}")
    optimizer = failure.runtime_optimizer
    if optimizer is not None:
        best = optimizer.passes_at[-1]
        lines.append(
            "Reproduce: so = onnxruntime.SessionOptions(); so.graph_optimization_level = "
            f"onnxruntime.GraphOptimizationLevel.{optimizer.fails_from}; onnxruntime.InferenceSession(\"model.onnx\", so) "
            f"differs from eager on this input, and with {best} it matches. Serve with {best} until onnxruntime fixes "
            "the rewrite (report it with the model and this input)"
        )
    repro = _save_repro(failure, plan, options, session, name, eager_module, device, export_draw, result)
    if repro:
        result.failing_example["repro"] = repro
        lines.append(f"Replay: python -m pytest_torchexport.replay {repro}")
    if result.extra.get("artifact_dir"):
        from .artifacts import link_replay

        lines.append(f"Artifact kept in {result.extra['artifact_dir']} (as saved, with its readable form)")
        if repro:
            link_replay(result.extra["artifact_dir"], repro)
    xfail = f'mark it known with xfail={{"{name}": "reason"}}'
    if failure.status == "mismatch" and result.extra.get("passes_with"):
        pw = result.extra["passes_with"]
        # [Noise Oracle] Only the float64 run may call a difference a defect (noise.py).
        verdict = verdict_words(failure.noise)
        if failure.noise is not None:
            result.extra["float64_check"] = failure.noise.as_dict()
        remedy = "" if failure.baked_scalars else f' Loosen with rtol=/atol= (per backend: {{"{name}": ...}}) or {xfail}'
        verdict = f" ({verdict})" if verdict else ""
        lines.append(f"Would pass with atol={pw['atol']:.3g} or rtol={pw['rtol']:.3g}{verdict}.{remedy}")
    if failure.baked_scalars:
        args = ", ".join(arg for arg, _, _ in failure.baked_scalars)
        lines.append(f"Pass {args} as a tensor if callers vary it, or leave vary_scalars off if it is a constant; or {xfail}")
    elif failure.status == "run_error":
        lines.append(f"Declare the sizes the model supports with dims=, or {xfail}")
    result.message = "\n".join(lines)


def _diverges_at(result: Result, failure: Failure, name: str) -> list[str]:
    """Where the artifact first computes differently, with its own code there (localize.py)."""
    located = failure.diverges_at
    if located is None:
        if failure.no_localization:
            result.extra["diverges_at_unavailable"] = failure.no_localization
            return [f"Diverges at: unknown (localisation {failure.no_localization})"]
        return []
    from .localize import MESSAGE_LINES

    result.extra["diverges_at"] = located.as_dict()
    where = located.module or "(top level)"
    given = (
        "given eager's own input to it" if located.method == "isolated"
        else "in the artifact's own run, where every module before it agrees"
    )
    if located.module:
        detail = (
            f"{where} ({located.cls}) is the first module whose {name} output differs from eager's {given} "
            f"(max abs err {located.max_abs_err:.3g}); its submodules agree, so its own code diverges"
        )
    else:
        detail = (
            f"no submodule of {located.cls} differs on its own input: the top-level module's own code diverges "
            f"(max abs err {located.max_abs_err:.3g})"
        )
    result.findings.append(Finding("diverges_at", detail, where))
    lines = [
        f"Diverges at: {where} ({located.cls}), max abs err {located.max_abs_err:.3g} {given}" if located.module
        else f"Diverges at: the top-level module's own code ({located.cls}): no submodule differs on its own input"
    ]
    excerpt = located.excerpt.splitlines()
    if excerpt:
        lines.append(f"  the {name} artifact's code there:")
        lines += [f"    {line}" for line in excerpt[:MESSAGE_LINES]]
        if len(excerpt) > MESSAGE_LINES:
            lines.append(f"    ... ({len(excerpt) - MESSAGE_LINES} more lines in the report's diverges_at)")
    return lines


def _optimizer_cause(result: Result, failure: Failure, name: str) -> str | None:
    optimizer = failure.runtime_optimizer
    if optimizer is None:
        return None
    result.findings.append(
        Finding(
            "runtime_optimizer",
            f"{optimizer.runtime}'s graph optimizer changes the {name} artifact's result: the failing input passes "
            f"at {', '.join(optimizer.passes_at)} and fails from {optimizer.fails_from} on ({optimizer.deployed} is "
            "the default, as deployed), so the exported graph is right and a rewrite onnxruntime applies when it "
            "loads the model is not",
        )
    )
    result.extra["runtime_optimizer"] = {
        "runtime": optimizer.runtime, "deployed": optimizer.deployed, "passes_at": list(optimizer.passes_at),
        "fails_from": optimizer.fails_from,
    }
    return (
        f"not the export: {optimizer.runtime}'s graph optimizer at {optimizer.deployed}. The same input passes with "
        f"graph optimizations off ({optimizer.passes_at[0]}) and fails from {optimizer.fails_from} on, so a rewrite "
        "onnxruntime applies when it loads the model changes the result"
    )


def _probe_cause(failure: Failure, plan: InputPlan) -> str | None:
    """[Special Probes] A failing probe is the recorded input, which passed, with one special value."""
    probe = failure.draw.probe
    if probe is None:
        return None
    index, value, where = probe
    leaf = plan.tensors.get(index)
    input_name = leaf.name if leaf is not None else f"input {index}"
    number = {"nan": "NaN", "inf": "+inf", "-inf": "-inf", "0.0": "+0.0", "-0.0": "-0.0"}.get(value)
    if number is None and leaf is not None:
        words = {"max": "largest value", "min": "most negative value", "tiny": "smallest normal number"}[value]
        number = f"{str(leaf.dtype).removeprefix('torch.')}'s {words} ({probe_value(value, leaf.dtype):.4g})"
    place = "the first element of" if where == "one" else "every element of"
    return (
        f"the special value {number or value} in {place} {input_name} (a special_values=True probe): the same "
        f"input without it passes, so the artifact treats {number or value} differently from eager"
    )


def _likely_cause(
    result: Result, failure: Failure, stats: Stats, plan: InputPlan, export_path: Any, name: str,
    backend: Backend | None = None,
) -> str | None:
    small = [f"{k}={v}" for k, v in failure.draw.sizes if v < 2]
    if backend is not None and backend.specializes_small_dims and failure.small_dims_blamed and failure.path != export_path:
        result.findings.append(
            Finding(
                "specialized_dim",
                f"{name} captures the model through torch.export, which assumes every dynamic size is >= 2 while "
                f"tracing; with {', '.join(small)} the model takes another path, which the artifact does not have",
            )
        )
    baked = [
        Finding(
            "baked_argument",
            f"{name} baked the argument {arg}={recorded!r} into the artifact: the failing input has "
            f"{arg}={failing!r}, and with {arg}={recorded!r} the same input passes",
        )
        for arg, recorded, failing in failure.baked_scalars
    ]
    result.findings.extend(baked)
    causes = [c for c in (_optimizer_cause(result, failure, name), _probe_cause(failure, plan)) if c]
    causes += [f.detail for f in baked]
    causes += [f.detail for f in result.findings if f.kind in ("frozen_branch", "baked_shape", "frozen_value", "specialized_dim")]
    path_note = _path_note(failure, stats, export_path, name)
    if path_note:
        causes.append(path_note)
    if not causes and failure.status == "run_error" and failure.small_dims_blamed is not False:
        sizes = dict(failure.draw.sizes)
        exported = {**plan.example_sizes(), **result.extra.get("export_sizes", {})}
        differ = [f"{k}={sizes[k]} (exported at {exported.get(k)})" for k in sizes if sizes[k] != exported.get(k)]
        if differ:
            causes.append(f"a size baked into the artifact: the failing input has {', '.join(differ)}")
    if failure.far_scale is not None:
        causes.append(
            f"fails only at inputs ~{failure.far_scale:g}x the example's scale (drawn by special_values=True): "
            "the same input at the example's scale passes, so the model is ill-conditioned there, "
            "which may be rounding rather than an export defect"
        )
    nonfinite = sum(d.one_sided_nonfinite for d in (failure.comparison.diffs if failure.comparison else []))
    if nonfinite:
        causes.append(
            f"{nonfinite} output element(s) are NaN or inf on one side only: the artifact and eager handle an edge "
            "case differently (a fully masked softmax row, an overflow, a division by zero)"
        )
    if failure.status == "roundtrip_mismatch":
        causes.append(
            f"the {name} artifact loaded from disk computes differently from the one in memory: the save/load "
            "path changed weights, dtypes or ops"
        )
    custom = failure.comparison is not None and failure.comparison.custom_message is not None
    if not causes and not custom and stats.paths and len(stats.paths) == 1 and failure.status == "mismatch":
        located = failure.diverges_at
        if located is not None and located.module:
            causes.append(
                f"the difference starts in {located.module} ({located.cls}), whose code in the artifact computes "
                "differently; every input took the same control-flow path, so it is numeric, not a frozen branch"
            )
        else:
            causes.append("every input took the same control-flow path, so the difference is numeric, not a frozen branch")
    return "; ".join(causes) if causes else None


def _path_note(failure: Failure, stats: Stats, export_path: Any, name: str) -> str | None:
    if failure.path is None or export_path is None or failure.path == export_path:
        return None
    only_export = sorted(export_path - failure.path)
    only_failing = sorted(failure.path - export_path)

    def fmt(lines: list[tuple[str, int]]) -> str:
        return ", ".join(explain.where(f, n) for f, n in lines[:4]) + (" ..." if len(lines) > 4 else "")

    taken = f"{sum(stats.failing_paths.values())} of {stats.examples} inputs"
    note = f"{name} recorded the control-flow path of the export example"
    if only_export:
        note += f" through {fmt(only_export)}"
    if only_failing:
        note += f"; the failing input runs {fmt(only_failing)} instead ({taken} failed)"
    return note


def _save_repro(
    failure: Failure, plan: InputPlan, options: Options, session: Session, name: str,
    module: torch.nn.Module, device: str, export_draw: Draw, result: Result,
) -> str | None:
    if not options.repro_dir:
        return None
    from .replay import save

    directory = Path(options.repro_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", (session.test or "check").rsplit("::", 1)[-1]).strip("_")
    path = directory / f"{stem}-{name}{'' if device == 'cpu' else '-' + device}.pt"
    export_args, export_kwargs = materialize(plan, export_draw, "cpu")
    save(
        path,
        module=module,
        backend=name,
        device=device,
        export_inputs=(export_args, export_kwargs),
        failing_inputs=tuple(v.cpu() if isinstance(v, torch.Tensor) else v for v in failure.args),
        failing_kwargs={k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in failure.kwargs.items()},
        options={"dims": dict(options.dims), "dynamic": options.dynamic, "rtol": options.tolerance("rtol", name),
                 "atol": options.tolerance("atol", name)},
        test=session.nodeid or session.test,
        artifact_dir=result.extra.get("artifact_dir"),
    )
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel
