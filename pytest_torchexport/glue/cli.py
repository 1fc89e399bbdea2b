"""The command line flags and ini keys, and the session defaults they give.

``FLAGS`` is one table of flag, ini key, help and marker option; ``session_defaults``
validates it, so a bad value is a usage error before any test runs. See docs/reference.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..options import DEFAULT_EXAMPLES, DEFAULT_TIMEOUT, Options, closest

if TYPE_CHECKING:
    from typing import TypeVar

    import pytest

    T = TypeVar("T")


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes an integer, got {value!r}") from None


def _seconds(flag: str, value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{flag} takes a number of seconds, got {value!r}") from None


def _text(flag: str, value: T) -> T:
    return value


def _path(flag: str, value: object) -> str:
    return str(value)


def _word(flag: str, value: object) -> str:
    return str(value).strip()


@dataclass(frozen=True)
class Flag:
    flag: str
    ini: str | None
    help: str
    option: str | None = None  # the marker option it sets a default for (None: read elsewhere)
    read: Callable[[str, Any], Any] = _text
    switch: bool = False  # a flag without a value (store_true)
    repeat: bool = False  # may be given several times; its ini key takes one value a line
    default: str = ""  # the default shown in docs/reference.md (empty: the marker option's)
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag(
        "--torchexport-backends",
        "torchexport_backends",
        "backends to run, comma-separated (default: trace,script,onnx,export)",
        "backends",
    ),
    Flag(
        "--torchexport-devices",
        "torchexport_devices",
        "devices: cpu,cuda or auto (= cpu, plus cuda when available)",
        "devices",
    ),
    Flag(
        "--torchexport-examples",
        "torchexport_examples",
        f"hypothesis examples per backend (default {DEFAULT_EXAMPLES})",
        "examples",
        _int,
    ),
    Flag(
        "--torchexport-report",
        "torchexport_report",
        "write the session report: .json, .md for Markdown, or .html for a page (the html extra); repeatable, "
        "one file per format from one run (ini: one path a line)",
        repeat=True,
        default="none",
        metavar="PATH",
    ),
    Flag(
        "--torchexport-baseline",
        "torchexport_baseline",
        "compare with a committed baseline report: fail on a regression",
        default="none",
        metavar="PATH",
    ),
    Flag(
        "--torchexport-update-baseline",
        "torchexport_update_baseline",
        "write the baseline (--torchexport-baseline) from this run",
        switch=True,
        default="false",
    ),
    Flag(
        "--torchexport-auto",
        "torchexport_auto",
        "check every collected test as if it carried a bare torchexport marker (explicit markers keep their "
        "options); a test that calls no nn.Module is skipped",
        switch=True,
        default="false",
    ),
    Flag(
        "--torchexport-repro-dir",
        "torchexport_repro_dir",
        "save each failing example here for replay",
        "repro_dir",
        _path,
    ),
    Flag("--torchexport-seed", "torchexport_seed", "fix the seed of input generation", "seed", _int),
    Flag(
        "--torchexport-keep-artifacts",
        "torchexport_keep_artifacts",
        "keep every exported artifact, with its readable form (TorchScript code, export graph, ONNX text), "
        "under DIR/<test>/<backend>/",
        "keep_artifacts",
        _path,
    ),
    Flag(
        "--torchexport-timeout",
        "torchexport_timeout",
        f"time limit in seconds of one backend check: export, load and search together (default {DEFAULT_TIMEOUT:g})",
        "timeout",
        _seconds,
    ),
    Flag(
        "--torchexport-require",
        "torchexport_require",
        "backends that must be available: one that is not fails its items (with the install line) instead of "
        "being skipped, e.g. onnx,executorch",
        "require",
    ),
    Flag(
        "--torchexport-cache",
        "torchexport_cache",
        "DIR or off: reuse a verdict whose every input is unchanged (versions, options, module and state, recorded "
        "inputs, the source of every file that ran or was read to make it): a pass, or a failure where the search "
        "is reproducible (CI, --torchexport-seed); default: under pytest's cache dir",
        default="under pytest's cache dir",
    ),
    Flag(
        "--torchexport-isolation",
        "torchexport_isolation",
        "process (default where the OS can fork and CUDA is not yet initialised): each backend check "
        "in its own child process; inline: in the test's process",
        "isolation",
        _word,
        default="process where the OS can fork",
    ),
    Flag(
        "--torchexport-budget",
        "torchexport_budget",
        "DURATION or off: the most a test's checks may spend beyond their exports (90s, 10m, 1h); default a "
        "multiple of the test body's own time (docs/howto-budget.md); off: the full search",
        "budget",
        _word,
    ),
    Flag(
        "--torchexport-memory",
        "torchexport_memory",
        "SIZE or off: the memory one check's drawn inputs may take (512MB, 8GB); a declared size beyond it is not "
        "tried, and the summary says so; default half of the free memory each check has here (docs/howto-dims.md)",
        "memory",
        _word,
    ),
    Flag(
        "--torchexport-cpp",
        "torchexport_cpp",
        "auto or off: load each saved TorchScript file and AOTInductor package in C++ (torch::jit::load, "
        "AOTIModelPackageLoader) with a runner built once per torch; auto: where a C++ compiler and torch's "
        "headers are (docs/howto-verify.md)",
        "cpp",
        _word,
    ),
    Flag(
        "--torchexport-bundle",
        "torchexport_bundle",
        "write a bundle per check under DIR (the artifact, the inputs tried, eager's outputs, tolerances, "
        "environment; nothing pickled) for `python -m pytest_torchexport verify DIR` on another machine or torch",
        "bundle",
        _path,
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("torchexport", "export validation (pytest-torchexport)")
    for row in FLAGS:
        _register(group, parser, row)
    add_model_options(group, parser)


def _register(group: pytest.OptionGroup, parser: pytest.Parser, row: Flag) -> None:
    """Register one row's flag and its ini key."""
    # Without a metavar argparse shows the dest in capitals, which reads like an environment variable.
    named = {"metavar": row.metavar or METAVARS.get(row.option or row.dest.removeprefix("torchexport_"), "VALUE")}
    if row.switch:
        group.addoption(row.flag, dest=row.dest, action="store_true", default=False, help=row.help)
    elif row.repeat:
        group.addoption(row.flag, dest=row.dest, action="append", default=[], help=row.help, **named)
    else:
        group.addoption(row.flag, dest=row.dest, default=None, help=row.help, **named)
    if row.ini and row.switch:
        parser.addini(row.ini, help=row.help, type="bool", default=False)
    elif row.ini and row.repeat:
        parser.addini(row.ini, help=row.help, type="linelist", default=[])
    elif row.ini:
        parser.addini(row.ini, help=row.help, default=None)


#: How each flag's value is shown in --help, by the option it sets.
METAVARS: dict[str, str] = {
    "backends": "A,B",
    "devices": "cpu,cuda",
    "examples": "N",
    "seed": "N",
    "timeout": "SECONDS",
    "repro_dir": "DIR",
    "keep_artifacts": "DIR",
    "bundle": "DIR",
    "require": "A,B",
    "cache": "DIR|off",
    "isolation": "process|inline",
    "budget": "DURATION|off",
    "memory": "SIZE|off",
    "cpp": "auto|off",
}


#: [Model By Name] read by glue/model_items.py, not a marker option.
MODEL_FLAGS: tuple[Flag, ...] = (
    Flag(
        "--torchexport-model",
        "torchexport_model",
        "check a model with no test file (repeatable): timm:NAME, torchvision:NAME, transformers:NAME, "
        "pkg.module:Factory or path/to/file.py:Factory, keyword arguments after ? "
        "(timm:vit_tiny_patch16_224?num_classes=10); random weights, eval mode, inputs inferred; each model is a "
        "test, torchexport-model::SPEC (ini: one SPEC a line)",
        repeat=True,
        default="none",
        metavar="SPEC",
    ),
    Flag(
        "--torchexport-model-inputs",
        "torchexport_model_inputs",
        "the inputs of the --torchexport-model models where inference cannot find them: "
        "'x: float32[batch=1..8, 3, 224, 224]; mask: bool[batch, 16]' (dtype, sizes, dims with their ranges)",
        default="inferred",
        metavar="SPECS",
    ),
    Flag(
        "--torchexport-models-only",
        "torchexport_models_only",
        "collect only the --torchexport-model tests, no test files (what `python -m pytest_torchexport check` runs)",
        switch=True,
        default="false",
    ),
)
#: Earlier ini key names, still read: earlier name -> current name.
INI_ALIASES: dict[str, str] = {"torchexport_models": "torchexport_model"}


def add_model_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    for row in MODEL_FLAGS:
        _register(group, parser, row)
    for old, new in INI_ALIASES.items():
        parser.addini(old, type="linelist", default=[], help=f"the earlier name of {new}, still read")


def misspelled_flags(args: Sequence[str]) -> str | None:
    """The usage error for a ``--torchexport-*`` argument that names no flag, with the closest one."""
    known = [row.flag for row in (*FLAGS, *MODEL_FLAGS)]
    wrong = []
    for arg in args:
        if arg == "--":
            break
        name = str(arg).split("=", 1)[0]
        if name.startswith("--torchexport") and name not in known:
            wrong.append(f"unknown flag {name}{closest(name, known)}")
    if not wrong:
        return None
    return "; ".join(dict.fromkeys(wrong)) + " (the flags: pytest --help, or docs/reference.md)"


def session_defaults(config: pytest.Config, valid_backends: Sequence[str]) -> dict[str, Any]:
    """CLI > ini > default for the options a marker can override."""
    given: dict[str, Any] = {}
    for row in FLAGS:
        if row.option is None:
            continue
        value, given_as = config.getoption(row.dest), f"{row.flag}="
        if value is None and row.ini:
            value, given_as = config.getini(row.ini) or None, f"ini {row.ini} = "
        if value is None or value is False:
            continue
        try:  # each value checked alone, so the error names where it was given
            given[row.option] = row.read(row.flag, value)
            Options.build(valid_backends=valid_backends, **{row.option: given[row.option]})
        except InvalidArgument as exc:
            raise InvalidArgument(f"{given_as}{value}: {exc}") from None
    given.setdefault("devices", "auto")
    Options.build(valid_backends=valid_backends, **given)  # fail fast on a bad CLI value
    return given


__all__ = [
    "FLAGS",
    "INI_ALIASES",
    "MODEL_FLAGS",
    "add_model_options",
    "add_options",
    "misspelled_flags",
    "session_defaults",
]
