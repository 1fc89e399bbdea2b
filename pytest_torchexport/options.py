"""Every option of the marker, fixture and ``check()``, validated in one place.

Resolution order: marker (or call) > command line > ini > default. This module never
imports torch, so markers are validated at collection time for free.

[ONNX As Shipped] The options that post-process the onnx backend's file are validated at
the end of the module (``validate_shipped``). See docs/reference.md.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._compat import torch
from .errors import InvalidArgument

# name -> "module:Class". Strings, so nothing imports until a backend is chosen.
BUILTIN_BACKENDS: dict[str, str] = {
    "trace": "pytest_torchexport.backends.trace:TraceBackend",
    "script": "pytest_torchexport.backends.script:ScriptBackend",
    "onnx": "pytest_torchexport.backends.onnx:DynamoOnnxBackend",
    "export": "pytest_torchexport.backends.export:ExportBackend",
    "onnx-legacy": "pytest_torchexport.backends.onnx:LegacyOnnxBackend",
    "compile": "pytest_torchexport.backends.compile:CompileBackend",
    "aoti": "pytest_torchexport.backends.aoti:AotiBackend",
    "executorch": "pytest_torchexport.backends.executorch:ExecutorchBackend",
    "openvino": "pytest_torchexport.backends.openvino:OpenVinoBackend",
    "litert": "pytest_torchexport.backends.litert:LiteRtBackend",
    "tensorrt": "pytest_torchexport.backends.tensorrt:TensorRtBackend",
}
DEFAULT_BACKENDS: tuple[str, ...] = ("trace", "script", "onnx", "export")
#: What to install when a backend listed in --torchexport-require is unavailable.
INSTALL: dict[str, str] = {
    "trace": "a torch that still provides TorchScript (torch.jit; 2.13.0 to 2.15.0 do, with a deprecation warning): pip install 'torch>=2.13,<=2.15.0'",
    "script": "a torch that still provides TorchScript (torch.jit; 2.13.0 to 2.15.0 do, with a deprecation warning): pip install 'torch>=2.13,<=2.15.0'",
    "onnx-legacy": "a torch that still provides TorchScript (torch.jit; 2.13.0 to 2.15.0 do, with a deprecation warning): pip install 'torch>=2.13,<=2.15.0'",
    "onnx": "pip install onnx onnxruntime onnxscript",
    "export": "pip install 'torch>=2.13'",
    "compile": "pip install 'torch>=2.13'",
    "aoti": "pip install 'torch>=2.13' and a C++ compiler (g++) on PATH",
    "executorch": 'pip install "pytest-torchexport[executorch]"',
    "openvino": 'pip install "pytest-torchexport[openvino]"',
    "litert": 'pip install "pytest-torchexport[litert]"',
    "tensorrt": 'pip install "pytest-torchexport[tensorrt]" on a machine with an NVIDIA GPU and CUDA',
}
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DEFAULT_EXAMPLES = 25
DEFAULT_TIMEOUT = 900.0
ISOLATION_MODES: tuple[str, ...] = ("process", "inline")
#: ``--torchexport-cpp``: the C++ load check where a compiler and torch's headers are (``auto``), or ``off``.
CPP_MODES: tuple[str, ...] = ("auto", "off")

#: Options a marker, the fixture and ``check()`` accept (docs/reference.md).
MARKER_OPTIONS: tuple[str, ...] = (
    "backends",
    "devices",
    "examples",
    "dims",
    "dynamic",
    "inputs",
    "rtol",
    "atol",
    "xfail",
    "module",
    "roundtrip",
    "standalone",
    "seed",
    "special_values",
    "vary_scalars",
    "compare",
    "timeout",
    "onnx_optimize",
    "onnx_fp16",
    "onnx_quantize",
    "budget",
)


#: One line per option: the reference page (docs/reference.md) is generated from these.
OPTION_DOCS: dict[str, str] = {
    "backends": 'backends to run: ["trace", "onnx"] or "trace,onnx" (default trace, script, onnx, export)',
    "devices": '"cpu", "cuda" or "auto" (cpu, plus cuda when available); default auto',
    "examples": f"hypothesis examples per backend (default {DEFAULT_EXAMPLES}); explicit probes come on top",
    "dims": 'named dynamic dims and their ranges: {"batch": (1, 32), "seq": (2, 128)}',
    "dynamic": 'which input dims are dynamic: {"input_ids": {0: "batch", 1: "seq"}} (name or position)',
    "inputs": 'replace the recorded call with specs: (TensorSpec(("batch", 16)),) or {name: spec}',
    "rtol": 'relative tolerance: a number or {"onnx": 1e-3} per backend (default per dtype and backend)',
    "atol": 'absolute tolerance: a number or {"onnx": 1e-4} per backend',
    "xfail": '{"onnx": "reason"}: a known-broken path; strict, so an unexpected pass fails',
    "module": "class name of the recorded module to validate when the test calls several",
    "roundtrip": "save and reload each artifact and validate the loaded one (default True)",
    "standalone": "also load and run each saved artifact on the recorded example in a fresh process that never "
    "imported the test's code (default True; needs roundtrip)",
    "seed": "fix the seed of input generation (and of the test body's RNG)",
    "special_values": "also draw NaN, +-inf, zeros and extremes, values x100 and x1e-3 the example's scale, and fully masked rows",
    "vary_scalars": "vary Python int/float/bool arguments too (default: kept as recorded)",
    "compare": "fn(expected, actual) raising AssertionError: replaces the value comparison",
    "timeout": f"time limit in seconds of one backend check, export, load and search together (default {DEFAULT_TIMEOUT:g}); "
    "enforced under process isolation",
    "onnx_optimize": 'check the onnx backend\'s file as onnxruntime\'s offline optimization saves it: "basic", "extended", '
    '"layout" or "all" (True: "all"); served with the optimizations off, as onnxruntime advises (docs/howto-shipped-onnx.md)',
    "onnx_fp16": "check the onnx backend's file after float16 conversion (onnxconverter-common; float32 inputs and outputs "
    'kept): True, or {"keep_io_types": bool, "op_block_list": [...], "max_error": fraction of the output\'s scale '
    '(earlier name "budget", still read)}; default max_error 8 x 2**-11 x sqrt(op depth)',
    "onnx_quantize": 'check the onnx backend\'s file after int8 quantization (onnxruntime.quantization): "dynamic" or '
    '"static" (calibrated on the recorded example and drawn inputs), or {"mode": ..., "max_error": fraction of the '
    'output\'s scale (earlier name "budget", still read), "weight_type"/"activation_type": "QInt8"|"QUInt8", '
    '"per_channel"/"reduce_range": bool} (onnxruntime\'s defaults otherwise); default max_error 8 x 1/510 x sqrt(op depth)',
    "budget": 'the most a test\'s checks may spend beyond their exports: seconds, "90s", "10m", "1h" or "off" '
    "(the full search); default the larger of 60 s and 10 x the test body's own time (docs/howto-budget.md)",
}

#: Defaults a value cannot show (None that means "derived"): the reference page's default column.
OPTION_DEFAULTS: dict[str, str] = {
    "dynamic": "dim 0 as batch, and dims shared by several inputs",
    "inputs": "the recorded call",
    "rtol": "per dtype and backend",
    "atol": "per dtype and backend",
    "module": "the first module the test calls",
    "seed": "drawn (derandomized under CI)",
    "compare": "torch.testing.assert_close",
    "onnx_optimize": "off",
    "onnx_fp16": "off",
    "onnx_quantize": "off",
    "budget": "max(60 s, 10 x the test body's time)",
}

#: Environment variables a person may set: name -> what it does. Read only through ``environment()``;
#: tests/test_reference_table.py checks every name the package reads is here or in ``INTERNAL_ENVIRONMENT``.
ENVIRONMENT: dict[str, str] = {
    "TORCHEXPORT_CACHE_SECRET": "signs every verdict-cache entry written and refuses one whose signature does not "
    "verify; pass it to trusted CI runs only (docs/howto-cache.md)",
    "TORCHEXPORT_JOBS": "how many checks this process runs side by side (default: its share of the cores, at most one "
    "per 2 GiB of available memory); 1: one at a time",
    "TORCHEXPORT_COPY_LIMIT": 'bytes of parameters and buffers a test\'s copies of its modules "as called" may hold '
    "(default 2 GiB); past it the live module is checked (earlier name TORCHEXPORT_COPY_BUDGET, still read)",
    "TORCHEXPORT_SIZE_LIMITS": "off: lift every limit on drawn sizes and examples, the memory cap and the time limit's "
    "share, whatever they cost (a machine known to hold the declared ranges)",
    "CI": "set (as CI services do): the search is derandomized per test and backend, so an unchanged model gets the "
    "same verdict on every run",
    "GITHUB_ACTIONS": "true: each failing row is also a GitHub Actions error annotation at its source line",
    "CXX": "the C++ compiler the C++ load check builds its runner with (default: c++, g++ or clang++ on PATH)",
    "TORCHEXPORT_CPP_CACHE": "where the C++ runner is built, once per torch (default: XDG_CACHE_HOME/pytest-torchexport/cpp)",
    "XDG_CACHE_HOME": "the cache folder the C++ runner goes under (default ~/.cache)",
}
#: Earlier names still read: the earlier name -> the name it became.
ENVIRONMENT_ALIASES: dict[str, str] = {
    "TORCHEXPORT_COPY_BUDGET": "TORCHEXPORT_COPY_LIMIT",
    "TORCHEXPORT_SIZE_BUDGET": "TORCHEXPORT_SIZE_LIMITS",
}
#: Variables the package sets or reads for itself, never a person: not on the reference page.
INTERNAL_ENVIRONMENT: dict[str, str] = {
    "TORCHEXPORT_LOADER_PARENT": "the standalone loader's parent process, set when it is spawned",
    "PYTEST_XDIST_WORKER_COUNT": "set by pytest-xdist in its workers",
    "TMPDIR": "set in a check's child process to the check's scratch folder",
}


#: The words a switch (an ini value, an environment variable) is read as.
ON_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("0", "false", "no", "off", "none")


def switched_on(value: object) -> bool:
    """An ini value or a flag: on only where it says so (``True``, or one of ``ON_WORDS``)."""
    return value is True or str(value).strip().lower() in ON_WORDS


def switched_off(value: str) -> bool:
    """A setting that is on (or a path) unless it says off (one of ``OFF_WORDS``)."""
    return value.strip().lower() in OFF_WORDS


def environment(name: str, default: str = "") -> str:
    """The value of one of ``ENVIRONMENT``'s variables (or its earlier name), read when asked, never cached."""
    value = os.environ.get(name)
    if value is None:
        value = next(
            (os.environ[old] for old, new in ENVIRONMENT_ALIASES.items() if new == name and old in os.environ), None
        )
    return default if value is None else value


#: ``TORCHEXPORT_SIZE_LIMITS=off`` lifts every limit on drawn sizes (the old ``TORCHEXPORT_SIZE_BUDGET`` is still read).
SIZE_LIMITS_ENV = "TORCHEXPORT_SIZE_LIMITS"


def size_limits() -> bool:
    """Whether drawn sizes are bounded (``SIZE_LIMITS_ENV``); read at each check. Here, not in the
    budget's module, so that the verdict cache can key it without importing the engine."""
    return not switched_off(environment(SIZE_LIMITS_ENV))


def closest(name: str, valid: Sequence[str]) -> str:
    """\" (did you mean 'x'?)\" for the valid name nearest a misspelled one, or \"\" when none is near."""
    near = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.75)
    return f" (did you mean {near[0]!r}?)" if near else ""


@dataclass(frozen=True)
class Options:
    """Resolved options for one check. Build with ``Options.build(...)``, which validates."""

    backends: tuple[str, ...] = DEFAULT_BACKENDS
    devices: tuple[str, ...] = ("auto",)
    examples: int = DEFAULT_EXAMPLES
    dims: Mapping[str, Any] = field(default_factory=dict)
    dynamic: Mapping[Any, Mapping[int, str]] | None = None
    inputs: Any = None
    rtol: float | Mapping[str, float] | None = None
    atol: float | Mapping[str, float] | None = None
    xfail: Mapping[str, str] = field(default_factory=dict)
    module: str | None = None
    roundtrip: bool = True
    standalone: bool = True
    seed: int | None = None
    special_values: bool = False
    vary_scalars: bool = False
    compare: Callable[[Any, Any], Any] | None = None
    #: Not a marker option: where failing examples go (``--torchexport-repro-dir``).
    repro_dir: str | None = None
    #: Not a marker option: where every artifact is kept (``--torchexport-keep-artifacts``).
    keep_artifacts: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    onnx_optimize: str | None = None
    onnx_fp16: OnnxFp16 | None = None
    onnx_quantize: OnnxQuantize | None = None
    #: Not a marker option: ``process``, ``inline`` or None (process where it can; runner.py).
    isolation: str | None = None
    #: Not a marker option: backends whose unavailability fails instead of skipping (``--torchexport-require``).
    require: tuple[str, ...] = ()
    #: [Search Budget] seconds the checks may spend beyond their exports; None: a multiple of the
    #: test body's time; ``math.inf``: off.
    budget: float | None = None
    #: Not a marker option: the bytes one check's drawn calls may hold (``--torchexport-memory``);
    #: None: half the free memory per check; ``math.inf``: off.
    memory: float | None = None
    #: Not a marker option: ``auto`` (the C++ load check where a compiler is) or ``off`` (``--torchexport-cpp``).
    cpp: str = "auto"
    #: Not a marker option: the folder a bundle per check is written to (``--torchexport-bundle``).
    bundle: str | None = None

    @classmethod
    def build(cls, valid_backends: Sequence[str] = tuple(BUILTIN_BACKENDS), **given: object) -> Options:
        """Validate ``given`` (marker or call keywords) and fill in defaults."""
        unknown = sorted(
            set(given)
            - set(MARKER_OPTIONS)
            - {"repro_dir", "keep_artifacts", "isolation", "require", "memory", "cpp", "bundle"}
        )
        if unknown:
            raise InvalidArgument(
                f"unknown torchexport option(s) {', '.join(map(repr, unknown))}{closest(unknown[0], MARKER_OPTIONS)}; "
                f"valid options: {', '.join(MARKER_OPTIONS)}"
            )
        values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if "backends" in values:
            values["backends"] = parse_backends(values["backends"], valid_backends)
        if "devices" in values:
            values["devices"] = parse_devices(values["devices"])
        if "require" in values:
            values["require"] = parse_backends(values["require"], valid_backends) if values["require"] else ()
        if "examples" in values:
            values["examples"] = _positive_int("examples", values["examples"], minimum=1)
        if "timeout" in values:
            values["timeout"] = _timeout(values["timeout"])
        if "isolation" in values and values["isolation"] not in ISOLATION_MODES:
            raise InvalidArgument(
                f"torchexport isolation takes one of {', '.join(ISOLATION_MODES)}, got {values['isolation']!r}"
            )
        if "cpp" in values and values["cpp"] not in CPP_MODES:
            raise InvalidArgument(f"torchexport cpp takes one of {', '.join(CPP_MODES)}, got {values['cpp']!r}")
        if "seed" in values:
            values["seed"] = _positive_int("seed", values["seed"], minimum=0)
        for flag in ("roundtrip", "standalone", "special_values", "vary_scalars"):
            if flag in values and not isinstance(values[flag], bool):
                raise InvalidArgument(f"torchexport option {flag}= takes True or False, got {values[flag]!r}")
        for tol in ("rtol", "atol"):
            if tol in values:
                values[tol] = _tolerance(tol, values[tol], valid_backends)
        if "xfail" in values:
            values["xfail"] = _xfail(values["xfail"], valid_backends)
        if "dims" in values:
            values["dims"] = _dims(values["dims"])
        if "dynamic" in values:
            values["dynamic"] = _dynamic(values["dynamic"])
        if "module" in values and not isinstance(values["module"], str):
            raise InvalidArgument(f"torchexport option module= takes a class name (str), got {values['module']!r}")
        if "compare" in values and not callable(values["compare"]):
            raise InvalidArgument(
                f"torchexport option compare= takes a callable(expected, actual), got {values['compare']!r}"
            )
        if "budget" in values:
            values["budget"] = parse_duration("budget", values["budget"])
        if "memory" in values:
            values["memory"] = parse_bytes("memory", values["memory"])
        validate_shipped(values)
        return cls(**values)

    @property
    def onnx_shipped(self) -> ShippedOnnx | None:
        """The steps the onnx backend's file goes through before it is checked, or None."""
        if self.onnx_optimize is None and self.onnx_fp16 is None and self.onnx_quantize is None:
            return None
        return ShippedOnnx(self.onnx_optimize, self.onnx_fp16, self.onnx_quantize)

    def tolerance(self, name: str, backend: str) -> float | None:
        value = getattr(self, name)
        if isinstance(value, Mapping):
            return value.get(backend)
        return value


def parse_backends(value: object, valid: Sequence[str]) -> tuple[str, ...]:
    names = _names(value, "backends")
    bad = [n for n in names if n not in valid]
    if bad:
        raise InvalidArgument(
            f"unknown torchexport backend(s) {', '.join(map(repr, bad))}{closest(bad[0], valid)}; "
            f"valid backends: {', '.join(valid)}"
        )
    if not names:
        raise InvalidArgument(f"torchexport backends= is empty; valid backends: {', '.join(valid)}")
    return tuple(dict.fromkeys(names))


def parse_devices(value: object) -> tuple[str, ...]:
    names = _names(value, "devices")
    bad = [n for n in names if n not in (*DEVICES, "auto")]
    if bad or not names:
        raise InvalidArgument(
            f"unknown torchexport device(s) {', '.join(map(repr, bad)) or '(none given)'}"
            f"{closest(bad[0], (*DEVICES, 'auto')) if bad else ''}; "
            f"valid devices: {', '.join(DEVICES)}, auto"
        )
    return tuple(dict.fromkeys(names))


def resolve_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    """The devices a check runs on: ``auto`` is the CPU, and CUDA where torch sees a GPU."""
    if "auto" not in devices:
        return devices

    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def _names(value: object, option: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(f"torchexport option {option}= takes a list of names or 'a,b', got {value!r}")


def _positive_int(option: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgument(f"torchexport option {option}= takes an integer >= {minimum}, got {value!r}")
    return int(value)


#: [Search Budget] The written forms of a duration, for every message that refuses one.
DURATION_FORMS = 'a number of seconds (90), "90s", "10m", "1.5h", or "off" for the full search'
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(option: str, value: object) -> float:
    """A budget in seconds: a positive number, ``"90s"``, ``"10m"``, ``"1h"``; ``"off"`` is ``math.inf``."""
    if isinstance(value, str):
        text = value.strip()  # strict: "5S" is not a unit, and an empty value is not a duration
        if text.lower() == "off":
            return math.inf
        number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
        try:
            seconds = float(number) * _UNITS[unit]
        except ValueError:
            seconds = math.nan
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise InvalidArgument(f"torchexport option {option}= takes {DURATION_FORMS}; got {value!r}")
    return seconds


#: The written forms of a memory allowance in bytes, for every message that refuses one.
BYTES_FORMS = 'a number of bytes, "512MB", "8GB" (K, M, G, T; "GiB" and "GB" both 2**30), or "off" for no memory cap'
_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(option: str, value: object) -> float:
    """A memory allowance in bytes: a positive number, ``"512MB"``, ``"8GB"``; ``"off"`` is ``math.inf``."""
    amount = math.nan
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "off":
            return math.inf
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?", text)
        if match and (match.group(2) or not match.group(3) or match.group(3) == "b"):
            amount = float(match.group(1)) * _BYTE_UNITS[match.group(2)]
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        amount = float(value)
    if not amount > 0 or math.isinf(amount):
        raise InvalidArgument(f"torchexport option {option}= takes {BYTES_FORMS}; got {value!r}")
    return amount


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise InvalidArgument(f"torchexport option timeout= takes a number of seconds > 0, got {value!r}")
    return float(value)


def _tolerance(option: str, value: object, valid: Sequence[str]) -> float | dict[str, float]:
    if isinstance(value, Mapping):
        bad = [k for k in value if k not in valid]
        if bad:
            raise InvalidArgument(
                f"torchexport option {option}= names unknown backend(s) {', '.join(map(repr, bad))}; "
                f"valid backends: {', '.join(valid)}"
            )
        return {k: _tolerance(option, v, valid) for k, v in value.items()}  # type: ignore[misc]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise InvalidArgument(f"torchexport option {option}= takes a number >= 0 or {{backend: number}}, got {value!r}")
    return float(value)


def _xfail(value: object, valid: Sequence[str]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f'torchexport option xfail= takes {{backend: "reason"}}, got {value!r}')
    bad = [k for k in value if k not in valid]
    if bad:
        raise InvalidArgument(
            f"torchexport option xfail= names unknown backend(s) {', '.join(map(repr, bad))}; "
            f"valid backends: {', '.join(valid)}"
        )
    return dict(value)


def _dims(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f'torchexport option dims= takes {{"name": (min, max)}}, got {value!r}')
    out = {}
    for name, rng in value.items():
        if hasattr(rng, "min") and hasattr(rng, "max"):  # a Dim
            rng = (rng.min, rng.max)
        if (
            not isinstance(name, str)
            or not isinstance(rng, Sequence)
            or len(rng) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in rng)
            or not 0 <= rng[0] <= rng[1]
        ):
            raise InvalidArgument(
                f'torchexport option dims= takes {{"name": (min, max)}} with 0 <= min <= max, got {name!r}: {rng!r}'
            )
        out[name] = (int(rng[0]), int(rng[1]))
    return out


def _dynamic(value: object) -> dict[Any, dict[int, str]]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f'torchexport option dynamic= takes {{input: {{dim_index: "name"}}}}, got {value!r}')
    out: dict[Any, dict[int, str]] = {}
    for key, axes in value.items():
        if not isinstance(key, (str, int)) or not isinstance(axes, Mapping):
            raise InvalidArgument(
                f'torchexport option dynamic= takes {{input name or position: {{dim_index: "name"}}}}, got {key!r}: {axes!r}'
            )
        for idx, name in axes.items():
            if not isinstance(idx, int) or not isinstance(name, str):
                raise InvalidArgument(
                    f"torchexport option dynamic= maps a dim index (int) to a dim name (str), got {idx!r}: {name!r}"
                )
        out[key] = dict(axes)
    return out


# -- [ONNX As Shipped]: the options that post-process the onnx backend's file before it is checked --

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


def _onnx_optimize(value: object) -> str | None:
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


def _onnx_fp16(value: object) -> OnnxFp16 | None:
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


def _onnx_quantize(value: object) -> OnnxQuantize | None:
    if value is False:
        return None
    given = {"mode": value} if isinstance(value, str) else value
    keys = ("mode", MAX_ERROR, MAX_ERROR_EARLIER, "weight_type", "activation_type", "per_channel", "reduce_range")
    if isinstance(given, Mapping) and not set(given) - set(keys) and given.get("mode") in ONNX_QUANTIZE_MODES:
        types = {k: given.get(k, "QInt8") for k in ("weight_type", "activation_type")}
        flags = {k: given.get(k, False) for k in ("per_channel", "reduce_range")}
        if all(t in ("QInt8", "QUInt8") for t in types.values()) and all(isinstance(f, bool) for f in flags.values()):
            return OnnxQuantize(given["mode"], _max_error("onnx_quantize", given), **types, **flags)
    raise InvalidArgument(
        f"torchexport option onnx_quantize= takes {' or '.join(map(repr, ONNX_QUANTIZE_MODES))}, or a dict with "
        f"mode= one of those and optionally max_error= (a fraction of the output's scale), weight_type=/activation_type= "
        f'("QInt8" or "QUInt8"), per_channel=/reduce_range= (True/False), got {value!r}'
    )
