"""The command line and ini keys (docs/reference.md), and the session defaults they give.

One table, ``FLAGS``: each row is a flag, its ini key (or none), its help, and the marker
option it sets with how its text is read. ``add_options`` registers the table with pytest;
``session_defaults`` reads it back, command line over ini, and validates the result once
(``options.Options.build``) so a bad value is a usage error before any test runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..options import DEFAULT_EXAMPLES, DEFAULT_TIMEOUT, Options


def _int(flag: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes an integer, got {value!r}") from None


def _seconds(flag: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes a number of seconds, got {value!r}") from None


def _text(flag: str, value: Any) -> Any:
    return value


def _path(flag: str, value: Any) -> str:
    return str(value)


def _word(flag: str, value: Any) -> str:
    return str(value).strip()


@dataclass(frozen=True)
class Flag:
    flag: str
    ini: str | None
    help: str
    option: str | None = None  # the marker option it gives a session default for (None: read elsewhere)
    read: Callable[[str, Any], Any] = _text
    switch: bool = False  # a flag without a value (store_true)
    repeat: bool = False  # a flag given several times (append); its ini key takes one value a line

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag("--torchexport-backends", "torchexport_backends",
         "backends to run, comma-separated (default: trace,script,onnx,export)", "backends"),
    Flag("--torchexport-devices", "torchexport_devices",
         "devices: cpu,cuda or auto (= cpu, plus cuda when available)", "devices"),
    Flag("--torchexport-examples", "torchexport_examples",
         f"hypothesis examples per backend (default {DEFAULT_EXAMPLES})", "examples", _int),
    Flag("--torchexport-report", "torchexport_report",
         "write the session report: .json, .md for Markdown, or .html for a page (the html extra); repeatable, "
         "one file per format from one run (ini: one path a line)", repeat=True),
    Flag("--torchexport-baseline", "torchexport_baseline",
         "compare with a committed baseline report: fail on a regression"),
    Flag("--torchexport-update-baseline", None, "write the baseline (--torchexport-baseline) from this run",
         switch=True),
    Flag("--torchexport-auto", None,
         "check every collected test as if it carried a bare torchexport marker (explicit markers keep their "
         "options); a test that calls no nn.Module is skipped", switch=True),
    Flag("--torchexport-repro-dir", "torchexport_repro_dir", "save each failing example here for replay",
         "repro_dir", _path),
    Flag("--torchexport-seed", None, "fix the seed of input generation", "seed", _int),
    Flag("--torchexport-keep-artifacts", "torchexport_keep_artifacts",
         "keep every exported artifact, with its readable form (TorchScript code, export graph, ONNX text), "
         "under DIR/<test>/<backend>/", "keep_artifacts", _path),
    Flag("--torchexport-timeout", "torchexport_timeout",
         f"time limit in seconds of one backend check: export, load and search together (default {DEFAULT_TIMEOUT:g})",
         "timeout", _seconds),
    Flag("--torchexport-require", "torchexport_require",
         "backends that must be available: one that is not fails its items (with the install line) instead of "
         "being skipped, e.g. onnx,executorch", "require"),
    Flag("--torchexport-cache", "torchexport_cache",
         "DIR or off: reuse a pass whose every input is unchanged (versions, options, module and state, recorded "
         "inputs, the source of every file that ran or was read to make it); default: under pytest's cache dir"),
    Flag("--torchexport-isolation", "torchexport_isolation",
         "process (default where the OS can fork and CUDA is not yet initialised): each backend check "
         "in its own child process; inline: in the test's process", "isolation", _word),
    Flag("--torchexport-budget", "torchexport_budget",
         "DURATION or off: the most a test's checks may spend beyond their exports (90s, 10m, 1h); default a "
         "multiple of the test body's own time (docs/howto-budget.md); off: the full search", "budget", _word),
    Flag("--torchexport-memory", "torchexport_memory",
         "SIZE or off: the memory one check's drawn inputs may take (512MB, 8GB); a declared size beyond it is not "
         "tried, and the summary says so; default half of the free memory each check has here (docs/howto-dims.md)",
         "memory", _word),
)


def add_options(parser: Any) -> None:
    group = parser.getgroup("torchexport", "export validation (pytest-torchexport)")
    for row in FLAGS:
        if row.switch:
            group.addoption(row.flag, dest=row.dest, action="store_true", default=False, help=row.help)
        elif row.repeat:
            group.addoption(row.flag, dest=row.dest, action="append", default=[], help=row.help)
        else:
            group.addoption(row.flag, dest=row.dest, default=None, help=row.help)
        if row.ini and row.repeat:
            parser.addini(row.ini, help=row.help, type="linelist", default=[])
        elif row.ini:
            parser.addini(row.ini, help=row.help, default=None)
        if row.flag == "--torchexport-auto":
            parser.addini(
                "torchexport_auto", type="bool", default=False,
                help="check every collected test as if it carried a bare torchexport marker",
            )
    add_model_options(group, parser)


def add_model_options(group: Any, parser: Any) -> None:
    """[Model By Name] glue/models.py reads these: a SPEC list, not one marker option."""
    model_help = (
        "check a model with no test file (repeatable): timm:NAME, torchvision:NAME, transformers:NAME, "
        "pkg.module:Factory or "
        "path/to/file.py:Factory, keyword arguments after ? (timm:vit_tiny_patch16_224?num_classes=10); random "
        "weights, eval mode, inputs inferred; each model is a test, torchexport-model::SPEC (ini: one SPEC a line)"
    )
    group.addoption("--torchexport-model", dest="torchexport_model", action="append", default=[], metavar="SPEC",
                    help=model_help)
    parser.addini("torchexport_models", type="linelist", default=[], help=model_help)
    group.addoption(
        "--torchexport-model-inputs", dest="torchexport_model_inputs", default=None, metavar="SPECS",
        help="the inputs of the --torchexport-model models where inference cannot find them: "
        "'x: float32[batch=1..8, 3, 224, 224]; mask: bool[batch, 16]' (dtype, sizes, dims with their ranges)",
    )
    group.addoption(
        "--torchexport-models-only", dest="torchexport_models_only", action="store_true", default=False,
        help="collect only the --torchexport-model tests, no test files "
        "(what `python -m pytest_torchexport check` runs)",
    )


def session_defaults(config: Any, valid_backends: Sequence[str]) -> dict[str, Any]:
    """CLI > ini > default for the options a marker can override."""
    given: dict[str, Any] = {}
    for row in FLAGS:
        if row.option is None:
            continue
        value = config.getoption(row.dest)
        if value is None and row.ini:
            value = config.getini(row.ini)
        if value:
            given[row.option] = row.read(row.flag, value)
    given.setdefault("devices", "auto")
    Options.build(valid_backends=valid_backends, **given)  # fail fast on a bad CLI value
    return given


__all__ = ["FLAGS", "add_model_options", "add_options", "session_defaults"]
