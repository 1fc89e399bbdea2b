"""Every option of the marker, fixture and ``check()``, validated in one place.

Resolution order, here and nowhere else: marker (or call) > command line > ini > default.
This module never imports torch, so the plugin can validate markers at collection time
for free.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
}
DEFAULT_BACKENDS: tuple[str, ...] = ("trace", "script", "onnx", "export")
#: What to install when a backend listed in --torchexport-require is unavailable.
INSTALL: dict[str, str] = {
    "trace": "a torch that still provides TorchScript (torch.jit): pip install 'torch<2.15'",
    "script": "a torch that still provides TorchScript (torch.jit): pip install 'torch<2.15'",
    "onnx-legacy": "a torch that still provides TorchScript (torch.jit): pip install 'torch<2.15'",
    "onnx": "pip install onnx onnxruntime onnxscript",
    "export": "pip install 'torch>=2.6'",
    "compile": "pip install 'torch>=2.6'",
    "aoti": "pip install 'torch>=2.6' and a C++ compiler (g++) on PATH",
    "executorch": 'pip install "pytest-torchexport[executorch]"',
}
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DEFAULT_EXAMPLES = 25
DEFAULT_TIMEOUT = 900.0
ISOLATION_MODES: tuple[str, ...] = ("process", "inline")

#: Options a marker, the fixture and ``check()`` accept (contract section 1).
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
)


#: One line per option: the reference page (docs/reference.md) is generated from these.
OPTION_DOCS: dict[str, str] = {
    "backends": 'backends to run: ["trace", "onnx"] or "trace,onnx" (default trace, script, onnx, export)',
    "devices": '"cpu", "cuda" or "auto" (cpu, plus cuda when available); default auto',
    "examples": f"hypothesis examples per backend (default {DEFAULT_EXAMPLES}); explicit probes come on top",
    "dims": 'named dynamic dims and their ranges: {"batch": (1, 32), "seq": (2, 128)}',
    "dynamic": 'which input dims are dynamic: {"input_ids": {0: "batch", 1: "seq"}} (name or position)',
    "inputs": "replace the recorded call with specs: (TensorSpec((\"batch\", 16)),) or {name: spec}",
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
}


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
    #: Not a marker option: ``process``, ``inline`` or None (process where it can; runner.py).
    isolation: str | None = None
    #: Not a marker option: backends whose unavailability fails instead of skipping (``--torchexport-require``).
    require: tuple[str, ...] = ()

    @classmethod
    def build(cls, valid_backends: Sequence[str] = tuple(BUILTIN_BACKENDS), **given: Any) -> Options:
        """Validate ``given`` (marker or call keywords) and fill in defaults."""
        unknown = sorted(set(given) - set(MARKER_OPTIONS) - {"repro_dir", "keep_artifacts", "isolation", "require"})
        if unknown:
            raise InvalidArgument(
                f"unknown torchexport option(s) {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(MARKER_OPTIONS)}"
            )
        values = {k: v for k, v in given.items() if v is not None}
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
            raise InvalidArgument(f"torchexport option compare= takes a callable(expected, actual), got {values['compare']!r}")
        return cls(**values)

    def tolerance(self, name: str, backend: str) -> float | None:
        value = getattr(self, name)
        if isinstance(value, Mapping):
            return value.get(backend)
        return value


def parse_backends(value: Any, valid: Sequence[str]) -> tuple[str, ...]:
    names = _names(value, "backends")
    bad = [n for n in names if n not in valid]
    if bad:
        raise InvalidArgument(
            f"unknown torchexport backend(s) {', '.join(map(repr, bad))}; valid backends: {', '.join(valid)}"
        )
    if not names:
        raise InvalidArgument(f"torchexport backends= is empty; valid backends: {', '.join(valid)}")
    return tuple(dict.fromkeys(names))


def parse_devices(value: Any) -> tuple[str, ...]:
    names = _names(value, "devices")
    bad = [n for n in names if n not in (*DEVICES, "auto")]
    if bad or not names:
        raise InvalidArgument(
            f"unknown torchexport device(s) {', '.join(map(repr, bad)) or '(none given)'}; "
            f"valid devices: {', '.join(DEVICES)}, auto"
        )
    return tuple(dict.fromkeys(names))


def _names(value: Any, option: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(f"torchexport option {option}= takes a list of names or 'a,b', got {value!r}")


def _positive_int(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgument(f"torchexport option {option}= takes an integer >= {minimum}, got {value!r}")
    return int(value)


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise InvalidArgument(f"torchexport option timeout= takes a number of seconds > 0, got {value!r}")
    return float(value)


def _tolerance(option: str, value: Any, valid: Sequence[str]) -> float | dict[str, float]:
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


def _xfail(value: Any, valid: Sequence[str]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f'torchexport option xfail= takes {{backend: "reason"}}, got {value!r}')
    bad = [k for k in value if k not in valid]
    if bad:
        raise InvalidArgument(
            f"torchexport option xfail= names unknown backend(s) {', '.join(map(repr, bad))}; "
            f"valid backends: {', '.join(valid)}"
        )
    return dict(value)


def _dims(value: Any) -> dict[str, Any]:
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


def _dynamic(value: Any) -> dict[Any, dict[int, str]]:
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
                    f'torchexport option dynamic= maps a dim index (int) to a dim name (str), got {idx!r}: {name!r}'
                )
        out[key] = dict(axes)
    return out


# -- command line and ini (contract section 5) -------------------------------------------
def add_options(parser: Any) -> None:
    group = parser.getgroup("torchexport", "export validation (pytest-torchexport)")

    def both(flag: str, ini: str | None, help: str, **kwargs: Any) -> None:
        group.addoption(flag, dest=flag.lstrip("-").replace("-", "_"), default=None, help=help, **kwargs)
        if ini:
            parser.addini(ini, help=help, default=None)

    both("--torchexport-backends", "torchexport_backends", "backends to run, comma-separated (default: trace,script,onnx,export)")
    both("--torchexport-devices", "torchexport_devices", "devices: cpu,cuda or auto (= cpu, plus cuda when available)")
    both("--torchexport-examples", "torchexport_examples", f"hypothesis examples per backend (default {DEFAULT_EXAMPLES})")
    both("--torchexport-report", "torchexport_report", "write the session report: .json, or .md for Markdown")
    both("--torchexport-baseline", "torchexport_baseline", "compare with a committed baseline report: fail on a regression")
    group.addoption(
        "--torchexport-update-baseline",
        action="store_true",
        default=False,
        help="write the baseline (--torchexport-baseline) from this run",
    )
    group.addoption(
        "--torchexport-auto",
        action="store_true",
        default=False,
        help="check every collected test as if it carried a bare torchexport marker (explicit markers keep their "
        "options); a test that calls no nn.Module is skipped",
    )
    parser.addini(
        "torchexport_auto",
        type="bool",
        default=False,
        help="check every collected test as if it carried a bare torchexport marker",
    )
    both("--torchexport-repro-dir", "torchexport_repro_dir", "save each failing example here for replay")
    both("--torchexport-seed", None, "fix the seed of input generation")
    both(
        "--torchexport-keep-artifacts",
        "torchexport_keep_artifacts",
        "keep every exported artifact, with its readable form (TorchScript code, export graph, ONNX text), "
        "under DIR/<test>/<backend>/",
    )
    both(
        "--torchexport-timeout",
        "torchexport_timeout",
        f"time limit in seconds of one backend check: export, load and search together (default {DEFAULT_TIMEOUT:g})",
    )
    both(
        "--torchexport-require",
        "torchexport_require",
        "backends that must be available: one that is not fails its items (with the install line) instead of "
        "being skipped, e.g. onnx,executorch",
    )
    both(
        "--torchexport-cache",
        "torchexport_cache",
        "DIR or off: reuse a pass whose every input is unchanged (versions, options, module and state, recorded "
        "inputs, the source of every file that ran or was read to make it); default: under pytest's cache dir",
    )
    both(
        "--torchexport-isolation",
        "torchexport_isolation",
        "process (default where the OS can fork and CUDA is not yet initialised): each backend check "
        "in its own child process; inline: in the test's process",
    )


def session_defaults(config: Any, valid_backends: Sequence[str]) -> dict[str, Any]:
    """CLI > ini > default for the options a marker can override."""

    def pick(name: str, ini: str | None) -> Any:
        value = config.getoption(name)
        if value is None and ini:
            value = config.getini(ini)
        return value or None

    given: dict[str, Any] = {}
    if (b := pick("torchexport_backends", "torchexport_backends")) is not None:
        given["backends"] = b
    if (d := pick("torchexport_devices", "torchexport_devices")) is not None:
        given["devices"] = d
    if (e := pick("torchexport_examples", "torchexport_examples")) is not None:
        given["examples"] = _int_option("--torchexport-examples", e)
    if (s := pick("torchexport_seed", None)) is not None:
        given["seed"] = _int_option("--torchexport-seed", s)
    if (r := pick("torchexport_repro_dir", "torchexport_repro_dir")) is not None:
        given["repro_dir"] = str(r)
    if (k := pick("torchexport_keep_artifacts", "torchexport_keep_artifacts")) is not None:
        given["keep_artifacts"] = str(k)
    if (t := pick("torchexport_timeout", "torchexport_timeout")) is not None:
        given["timeout"] = _float_option("--torchexport-timeout", t)
    if (i := pick("torchexport_isolation", "torchexport_isolation")) is not None:
        given["isolation"] = str(i).strip()
    if (q := pick("torchexport_require", "torchexport_require")) is not None:
        given["require"] = q
    given.setdefault("devices", "auto")
    Options.build(valid_backends=valid_backends, **given)  # fail fast on a bad CLI value
    return given


def _int_option(flag: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes an integer, got {value!r}") from None


def _float_option(flag: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes a number of seconds, got {value!r}") from None
