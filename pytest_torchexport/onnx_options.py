"""[ONNX As Shipped] The options that post-process the onnx backend's file before it is checked
(``onnx_optimize``, ``onnx_fp16``, ``onnx_quantize``), validated for ``options.Options.build``.
Like ``options.py``, this module never imports torch."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument

#: onnx_optimize's level names (backends/onnx_shipped.py maps them to onnxruntime's).
ONNX_OPTIMIZE_LEVELS: tuple[str, ...] = ("basic", "extended", "layout", "all")
ONNX_QUANTIZE_MODES: tuple[str, ...] = ("dynamic", "static")


@dataclass(frozen=True)
class OnnxFp16:
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] | None = None
    budget: float | None = None  # of the output's scale; None: derived from the op depth


@dataclass(frozen=True)
class OnnxQuantize:
    """onnxruntime.quantization's arguments as the team ships them; the defaults are its own."""

    mode: str = "dynamic"
    budget: float | None = None  # of the output's scale; None: the mode's default
    weight_type: str = "QInt8"
    activation_type: str = "QInt8"  # static only (dynamic quantizes activations to uint8)
    per_channel: bool = False
    reduce_range: bool = False


@dataclass(frozen=True)
class ShippedOnnx:
    """[ONNX As Shipped] The post-processing the onnx backend's file goes through before it is
    checked (backends/onnx_shipped.py): float16, then int8, then the offline optimization."""

    optimize: str | None = None
    fp16: OnnxFp16 | None = None
    quantize: OnnxQuantize | None = None


def validate_shipped(values: dict[str, Any]) -> None:
    """Validate and normalize onnx_optimize, onnx_fp16 and onnx_quantize in ``values``."""
    if "onnx_optimize" in values:
        values["onnx_optimize"] = _onnx_optimize(values["onnx_optimize"])
    if "onnx_fp16" in values:
        values["onnx_fp16"] = _onnx_fp16(values["onnx_fp16"])
    if "onnx_quantize" in values:
        values["onnx_quantize"] = _onnx_quantize(values["onnx_quantize"])
    for key in ("onnx_optimize", "onnx_fp16", "onnx_quantize"):
        if values.get(key) is None:
            values.pop(key, None)
    if "onnx_fp16" in values and "onnx_quantize" in values:
        raise InvalidArgument(
            "torchexport options onnx_fp16= and onnx_quantize= exclude each other: int8 quantization takes a float32 "
            "model (onnxruntime.quantization), so pick the one you ship"
        )
    budget = next(
        (values[k].budget for k in ("onnx_fp16", "onnx_quantize") if k in values and values[k].budget is not None), None
    )
    explicit = [
        t for t in ("rtol", "atol") if t in values and (not isinstance(values[t], Mapping) or "onnx" in values[t])
    ]
    if budget is not None and explicit:
        raise InvalidArgument(
            f"torchexport option {'/'.join(explicit)}= for onnx and a max_error in onnx_fp16=/onnx_quantize= both set the "
            "onnx tolerance: keep one (max_error is a fraction of the output's scale; rtol/atol are per element)"
        )


def _onnx_optimize(value: Any) -> str | None:
    if value is False:
        return None
    if value is True:
        return "all"
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("ort_enable_")
        if name in ONNX_OPTIMIZE_LEVELS:
            return name
    raise InvalidArgument(
        f"torchexport option onnx_optimize= takes one of {', '.join(map(repr, ONNX_OPTIMIZE_LEVELS))} (onnxruntime's "
        f"GraphOptimizationLevel) or True for 'all', got {value!r}"
    )


#: The allowed error's key in onnx_fp16=/onnx_quantize=, and its earlier name, still read.
MAX_ERROR, MAX_ERROR_EARLIER = "max_error", "budget"


def _max_error(option: str, given: Mapping[str, Any]) -> float | None:
    """The allowed error of ``option``'s dict: ``max_error``, or ``budget`` (its earlier name)."""
    if MAX_ERROR in given and MAX_ERROR_EARLIER in given:
        raise InvalidArgument(f"torchexport option {option}= takes max_error (budget is its earlier name), not both")
    value = given.get(MAX_ERROR, given.get(MAX_ERROR_EARLIER))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise InvalidArgument(
            f"torchexport option {option} max_error= takes a number > 0 (a fraction of the output's scale, 0.05 = 5%), "
            f"got {value!r}"
        )
    return float(value)


def _onnx_fp16(value: Any) -> OnnxFp16 | None:
    if value is False:
        return None
    if value is True:
        return OnnxFp16()
    keys = ("keep_io_types", "op_block_list", MAX_ERROR)
    if not isinstance(value, Mapping) or set(value) - {*keys, MAX_ERROR_EARLIER}:
        bad = sorted(map(repr, set(value) - {*keys, MAX_ERROR_EARLIER})) if isinstance(value, Mapping) else []
        raise InvalidArgument(
            "torchexport option onnx_fp16= takes True or a dict with the keys "
            f"{', '.join(keys)}, got {value!r}" + (f" (unknown: {', '.join(bad)})" if bad else "")
        )
    keep = value.get("keep_io_types", True)
    if not isinstance(keep, bool):
        raise InvalidArgument(f"torchexport option onnx_fp16= takes keep_io_types True or False, got {keep!r}")
    block = value.get("op_block_list")
    if block is not None and (isinstance(block, str) or not all(isinstance(op, str) for op in block)):
        raise InvalidArgument(
            f"torchexport option onnx_fp16= takes op_block_list as a list of ONNX op types, got {block!r}"
        )
    return OnnxFp16(keep, tuple(block) if block is not None else None, _max_error("onnx_fp16", value))


def _onnx_quantize(value: Any) -> OnnxQuantize | None:
    if value is False:
        return None
    given = {"mode": value} if isinstance(value, str) else value
    keys = ("mode", MAX_ERROR, MAX_ERROR_EARLIER, "weight_type", "activation_type", "per_channel", "reduce_range")
    if isinstance(given, Mapping) and not set(given) - set(keys) and given.get("mode") in ONNX_QUANTIZE_MODES:
        types = {k: given.get(k, "QInt8") for k in ("weight_type", "activation_type")}
        flags = {k: given.get(k, False) for k in ("per_channel", "reduce_range")}
        if all(t in ("QInt8", "QUInt8") for t in types.values()) and all(isinstance(f, bool) for f in flags.values()):
            return OnnxQuantize(given["mode"], _max_error("onnx_quantize", given), **types, **flags)  # type: ignore[arg-type]  # checked just above
    raise InvalidArgument(
        f"torchexport option onnx_quantize= takes {' or '.join(map(repr, ONNX_QUANTIZE_MODES))}, or a dict with "
        f"mode= one of those and optionally max_error= (a fraction of the output's scale), weight_type=/activation_type= "
        f'("QInt8" or "QUInt8"), per_channel=/reduce_range= (True/False), got {value!r}'
    )
