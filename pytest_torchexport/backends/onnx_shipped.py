"""ONNX as shipped: the exported model post-processed as teams serve it (contract v4, section 4).

The ``onnx`` backend's export is the file ``torch.onnx.export`` writes; what is served is
often that file after one or more of these steps, in this order:

1. ``onnx_fp16``: float16 conversion (``onnxconverter-common``'s
   ``float16.convert_float_to_float16``), with float32 inputs and outputs kept
   (``keep_io_types=True``) unless the option says otherwise;
2. ``onnx_quantize``: int8 quantization, ``onnxruntime.quantization.quantize_dynamic``
   (weights int8, activations quantized per call) or ``quantize_static`` (QDQ, activations
   calibrated with MinMax on calibration inputs the engine draws, see ``calibration``);
3. ``onnx_optimize``: onnxruntime's offline optimization at a named level
   (``SessionOptions.graph_optimization_level`` with ``optimized_model_filepath``); the
   optimized file is served, as onnxruntime's docs say, with the optimizations off at load
   (``ORT_DISABLE_ALL``): it is marked so in its metadata (``SERVE_LEVEL_KEY``).

Each step's output is kept in memory (``Stage``), so a failure can be blamed on the first
step after which the failing input fails (search.py). This module never compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: onnx_optimize's names -> onnxruntime's GraphOptimizationLevel.
LEVELS = {
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
#: The metadata entry an offline-optimized file carries: the level to load it at.
SERVE_LEVEL_KEY = "pytest_torchexport.serve_level"
#: float16's unit roundoff (2**-11): the relative error of one rounding.
FP16_UNIT_ROUNDOFF = 2.0**-11
#: float16 budget = FP16_MULTIPLE x unit roundoff x sqrt(op depth), of the output's scale
#: (docs/howto-shipped-onnx.md: measured by benchmarks/measure_onnx_shipped.py).
FP16_MULTIPLE = 8.0
#: int8 quantization's default budget, of the output's scale (same page, same script).
QUANTIZE_BUDGET = {"dynamic": 0.1, "static": 0.1}


@dataclass(frozen=True)
class Stage:
    """The model after one step: ``name`` as the report and messages say it, its bytes."""

    name: str
    data: bytes
    serve_level: str | None = None  # the session level it is served at; None: onnxruntime's default


def step_names(shipped: Any) -> list[str]:
    """The steps an ``options.ShippedOnnx`` asks for, in the order they run."""
    names = []
    if shipped.fp16 is not None:
        names.append(_fp16_name(shipped.fp16))
    if shipped.quantize is not None:
        names.append(f"quantize={shipped.quantize.mode}")
    if shipped.optimize is not None:
        names.append(f"optimize={shipped.optimize}")
    return names


def unavailable_reason(shipped: Any) -> str | None:
    """What a step needs that is not installed here, with the install line."""
    if shipped is not None and shipped.fp16 is not None:
        try:
            from onnxconverter_common import float16  # noqa: F401
        except ImportError as exc:
            return (
                f"onnx_fp16 needs onnxconverter-common ({exc}): "
                'pip install onnxconverter-common (or "pytest-torchexport[onnx-fp16]")'
            )
    if shipped is not None and shipped.quantize is not None:
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as exc:
            return f"onnx_quantize needs onnxruntime.quantization ({exc}): pip install onnxruntime"
    return None


#: Static quantization's calibration: the recorded example, the small probes, and this many
#: draws at the recorded sizes in each of the search's default value modes.
CALIBRATION_DRAWS = 4


def calibration_inputs(plan: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The inputs static quantization calibrates on: drawn as the search draws them (the
    recorded example, the smallest sizes, values in the normal, negative and positive modes),
    so calibration covers what the default search feeds. ``special_values=True``'s far scales
    (x100, x1e-3) are left out: an int8 model clips there, and the check shows it."""
    import dataclasses

    from ..strategies import materialize, probe_draws, recorded_draw

    recorded = recorded_draw(plan)
    draws = [recorded, *probe_draws(plan)]
    draws += [
        dataclasses.replace(recorded, mode=mode, seed=seed)
        for seed in range(1, CALIBRATION_DRAWS + 1)
        for mode in ("normal", "negative", "positive")
    ]
    return [materialize(plan, draw, "cpu") for draw in dict.fromkeys(draws)]


def process(data: bytes, shipped: Any, scratch: Path, calibration: list[dict[str, Any]] | None) -> list[Stage]:
    """The exported model through each step: one ``Stage`` per step, the last is what ships.

    ``calibration``: feeds (input name -> numpy array) for static quantization.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    if shipped.fp16 is not None:
        data = _fp16(data, shipped.fp16)
        stages.append(Stage(_fp16_name(shipped.fp16), data))
    if shipped.quantize is not None:
        data = _quantize(data, shipped.quantize, scratch, calibration)
        stages.append(Stage(f"quantize={shipped.quantize.mode}", data))
    if shipped.optimize is not None:
        data = _optimize(data, shipped.optimize, scratch)
        stages.append(Stage(f"optimize={shipped.optimize}", data, "ORT_DISABLE_ALL"))
    return stages


def _fp16_name(fp16: Any) -> str:
    return "fp16" if fp16.keep_io_types else "fp16 (float16 inputs and outputs)"


def _fp16(data: bytes, fp16: Any) -> bytes:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load_from_string(data)
    converted = float16.convert_float_to_float16(
        model, keep_io_types=fp16.keep_io_types, op_block_list=list(fp16.op_block_list) if fp16.op_block_list else None,
    )
    return converted.SerializeToString()


def _quantize(data: bytes, quantize: Any, scratch: Path, calibration: list[dict[str, Any]] | None) -> bytes:
    import logging

    from onnxruntime import quantization as q

    source, target = scratch / "before-quantize.onnx", scratch / "quantized.onnx"
    source.write_bytes(data)
    common = {
        "weight_type": getattr(q.QuantType, quantize.weight_type),
        "per_channel": quantize.per_channel, "reduce_range": quantize.reduce_range,
    }
    # onnxruntime.quantization logs "consider pre-processing" on the root logger every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        if quantize.mode == "dynamic":
            q.quantize_dynamic(source, target, **common)
        else:
            _static(q, source, target, calibration, {**common, "activation_type": getattr(q.QuantType, quantize.activation_type)})
    finally:
        root.setLevel(level)
    return target.read_bytes()


def _static(q: Any, source: Path, target: Path, calibration: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> None:
    """quantize_static (QDQ, MinMax: its defaults) calibrated on ``calibration``'s feeds."""
    feeds = list(calibration or [])

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    q.quantize_static(source, target, Reader(), **kwargs)


def _optimize(data: bytes, level: str, scratch: Path) -> bytes:
    import onnx
    import onnxruntime as ort

    target = scratch / f"optimized-{level}.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(target))
    entry = model.metadata_props.add()
    entry.key, entry.value = SERVE_LEVEL_KEY, "ORT_DISABLE_ALL"
    return model.SerializeToString()


def op_depth(data: bytes | str) -> int:
    """The most operators on a path from an input to an output of the (main) graph: how many
    roundings an output can accumulate in sequence."""
    import onnx

    model = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(data, load_external_data=False)
    depth: dict[str, int] = {}
    deepest = 0
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        d = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        for name in node.output:
            depth[name] = d
    for out in model.graph.output:
        deepest = max(deepest, depth.get(out.name, 0))
    return max(deepest, 1)


def fp16_budget(depth: int) -> float:
    """The default float16 budget, of the output's scale: FP16_MULTIPLE roundings of
    float16's unit roundoff, growing as a random walk over ``depth`` operators in sequence."""
    return FP16_MULTIPLE * FP16_UNIT_ROUNDOFF * math.sqrt(depth)


def budget(shipped: Any, depth: int) -> tuple[float, str] | None:
    """The budget a shipped model is judged against, of the output's scale, and how it was set;
    None where only the optimize step runs (judged as the plain export is)."""
    if shipped.quantize is not None:
        if shipped.quantize.budget is not None:
            return shipped.quantize.budget, "onnx_quantize's budget"
        mode = shipped.quantize.mode
        return QUANTIZE_BUDGET[mode], f"int8 {mode} quantization's default"
    if shipped.fp16 is not None:
        if shipped.fp16.budget is not None:
            return shipped.fp16.budget, "onnx_fp16's budget"
        return fp16_budget(depth), (
            f"float16's default: {FP16_MULTIPLE:g} x unit roundoff 2**-11 x sqrt(op depth {depth})"
        )
    return None
