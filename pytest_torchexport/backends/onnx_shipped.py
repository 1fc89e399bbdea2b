"""ONNX as shipped: the exported model post-processed as teams serve it (docs/howto-shipped-onnx.md).

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

import contextlib
import math
from collections.abc import Iterator
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
#: [Budgets] A post-processed model's error grows like a random walk of one rounding per
#: operator on the longest input-to-output path: ``BUDGET_MULTIPLE x unit x sqrt(op depth)``,
#: as a fraction of the output's scale. The unit is the relative error of one rounding:
#: float16's unit roundoff (2**-11); for int8, half a step of a tensor quantized over its
#: range (1/510: 255 steps). Measured on the real models (benchmarks/measure_onnx_shipped.py,
#: docs/howto-shipped-onnx.md): clean models reach at most 4 units (float16: 0.3), defects
#: 13 to 10^35; 8 sits between.
BUDGET_MULTIPLE = 8.0
UNITS = {"fp16": 2.0**-11, "int8": 1.0 / 510}
UNIT_WORDS = {"fp16": "float16's unit roundoff 2**-11", "int8": "half an int8 step of the range, 1/510"}


@dataclass(frozen=True)
class Stage:
    """The model after one step: ``name`` as the report and messages say it, its bytes."""

    name: str
    data: bytes
    serve_level: str | None = None  # the session level it is served at; None: onnxruntime's default


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

    # deferred: strategies loads hypothesis, needed here for static calibration only
    from ..inputs.strategies import materialize, probe_draws, recorded_draw

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
        with _step(_fp16_name(shipped.fp16), "onnxconverter-common's float16.convert_float_to_float16", stages):
            data = _fp16(data, shipped.fp16)
        stages.append(Stage(_fp16_name(shipped.fp16), data))
    if shipped.quantize is not None:
        name = f"quantize={shipped.quantize.mode}"
        with _step(name, f"onnxruntime.quantization.quantize_{shipped.quantize.mode}", stages):
            data = _quantize(data, shipped.quantize, scratch, calibration)
        stages.append(Stage(name, data))
    if shipped.optimize is not None:
        name = f"optimize={shipped.optimize}"
        with _step(name, f"onnxruntime's offline optimization at {LEVELS[shipped.optimize]}", stages):
            data = _optimize(data, shipped.optimize, scratch)
        stages.append(Stage(name, data, "ORT_DISABLE_ALL"))
    return stages


class StepFailed(RuntimeError):
    """A post-processing step raised: the file that would ship could not be made (an export_error)."""


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


def _fp16_name(fp16: Any) -> str:
    return "fp16" if fp16.keep_io_types else "fp16 (float16 inputs and outputs)"


def _fp16(data: bytes, fp16: Any) -> bytes:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load_from_string(data)
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=fp16.keep_io_types,
        op_block_list=list(fp16.op_block_list) if fp16.op_block_list else None,
    )
    return converted.SerializeToString()


def _quantize(data: bytes, quantize: Any, scratch: Path, calibration: list[dict[str, Any]] | None) -> bytes:
    import logging

    from onnxruntime import quantization as q

    source, target = scratch / "before-quantize.onnx", scratch / "quantized.onnx"
    source.write_bytes(data)
    common = {
        "weight_type": getattr(q.QuantType, quantize.weight_type),
        "per_channel": quantize.per_channel,
        "reduce_range": quantize.reduce_range,
    }
    # onnxruntime.quantization logs "consider pre-processing" on the root logger every call.
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


def default_budget(kind: str, depth: int) -> float:
    """The default budget of ``kind`` ("fp16" or "int8") for a graph ``depth`` operators deep."""
    return BUDGET_MULTIPLE * UNITS[kind] * math.sqrt(depth)


def budget(shipped: Any, depth: int) -> tuple[float, str] | None:
    """The budget a shipped model is judged against, of the output's scale, and how it was set;
    None where only the optimize step runs (judged as the plain export is)."""
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
