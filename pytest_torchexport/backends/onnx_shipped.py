"""ONNX as shipped: the exported model post-processed the way teams serve it.

The steps, in order: float16 conversion, int8 quantization and onnxruntime's offline
optimization. Each step's output is kept (``Stage``) so a failure can be blamed on a step.
See docs/howto-shipped-onnx.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..inputs.strategies import materialize, probe_draws, recorded_draw

if TYPE_CHECKING:
    from onnx import ModelProto

    from ..inputs.specs import InputPlan
    from ..options import OnnxFp16, OnnxQuantize, ShippedOnnx

#: onnx_optimize's names -> onnxruntime's GraphOptimizationLevel.
LEVELS = {
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
#: Metadata giving the level to load an offline-optimized file at (optimizations off, per onnxruntime's docs).
SERVE_LEVEL_KEY = "pytest_torchexport.serve_level"
#: Metadata naming (a JSON list) the outputs the float16 conversion narrowed from float32: what
#: eager returns in float32, so the check reads them back in float32.
NARROWED_KEY = "pytest_torchexport.narrowed_outputs"
#: onnx.TensorProto's element types for float32 and float16 (fixed by the ONNX spec).
FLOAT, FLOAT16 = 1, 10
#: Error grows like a random walk of one rounding per operator on the longest path, so the default
#: budget is ``BUDGET_MULTIPLE x unit x sqrt(op depth)`` of the output's scale, where the unit is one
#: rounding's relative error. See docs/howto-shipped-onnx.md for how the multiple was chosen.
BUDGET_MULTIPLE = 8.0
UNITS = {"fp16": 2.0**-11, "int8": 1.0 / 510}
UNIT_WORDS = {"fp16": "float16's unit roundoff 2**-11", "int8": "half an int8 step of the range, 1/510"}


@dataclass(frozen=True)
class Stage:
    """The model after one step, named as the report says it."""

    name: str
    data: bytes
    serve_level: str | None = None  # None: onnxruntime's default


def unavailable_reason(shipped: ShippedOnnx | None) -> str | None:
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


#: Draws per value mode used to calibrate static quantization.
CALIBRATION_DRAWS = 4


def calibration_inputs(plan: InputPlan) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Calibration inputs for static quantization, drawn as the default search draws them."""
    recorded = recorded_draw(plan)
    draws = [recorded, *probe_draws(plan)]
    draws += [
        dataclasses.replace(recorded, mode=mode, seed=seed)
        for seed in range(1, CALIBRATION_DRAWS + 1)
        for mode in ("normal", "negative", "positive")
    ]
    return [materialize(plan, draw, "cpu") for draw in dict.fromkeys(draws)]


def process(data: bytes, shipped: ShippedOnnx, scratch: Path, calibration: list[dict[str, Any]] | None) -> list[Stage]:
    """Run the exported model through each step: one ``Stage`` per step, the last one ships.

    ``calibration``: feeds (input name -> numpy array) for static quantization.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    if shipped.fp16 is not None:
        with _step(_fp16_name(shipped.fp16), "onnxconverter-common's float16.convert_float_to_float16", stages):
            data = _fp16(data, shipped.fp16)
        stages.append(Stage(_fp16_name(shipped.fp16), data))
    narrowed = metadata(data).get(NARROWED_KEY) if shipped.fp16 is not None else None
    if shipped.quantize is not None:
        name = f"quantize={shipped.quantize.mode}"
        with _step(name, f"onnxruntime.quantization.quantize_{shipped.quantize.mode}", stages):
            data = _carried(_quantize(data, shipped.quantize, scratch, calibration), NARROWED_KEY, narrowed)
        stages.append(Stage(name, data))
    if shipped.optimize is not None:
        name = f"optimize={shipped.optimize}"
        with _step(name, f"onnxruntime's offline optimization at {LEVELS[shipped.optimize]}", stages):
            data = _carried(_optimize(data, shipped.optimize, scratch), NARROWED_KEY, narrowed)
        stages.append(Stage(name, data, "ORT_DISABLE_ALL"))
    return stages


def _model(data: bytes) -> ModelProto:
    import onnx

    return onnx.load_from_string(data)


def metadata(data: bytes) -> dict[str, str]:
    """The model's metadata properties."""
    return {entry.key: entry.value for entry in _model(data).metadata_props}


def _stamped(model: ModelProto, key: str, value: str) -> None:
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _carried(data: bytes, key: str, value: str | None) -> bytes:
    """``data`` with ``key`` set to ``value``, where a step dropped what the model before it had."""
    if value is None or metadata(data).get(key) == value:
        return data
    model = _model(data)
    _stamped(model, key, value)
    return model.SerializeToString()


class StepFailed(RuntimeError):
    """A post-processing step raised (an export_error)."""


@contextlib.contextmanager
def _step(name: str, what: str, done: list[Stage]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every step failure is the check's export_error
        after = f"the model after {done[-1].name}" if done else "the exported model"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        raise StepFailed(
            f"the post-processing step {name} ({what}) failed on {after}: {type(exc).__name__}: {first}. "
            "The file that ships cannot be made this way: the same call fails where you post-process it"
        ) from exc


def _fp16_name(fp16: OnnxFp16) -> str:
    return "fp16" if fp16.keep_io_types else "fp16 (float16 inputs and outputs)"


def _fp16(data: bytes, fp16: OnnxFp16) -> bytes:
    from onnxconverter_common import float16

    model = _model(data)
    before = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=fp16.keep_io_types,
        op_block_list=list(fp16.op_block_list) if fp16.op_block_list else None,
    )
    narrowed = [
        o.name
        for o in converted.graph.output
        if before.get(o.name) == FLOAT and o.type.tensor_type.elem_type == FLOAT16
    ]
    if narrowed:
        _stamped(converted, NARROWED_KEY, json.dumps(narrowed))
    return converted.SerializeToString()


def _quantize(data: bytes, quantize: OnnxQuantize, scratch: Path, calibration: list[dict[str, Any]] | None) -> bytes:
    from onnxruntime import quantization as q

    source, target = scratch / "before-quantize.onnx", scratch / "quantized.onnx"
    source.write_bytes(data)
    common = {
        "weight_type": getattr(q.QuantType, quantize.weight_type),
        "per_channel": quantize.per_channel,
        "reduce_range": quantize.reduce_range,
    }
    # onnxruntime.quantization logs a hint on the root logger on every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        if quantize.mode == "dynamic":
            q.quantize_dynamic(source, target, **common)
        else:
            _static(
                q,
                source,
                target,
                calibration,
                {**common, "activation_type": getattr(q.QuantType, quantize.activation_type)},
            )
    finally:
        root.setLevel(level)
    return target.read_bytes()


def _static(
    q: Any, source: Path, target: Path, calibration: list[dict[str, Any]] | None, kwargs: dict[str, Any]
) -> None:
    """quantize_static with its defaults (QDQ, MinMax), calibrated on ``calibration``."""
    feeds = list(calibration or [])

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    q.quantize_static(source, target, Reader(), **kwargs)


def _optimize(data: bytes, level: str, scratch: Path) -> bytes:
    import onnxruntime as ort

    target = scratch / f"optimized-{level}.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    model = _model(target.read_bytes())
    _stamped(model, SERVE_LEVEL_KEY, "ORT_DISABLE_ALL")
    return model.SerializeToString()


def op_depth(data: bytes | str) -> int:
    """The most operators on an input-to-output path of the main graph."""
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


def default_budget(kind: str, depth: int) -> float:
    """The default budget of ``kind`` ("fp16" or "int8") at op depth ``depth``."""
    return BUDGET_MULTIPLE * UNITS[kind] * math.sqrt(depth)


def budget(shipped: ShippedOnnx, depth: int) -> tuple[float, str] | None:
    """The error budget and how it was set; None when only the optimize step runs."""
    if shipped.quantize is not None:
        given, kind, option = shipped.quantize.budget, "int8", "onnx_quantize"
    elif shipped.fp16 is not None:
        given, kind, option = shipped.fp16.budget, "fp16", "onnx_fp16"
    else:
        return None
    if given is not None:
        return given, f"{option}'s max_error"
    return default_budget(kind, depth), (
        f"{kind} default: {BUDGET_MULTIPLE:g} x {UNIT_WORDS[kind]} x sqrt(op depth {depth})"
    )
