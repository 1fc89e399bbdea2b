"""The likely cause of a failure, in a person's words: what the cause experiments blamed (each
also a finding), the findings that explain, the control-flow path taken, the input's edges;
with the kind of the first cause, which the verdict carries as data."""

from __future__ import annotations

from typing import Any

from ..inputs.specs import InputPlan
from ..inputs.strategies import probe_value
from ..results import explain
from ..results.report import CauseKind, Finding, Result
from ..stages.check import Check
from ..stages.exporting import with_cause
from .causes import MaskedRows, keyword_order, masked_rows
from .failure import Failure, Stats
from .located_words import entry
from .shipped_words import shipped_cause


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


def likely_cause(check: Check, failure: Failure, stats: Stats, export_path: Any) -> tuple[str | None, CauseKind | None]:
    """The causes the experiments and the findings point at, in a person's words, and the
    kind of the first; (None, None) where none."""
    failure.masked_rows = masked_rows(check, failure)
    causes = (
        _masked_cause(check, failure.masked_rows)
        + _order_cause(check, failure)
        + _blamed(check, failure, stats, export_path)
    )
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


def _masked_cause(check: Check, masked: MaskedRows | None) -> list[tuple[CauseKind, str]]:
    """A difference confined to query positions that attend to no key: a finding
    with the positions, and the cause said as what it is (not a numeric defect). Two ways a
    query has no key: a row the mask keeps nothing of (padding only: every query, causal or
    not), and left padding under a causal mask (the positions before the first kept one)."""
    if masked is None:
        return []
    where, why = [], []
    if masked.rows:
        rows = ", ".join(map(str, masked.rows[:8])) + (" ..." if len(masked.rows) > 8 else "")
        where.append(f"batch row{'s' * (len(masked.rows) > 1)} {rows}")
        why.append(
            f"{masked.mask} keeps no position of {'those rows' if len(masked.rows) > 1 else 'that row'} "
            "(padding only), so no query there attends to any key"
        )
    left = masked.left_padding
    if left:
        shown = ", ".join(f"({b}, {s})" for b, s in left[:8]) + (" ..." if len(left) > 8 else "")
        where.append(f"(batch row, position) {shown}")
        why.append(
            f"{masked.mask} keeps no position at or before {'them' if masked.rows else 'those'} (left "
            "padding), so a causal query there attends to no key"
        )
    check.result.findings.append(
        Finding(
            "masked_rows",
            f"{check.name} differs from eager only at {' and '.join(where)} of {', '.join(masked.outputs)}: {'; '.join(why)}",
        )
    )
    return [
        (
            "masked_rows",
            f"the outputs differ only at query positions that attend to no key ({'; '.join(why)}: {' and '.join(where)}). "
            "What a softmax over no key gives is each runtime's own "
            "choice (eager: 0 or the like; onnxruntime: the mean of V), and every other position agrees within the "
            "tolerances: whether those rows matter is the tolerance's call",
        )
    ]


def _order_cause(check: Check, failure: Failure) -> list[tuple[CauseKind, str]]:
    """An export that binds keyword arguments by position: the re-export in forward's order passes."""
    order = None if failure.masked_rows is not None else keyword_order(check, failure)
    if order is None:
        return []
    return [
        (
            "keyword_order",
            f"the {check.name} export binds the keyword arguments by their order, not by their names: the test passes "
            f"{', '.join(order.passed)}, forward declares {', '.join(order.declared)}, and exported with them in "
            "forward's order the failing input passes (torch.export's non-strict capture of an fx GraphModule feeds "
            "each keyword argument to the parameter at its position). Pass them in forward's order, or export with "
            "strict=True",
        )
    ]


def _blamed(check: Check, failure: Failure, stats: Stats, export_path: Any) -> list[tuple[CauseKind, str]]:
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
