"""[ONNX As Shipped] The file as shipped (fp16, quantized, optimized), in words: what a pass on
it rests on, the post-processing step a failing input first fails after, and the budget that
would pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results.report import Finding, Result
from ..stages.check import Check
from .failure import Failure


def check_budget(result: Result) -> float | None:
    shipped = result.extra.get("shipped")
    return shipped.get("budget") if shipped else None


def budget_remedy(failure: Failure, result: Result, xfail: str) -> str:
    """[Scale Budget] What would pass: the budget that covers this error, set on the option that owns it."""
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
    """The failing input's sizes that static quantization's calibration did not use (onnx_shipped.calibration_inputs)."""
    recorded = check.plan.example_sizes()
    smallest = {name: max(d.min, 1) for name, d in check.plan.dims.items()}
    return ", ".join(
        f"{name}={size} (calibrated at {recorded.get(name)} and {smallest.get(name)})"
        for name, size in failure.draw.sizes
        if size not in (recorded.get(name), smallest.get(name))
    )


def _u8s8_saturates(quantize: Any) -> bool:
    """int8 weights quantized as onnxruntime's default does, on an x86 CPU whose int8 dot
    product saturates (no VNNI: onnxruntime's quantization docs, "reduce_range")."""
    if quantize is None or quantize.weight_type != "QInt8" or quantize.reduce_range:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and "vnni" not in flags
