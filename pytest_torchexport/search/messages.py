"""What a person reads: the message and findings that explain a check's outcome.

Pure composition over what the search recorded (``Stats``, the shrunk ``Failure``): no exporting,
no pytest. Like ``torch.testing``'s mismatch message: headline first, then the smallest failing
input, the numbers, where it diverges, the likely cause, and the remedy last.
[ONNX As Shipped] For a post-processed file it also names the step a failing input first fails after.
See docs/howto-read-a-failure.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..inputs.specs import InputPlan
from ..inputs.strategies import describe_inputs, materialize, probe_value, summarize
from ..reference.noise import verdict_words
from ..results import explain
from ..results.outcome import Outcome
from ..results.report import CauseKind, Finding, Result
from ..stages.artifacts import link_replay
from ..stages.check import Check
from ..stages.exporting import with_cause
from .causes import MaskedRows, keyword_order
from .failure import Failure, Stats
from .localize import MESSAGE_LINES
from .repro import save

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..options import OnnxQuantize
    from .localize import Located


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


#: Said where no experiment points at a cause, so a message never leaves the reader wondering.
UNKNOWN_CAUSE = (
    "not known: none of the experiments that name one (a frozen branch, a baked size, a special value, "
    "the keyword order, the localized module) points at this input; the error above is what is known"
)


def explain_failure(
    check: Check, failure: Failure, stats: Stats, export_path: frozenset[tuple[str, int]] | None
) -> Outcome:
    """The verdict on the shrunk ``failure``; ``export_path``: the lines the export example ran, if known."""
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
    lines.append(f"Likely cause: {cause or UNKNOWN_CAUSE}")
    lines += _reproduce(check, failure) + _remedy(failure, name, passes_with, result)
    return Outcome(failure.status, "\n".join(lines), cause, kind)  # type: ignore[arg-type]  # a failure's status is a Status


def _state_lost(check: Check, failure: Failure, stats: Stats, summary: dict[str, dict[str, Any]]) -> Outcome:
    """[State After Every Input] The outputs matched eager's on the failing input, but the state the
    artifact kept after it did not."""
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
            result.extra["error_p50"], result.extra["error_p99"] = worst.p50, worst.p99
            result.extra["passes_with"] = passes_with
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
        verdict = verdict_words(failure.noise)
        if failure.noise is not None:
            result.extra["float64_check"] = failure.noise.as_dict()
        noise = failure.noise
        if noise is not None and noise.judged and not noise.rounding:
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


# --- the first diverging module, in words -----------------------------------------------------


def diverges_at(result: Result, failure: Failure, name: str) -> list[str]:
    """Where the artifact first computes differently, with its own code there (localize.py)."""
    located = failure.diverges_at
    if located is None:
        if failure.no_localization:
            result.extra["diverges_at_unavailable"] = failure.no_localization
            return [f"Diverges at: unknown (localisation {failure.no_localization})"]
        return []
    result.extra["diverges_at"] = located.as_dict()
    where = located.module or "(top level)"
    given = (
        "given eager's own input to it"
        if located.method == "isolated"
        else "in the artifact's own run, where every module before it agrees"
    )
    role = _role(located)
    if located.module:
        detail = (
            f"{where} ({located.cls}) is the first module whose {name} output differs from eager's {given} "
            f"(max abs err {located.max_abs_err:.3g}); its submodules agree, so its own code diverges{role}"
        )
    else:
        detail = (
            f"no submodule of {located.cls} differs on its own input: the top-level module's own code diverges "
            f"(max abs err {located.max_abs_err:.3g}){role}"
        )
    result.findings.append(Finding("diverges_at", detail, where))
    lines = [
        f"Diverges at: {where} ({located.cls}), max abs err {located.max_abs_err:.3g} {given}{role}"
        if located.module
        else f"Diverges at: the top-level module's own code ({located.cls}): no submodule differs on its own input{role}"
    ]
    excerpt = located.excerpt.splitlines()
    if excerpt:
        lines.append(f"  the {name} artifact's code there:")
        lines += [f"    {line}" for line in excerpt[:MESSAGE_LINES]]
        if len(excerpt) > MESSAGE_LINES:
            lines.append(f"    ... ({len(excerpt) - MESSAGE_LINES} more lines in the report's diverges_at)")
    return lines


def _role(located: Located) -> str:
    """Whether the module introduces the error or carries it from upstream (localize._introduced)."""
    if located.introduced is None:
        return ""
    if located.introduced:
        if located.method == "isolated":
            return "; introduced here"
        return "; introduced here: the artifact's input to it agrees with eager's"
    return (
        f"; carried from upstream, not introduced here: the artifact's input to it already differs from eager's "
        f"(max abs err {located.input_err:.3g}), so the error enters before it{entry(located)}"
    )


def entry(located: Located) -> str:
    """Where a carried error enters: ``, in the top-level module's own code before blocks.3``."""
    if located.enters is None:
        return ""
    owner, before = located.enters
    whose = f"{owner}'s" if owner else "the top-level module's"
    return f", in {whose} own code before {before}"


# --- the likely cause ---------------------------------------------------------------------------


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
        "runtime": optimizer.runtime,
        "deployed": optimizer.deployed,
        "passes_at": list(optimizer.passes_at),
        "fails_from": optimizer.fails_from,
    }
    return (
        f"not the export: {optimizer.runtime}'s graph optimizer at {optimizer.deployed}. The same input passes with "
        f"graph optimizations off ({optimizer.passes_at[0]}) and fails from {optimizer.fails_from} on, so a rewrite "
        "onnxruntime applies when it loads the model changes the result"
    )


def _probe_cause(failure: Failure, plan: InputPlan) -> str | None:
    """A failing probe is the passing recorded input with one special value, so blame that value."""
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


def likely_cause(
    check: Check, failure: Failure, stats: Stats, export_path: frozenset[tuple[str, int]] | None
) -> tuple[str | None, CauseKind | None]:
    """The causes the experiments and findings point at, in words, and the first one's kind; (None, None) if none."""
    causes = _order_cause(check, failure) + _blamed(check, failure, stats, export_path)
    held = with_cause(check.compiled, check.result.module, None)
    if not causes and failure.status == "run_error" and failure.small_dims_blamed is not False:
        sizes = dict(failure.draw.sizes)
        exported = {**check.plan.example_sizes(), **check.export_sizes}
        differ = [f"{k}={sizes[k]} (exported at {exported.get(k)})" for k in sizes if sizes[k] != exported.get(k)]
        if differ:
            causes.append(("baked_size", f"a size baked into the artifact: the failing input has {', '.join(differ)}"))
    causes += _edge_causes(failure, check.name)
    custom = failure.comparison is not None and failure.comparison.custom_message is not None
    if not causes and not custom and stats.paths and len(stats.paths) == 1 and failure.status == "mismatch":
        located = failure.diverges_at
        if located is not None and located.module and located.introduced is False:
            causes.append(
                (
                    "numeric",
                    f"the difference enters before {located.module} ({located.cls}), which only carries it: the artifact's "
                    f"input to it already differs: the error enters{entry(located).removeprefix(',') or ' in the code that feeds it'}",
                )
            )
        elif located is not None and located.module:
            causes.append(
                (
                    "numeric",
                    f"the difference starts in {located.module} ({located.cls}), whose code in the artifact computes "
                    "differently; every input took the same control-flow path, so it is numeric, not a frozen branch",
                )
            )
        else:
            causes.append(
                (
                    "numeric",
                    "every input took the same control-flow path, so the difference is numeric, not a frozen branch",
                )
            )
    causes = [("compiled_parts", held), *causes] if held else causes  # what the test did to the module comes first
    if not causes:
        return None, None
    return "; ".join(text for _, text in causes), causes[0][0]


def _some(texts: Iterable[str], most: int = 8) -> str:
    """The first ``most`` of ``texts``, comma-separated, with " ..." where more were left out."""
    listed = list(texts)
    return ", ".join(listed[:most]) + (" ..." if len(listed) > most else "")


def masked_finding(name: str, masked: list[MaskedRows]) -> Finding:
    """The inputs whose outputs differed only at queries that attend to no key (rows of padding only,
    or left padding under a causal mask): where, on the first of them, and why."""
    first = masked[0]
    where, why = [], []
    if first.rows:
        where.append(f"batch row{'s' * (len(first.rows) > 1)} {_some(map(str, first.rows))}")
        why.append(
            f"{first.mask} keeps no position of {'those rows' if len(first.rows) > 1 else 'that row'} "
            "(padding only), so no query there attends to any key"
        )
    left = first.left_padding
    if left:
        where.append(f"(batch row, position) {_some(f'({b}, {s})' for b, s in left)}")
        why.append(
            f"{first.mask} keeps no position at or before {'them' if first.rows else 'those'} (left "
            "padding), so a causal query there attends to no key"
        )
    if first.pooled_rows:
        where.append(f"batch row{'s' * (len(first.pooled_rows) > 1)} {_some(map(str, first.pooled_rows))}")
        why.append(
            "the output without a position axis there reads such a query (eager's own value moves when the "
            "attention output of those queries is perturbed, as a pooler reading the first position does)"
        )
    more = f"; likewise on {len(masked) - 1} more input{'s' * (len(masked) > 2)}" if len(masked) > 1 else ""
    return Finding(
        "masked_rows",
        f"{name} differs from eager only at {' and '.join(where)} of {', '.join(first.outputs)}: {'; '.join(why)}. "
        "What a softmax over no key gives is each runtime's own choice (eager: 0 or the like; onnxruntime: the "
        f"mean of V), so those outputs are undefined and left out of the comparison{more}",
    )


def _order_cause(check: Check, failure: Failure) -> list[tuple[CauseKind, str]]:
    """An export that binds keyword arguments by position: the re-export in forward's order passes."""
    order = keyword_order(check, failure)
    if order is None:
        return []
    return [
        (
            "keyword_order",
            f"the {check.name} artifact binds the keyword arguments by their order, not by their names: the test passes "
            f"{', '.join(order.passed)}, forward declares {', '.join(order.declared)}, and exported with them in "
            "forward's order the failing input passes (torch.export's non-strict capture of an fx GraphModule feeds "
            "each keyword argument to the parameter at its position). Pass them in forward's order, or export with "
            "strict=True",
        )
    ]


def _blamed(
    check: Check, failure: Failure, stats: Stats, export_path: frozenset[tuple[str, int]] | None
) -> list[tuple[CauseKind, str]]:
    """What the cause experiments blamed (each also a finding), the findings that explain, the path taken."""
    result, name = check.result, check.name
    small = [f"{k}={v}" for k, v in failure.draw.sizes if v < 2]
    if check.backend.specializes_small_dims and failure.small_dims_blamed and failure.path != export_path:
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
    found: list[tuple[CauseKind, str | None]] = [
        ("shipped_step", shipped_cause(check, failure)),
        ("runtime_optimizer", _optimizer_cause(result, failure, name)),
        ("special_value", _probe_cause(failure, check.plan)),
    ]
    causes = [(kind, text) for kind, text in found if text]
    causes += [("baked_argument", f.detail) for f in baked]
    causes += [(_FINDING_CAUSES[f.kind], f.detail) for f in result.findings if f.kind in _FINDING_CAUSES]
    path_note = _path_note(failure, stats, export_path, name)
    if path_note:
        causes.append(("control_flow_path", path_note))
    return causes


#: Findings whose detail is a likely cause; each is a cause kind of the same name.
_FINDING_CAUSES: dict[str, CauseKind] = {
    "frozen_branch": "frozen_branch",
    "baked_shape": "baked_shape",
    "frozen_value": "frozen_value",
    "specialized_dim": "specialized_dim",
}


def _edge_causes(failure: Failure, name: str) -> list[tuple[CauseKind, str]]:
    """Inputs far from the example's scale, values non-finite on one side, a round trip that changed the artifact."""
    causes: list[tuple[CauseKind, str]] = []
    if failure.far_scale is not None:
        causes.append(
            (
                "far_scale",
                f"fails only at inputs ~{failure.far_scale:g}x the example's scale (drawn by special_values=True): "
                "the same input at the example's scale passes, so the model is ill-conditioned there, "
                "which may be rounding rather than an export defect",
            )
        )
    nonfinite = sum(d.one_sided_nonfinite for d in (failure.comparison.diffs if failure.comparison else []))
    if nonfinite:
        causes.append(
            (
                "nonfinite",
                f"{nonfinite} output element(s) are NaN or inf on one side only: the artifact and eager handle an edge "
                "case differently (a fully masked softmax row, an overflow, a division by zero)",
            )
        )
    if failure.status == "roundtrip_mismatch":
        causes.append(
            (
                "roundtrip",
                f"the {name} artifact loaded from disk computes differently from the one in memory: the save/load "
                "path changed weights, dtypes or ops",
            )
        )
    return causes


def _path_note(failure: Failure, stats: Stats, export_path: frozenset[tuple[str, int]] | None, name: str) -> str | None:
    if failure.path is None or export_path is None or failure.path == export_path:
        return None
    only_export = sorted(export_path - failure.path)
    only_failing = sorted(failure.path - export_path)

    def fmt(lines: list[tuple[str, int]]) -> str:
        return _some((explain.where(f, n) for f, n in lines), most=4)

    taken = f"{sum(stats.failing_paths.values())} of {stats.examples} inputs"
    note = f"{name} recorded the control-flow path of the export example"
    if only_export:
        note += f" through {fmt(only_export)}"
    if only_failing:
        note += f"; the failing input runs {fmt(only_failing)} instead ({taken} failed)"
    return note


# --- [ONNX As Shipped] the file as shipped, in words ----------------------------------------------


def check_budget(result: Result) -> float | None:
    shipped = result.extra.get("shipped")
    return shipped.get("budget") if shipped else None


def budget_remedy(failure: Failure, result: Result, xfail: str) -> str:
    """The allowed error that would cover this failure, on the option that owns it."""
    cmp = failure.comparison
    worst = max(cmp.of_scale if cmp is not None else float("inf"), result.extra["shipped"].get("worst_of_scale", 0.0))
    steps = result.extra["shipped"]["steps"]
    option = "onnx_quantize" if any(s.startswith("quantize=") for s in steps) else "onnx_fp16"
    if worst == float("inf") or (cmp is not None and any(d.one_sided_nonfinite for d in cmp.diffs)):
        return f"No allowed error covers a value that is inf or NaN on one side only: fix the step, or {xfail}"
    mode = next((s.split("=", 1)[1] for s in steps if s.startswith("quantize=")), None)
    value = f'{{"mode": "{mode}", "max_error": {worst * 1.25:.2g}}}' if mode else f'{{"max_error": {worst * 1.25:.2g}}}'
    return (
        f"Would pass with an allowed error of {_pct(worst)} of the output's scale (the worst input seen): {option}={value} "
        f"if that error is acceptable where the model is served, or {xfail}"
    )


def shipped_words(check: Check, worst_of_scale: float) -> str:
    """[ONNX As Shipped] What a pass on a post-processed file rests on: its steps and its error against the budget."""
    post = check.post
    steps = ", ".join(post.steps)
    if check.scale_budget is None:
        judged = "explicit rtol/atol" if post.budget is not None else "the onnx backend's default tolerances"
        return f"checked the file as shipped ({steps}), judged by {judged}"
    return (
        f"checked the file as shipped ({steps}): greatest error {_pct(worst_of_scale)} of an output's scale, "
        f"within the allowed error of {_pct(check.scale_budget)} ({post.budget_from})"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%" if x == x and x not in (float("inf"), float("-inf")) else str(x)


def shipped_cause(check: Check, failure: Failure) -> str | None:
    """[ONNX As Shipped] The post-processing step the failing input first fails after (causes.shipped_step)."""
    blamed = failure.shipped_step
    if blamed is None:
        return None
    steps = ", ".join(check.post.steps)
    if blamed.step == "export":
        detail = (
            f"the exported model already fails on this input, before any post-processing step ({steps}): "
            "an export defect, which the plain onnx check (without onnx_* options) shows at float32 tolerances"
        )
    else:
        detail = (
            f"the {blamed.step} step: on this input "
            + ("the exported model" if blamed.before == "export" else f"the model after {blamed.before}")
            + " is within "
            + (f"the allowed error of {_pct(check.scale_budget)}" if check.scale_budget is not None else "tolerance")
            + f", the model after {blamed.step} is not"
        )
        detail += _step_detail(check, failure, blamed.step)
    check.result.findings.append(Finding("shipped_step", detail))
    check.result.extra["shipped"]["blamed"] = blamed.step
    return detail


def _step_detail(check: Check, failure: Failure, step: str) -> str:
    """What the blamed step does to values that would explain the failure, and what to ship instead."""
    cmp = failure.comparison
    overflow = cmp is not None and any(d.one_sided_nonfinite for d in cmp.diffs)
    if step.startswith("fp16") and overflow:
        return (
            "; outputs turn inf/NaN where eager's are finite: a float16 value overflows past 65504 (a sum of "
            "squares, an exp, a large activation): keep values within float16's range (rescale), or keep the "
            'overflowing ops and those after them in float32 (onnx_fp16={"op_block_list": [...]}, as the '
            "shipping conversion must too)"
        )
    if step == "quantize=static" and failure.far_scale is not None:
        return (
            f"; the input is ~{failure.far_scale:g}x the example's scale, outside what static quantization was "
            "calibrated on (the recorded example and drawn inputs): int8 activations clip there"
        )
    if step == "quantize=static" and _uncalibrated_sizes(check, failure):
        return (
            f"; the input's sizes ({_uncalibrated_sizes(check, failure)}) are not among those static quantization "
            "was calibrated on (the recorded sizes and the smallest): activations that grow with a size (a sum, "
            "a longer sequence) leave the calibrated int8 range and clip; calibrate on the sizes you serve"
        )
    if step.startswith("optimize="):
        return (
            f"; onnxruntime's offline optimization at {step.split('=', 1)[1]} rewrote the graph (a fusion, "
            "a constant folded) in a way that changes the result here: ship the file optimized at a lower level, "
            "or report the rewrite to onnxruntime with this input"
        )
    if step.startswith("quantize=") and _u8s8_saturates(check.options.onnx_quantize):
        return (
            "; int8 weights (weight_type QInt8) without reduce_range on an x86 CPU without VNNI: onnxruntime's "
            "U8S8 kernels (VPMADDUBSW) can saturate there, as its quantization docs warn; ship with "
            'reduce_range=True or weight_type="QUInt8" (set them in onnx_quantize= too)'
        )
    return ""


def _uncalibrated_sizes(check: Check, failure: Failure) -> str:
    """The failing input's sizes that static quantization was not calibrated on (onnx_shipped.calibration_inputs)."""
    recorded = check.plan.example_sizes()
    smallest = {name: max(d.min, 1) for name, d in check.plan.dims.items()}
    return ", ".join(
        f"{name}={size} (calibrated at {recorded.get(name)} and {smallest.get(name)})"
        for name, size in failure.draw.sizes
        if size not in (recorded.get(name), smallest.get(name))
    )


def _u8s8_saturates(quantize: OnnxQuantize | None) -> bool:
    """int8 weights with onnxruntime's defaults on an x86 CPU without VNNI, where the int8 dot product
    can saturate (onnxruntime's quantization docs, "reduce_range")."""
    if quantize is None or quantize.weight_type != "QInt8" or quantize.reduce_range:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and "vnni" not in flags
