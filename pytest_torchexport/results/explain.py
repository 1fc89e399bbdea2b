"""Turn what exporters say (warnings, exceptions) into findings at the user's source line.

Exporters report problems in their own words and deep inside their own frames; a person
needs "trace froze the branch at models.py:12 (`if x.sum() > 0:`)". Everything here is
text processing over warnings and exceptions: no exporting, no comparing.
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import re
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from .._compat import torch
from .report import Finding, FindingKind

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # the package, above results/
_LIB_DIRS = tuple(
    p
    for p in {
        sysconfig.get_paths().get("purelib"),
        sysconfig.get_paths().get("platlib"),
        sysconfig.get_paths().get("stdlib"),
    }
    if p
)
_STDLIB_DIRS = tuple(
    os.path.realpath(p) for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} if p
)
#: Installed packages that are never the model's code: torch, the exporters and runtimes, and
#: hypothesis. Any other installed package may hold the model, so its lines are named. The test
#: runner's packages are found from its metadata (``_runner_modules``) instead of listed here.
TOOLCHAIN = frozenset(
    {
        "torch",
        "functorch",
        "torchgen",
        "triton",
        "onnx",
        "onnxscript",
        "onnx_ir",
        "onnxruntime",
        "executorch",
        "openvino",
        "torch_tensorrt",
        "tensorrt",
        "ai_edge_torch",
        "litert_torch",
        "torchao",
        "hypothesis",
    }
)
#: The test runner's distribution; its plugins are found by their ``pytest11`` entry points.
_RUNNER = "pytest"
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _runner_modules() -> frozenset[str]:
    """The top-level modules of the test runner: pytest, each ``pytest11`` plugin but this one,
    and what they require to run, read from the installed metadata."""
    ours = _canonical("pytest-torchexport")
    runner = {_canonical(_RUNNER)}
    for entry in metadata.entry_points(group="pytest11"):
        dist = getattr(entry, "dist", None)
        if dist is not None and _canonical(dist.metadata["Name"] or "") != ours:
            runner.add(_canonical(dist.metadata["Name"] or ""))
    names = set(runner)
    for name in runner:
        try:
            required = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in required:
            match = _REQUIREMENT_NAME.match(line)
            if match and "extra ==" not in line:  # not its optional extras
                names.add(_canonical(match.group()))
    modules: set[str] = set()
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        top_level = dist.read_text("top_level.txt")
        if top_level:
            modules.update(line.strip() for line in top_level.splitlines() if line.strip())
        for file in dist.files or ():
            first = file.parts[0]
            if first != ".." and not first.endswith((".dist-info", ".egg-info", ".pth")) and first != "__pycache__":
                modules.add(first[:-3] if first.endswith(".py") else first)
    return frozenset(modules)


@functools.lru_cache(maxsize=1)
def _scripts_dir() -> str:
    """Where entry-point scripts such as ``bin/pytest`` are installed: never the model's code."""
    return os.path.realpath(sysconfig.get_path("scripts") or os.path.dirname(sys.executable)) + os.sep


def is_user_file(filename: str) -> bool:
    """A file the user wrote: not the stdlib, not an installed package, not this plugin."""
    if not filename or filename.startswith("<") or "__torch__" in filename:
        # "<string>", or TorchScript's serialized code
        return False
    path = os.path.realpath(filename)
    if path.startswith(_PACKAGE_DIR) or path.startswith(_scripts_dir()):
        return False
    if "site-packages" in path or "dist-packages" in path or _installed_top(path) is not None:
        return False
    return not any(path.startswith(os.path.realpath(d)) for d in _LIB_DIRS)


def _installed_top(path: str) -> str | None:
    """The top-level package of ``path`` where it was installed outside site-packages
    (``pip install --target``): an ancestor folder holds ``.dist-info`` records."""
    parts = Path(path).parts
    for i in range(len(parts) - 1, 0, -1):
        if _holds_dist_info(os.path.join(*parts[:i])):
            return parts[i].split(".")[0]
    return None


@functools.lru_cache(maxsize=1024)
def _holds_dist_info(folder: str) -> bool:
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(folder))
    except OSError:
        return False


def is_plugin_file(filename: str) -> bool:
    """A file of this plugin's own package."""
    return bool(filename) and os.path.realpath(filename).startswith(_PACKAGE_DIR)


def is_model_file(filename: str) -> bool:
    """A file that may hold the model's code, where findings point: the user's files and
    installed packages, but not the toolchain, the test runner, the stdlib or this plugin."""
    if not filename or filename.startswith("<") or "__torch__" in filename:
        return False
    return _model_path(filename)


@functools.lru_cache(maxsize=4096)
def _model_path(filename: str) -> bool:
    path = os.path.realpath(filename)
    if path.startswith(_PACKAGE_DIR) or path.startswith(_scripts_dir()):
        return False
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("site-packages", "dist-packages"):
            top = parts[i + 1].split(".")[0]
            return top not in TOOLCHAIN and top not in _runner_modules()
    installed = _installed_top(path)
    if installed is not None:
        return installed not in TOOLCHAIN and installed not in _runner_modules()
    torch = sys.modules.get("torch")
    torch_file = getattr(torch, "__file__", None)
    if torch_file and path.startswith(os.path.dirname(os.path.realpath(torch_file)) + os.sep):
        return False  # torch built from source
    return not any(path.startswith(d + os.sep) for d in _STDLIB_DIRS)


def where(filename: str, lineno: int) -> str:
    return f"{_short(filename)}:{lineno}"


def source_line(filename: str, lineno: int) -> str:
    return linecache.getline(filename, lineno).strip()


def _short(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    if not rel.startswith(".."):
        return rel
    parts = Path(filename).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("site-packages", "dist-packages"):  # an installed package: from its own folder
            return "/".join(parts[i + 1 :])
    return filename


class FindingWarning(UserWarning):
    """A finding a backend raises as a warning while it exports; passed on without parsing."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


# TracerWarning text -> (finding kind, what it means). Matched in order.
_TRACER_KINDS: tuple[tuple[str, FindingKind, str], ...] = (
    (
        "Python boolean",
        "frozen_branch",
        "a tensor was read as a Python bool, so the branch taken on the example is frozen into the trace",
    ),
    ("Iterating over a tensor", "baked_shape", "iterating over a tensor unrolls the loop for the example's size"),
    (
        "Python index",
        "baked_shape",
        "a tensor was read as a Python index, so its value on the example is a constant in the trace",
    ),
    (
        "Python integer",
        "baked_shape",
        "a tensor was read as a Python int, so its value on the example is a constant in the trace",
    ),
    (
        "Python float",
        "baked_shape",
        "a tensor was read as a Python float, so its value on the example is a constant in the trace",
    ),
    (
        "Python number",
        "frozen_value",
        "a tensor was read as a Python number (.item()), so its value on the example is a constant in the trace",
    ),
    ("registered as constants", "baked_shape", "torch.tensor() of a computed value is a constant in the trace"),
)


def tracer_findings(caught: Iterable[warnings.WarningMessage], backend: str) -> list[Finding]:
    """One finding per distinct (kind, line) among an export's TracerWarnings and ``FindingWarning``s."""
    findings: dict[tuple[str, str], Finding] = {}
    for w in caught:
        if isinstance(w.message, FindingWarning):
            findings.setdefault((w.message.finding.kind, w.message.finding.detail), w.message.finding)
            continue
        if not issubclass(w.category, torch.jit.TracerWarning):
            continue
        text = str(w.message)
        kind: FindingKind = "tracer_warning"
        meaning = "TracerWarning: " + text.split(". ")[0]
        for needle, k, m in _TRACER_KINDS:
            if needle in text:
                kind, meaning = k, m
                break
        line = source_line(w.filename, w.lineno)
        if (
            kind == "baked_shape"
            and line
            and not re.search(r"shape|size|len\(|numel|dim\(", line)
            and "Python integer" not in text
        ):
            kind = "frozen_value"
        if kind == "frozen_branch" and line and re.search(r"\.shape\b|\.size\(|\blen\(|\.numel\(|\.dim\(", line):
            # A size tested in Python (``if x.shape[-1] > 64``) reads to a person as a shape test.
            meaning = "a size was tested in Python, so the branch taken at the example's size is frozen into the trace"
        site = model_site(w)
        if site is None:
            continue  # reached from no line of the model's
        if kind == "frozen_branch" and site[:2] != (w.filename, w.lineno) and guards_a_raise(w.filename, w.lineno):
            # torch's own input validation: every input eager accepts takes the same path.
            continue
        if kind != "frozen_branch" and in_validation_message(site[0], site[1]):
            # A value formatted into an assert's or a raise's message changes no output.
            continue
        loc = where(site[0], site[1])
        if site[:2] == (w.filename, w.lineno):
            detail = f"{backend} {_verb(kind)} at {loc}" + (f" (`{line}`)" if line else "") + f": {meaning}"
        else:
            # torch's own code, reached from the model's line.
            called = source_line(site[0], site[1])
            detail = (
                f"{backend} {_verb(kind)} inside torch's {site[2]}"
                + (f" (`{line}`)" if line else "")
                + f", reached from {loc}"
                + (f" (`{called}`)" if called else "")
                + f": {meaning}"
            )
        findings.setdefault((kind, loc), Finding(kind, detail, loc))
        if kind != "tracer_warning":
            findings.setdefault(
                ("tracer_warning", loc), Finding("tracer_warning", f"TracerWarning: {text.splitlines()[0]}", loc)
            )
    return list(findings.values())


def guards_a_raise(filename: str, lineno: int) -> bool:
    """The ``if`` at ``filename:lineno`` only validates: its body only raises or warns."""
    node = _ifs(filename).get(lineno)
    return node is not None and _only_refuses(node.body)


def _only_refuses(body: list[ast.stmt]) -> bool:
    for stmt in body:
        if isinstance(stmt, ast.Raise):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            fn = stmt.value.func
            if (fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")) == "warn":
                continue
        if isinstance(stmt, ast.If) and _only_refuses(stmt.body) and (not stmt.orelse or _only_refuses(stmt.orelse)):
            continue
        return False
    return bool(body)


def in_validation_message(filename: str, lineno: int) -> bool:
    """``filename:lineno`` lies in an ``assert``'s message, a ``raise``, or the message of a
    ``torch._assert``-style call."""
    return any(start <= lineno <= end for start, end in _validation_spans(filename))


#: Calls whose second argument (or ``message=``/``msg=``) is only an error's text.
_ASSERT_CALLS = frozenset({"_assert", "_assert_async", "Assert", "check", "_check"})


@functools.lru_cache(maxsize=64)
def _validation_spans(filename: str) -> tuple[tuple[int, int], ...]:
    try:
        tree = ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return ()
    spans = []
    for node in ast.walk(tree):
        text: ast.expr | ast.stmt | None = None
        if isinstance(node, ast.Assert):
            text = node.msg
        elif isinstance(node, ast.Raise):
            text = node
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in _ASSERT_CALLS:
                text = (
                    node.args[1]
                    if len(node.args) > 1
                    else next((k.value for k in node.keywords if k.arg in ("message", "msg")), None)
                )
        if text is not None:
            spans.append((text.lineno, getattr(text, "end_lineno", None) or text.lineno))
    return tuple(spans)


@functools.lru_cache(maxsize=64)
def _ifs(filename: str) -> dict[int, ast.If]:
    """The ``if`` statements of a source file by line."""
    try:
        tree = ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return {}
    return {node.lineno: node for node in ast.walk(tree) if isinstance(node, ast.If)}


def model_site(w: warnings.WarningMessage) -> tuple[str, int, str] | None:
    """Where a warning arose in the model's code: its own line, else the innermost model frame
    of its recorded stack, with torch's function that raised it; or None."""
    if is_model_file(w.filename):
        return w.filename, w.lineno, ""
    stack = getattr(w, "stack", ())
    for filename, lineno, _ in stack:
        if is_model_file(filename):
            return filename, lineno, stack[0][2] if stack else ""
    return None


def _verb(kind: str) -> str:
    return {
        "frozen_branch": "froze the branch",
        "baked_shape": "baked in a size",
        "frozen_value": "froze a value",
    }.get(kind, "warned")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def user_frames(exc: BaseException) -> list[tuple[str, int]]:
    """User source lines named by an exception: its traceback and frames quoted in its text."""
    frames: list[tuple[str, int]] = []
    seen = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        for fs in traceback.extract_tb(e.__traceback__):
            key = (fs.filename, fs.lineno or 0)
            if is_model_file(fs.filename) and key not in seen:
                seen.add(key)
                frames.append(key)
        for key in quoted_frames(str(e)):
            if is_model_file(key[0]) and key not in seen:
                seen.add(key)
                frames.append(key)
    return frames


def quoted_frames(text: str) -> list[tuple[str, int]]:
    """The ``File "...", line N`` frames a text quotes (an error's, a graph node's stack trace), in order."""
    return [(m.group(1), int(m.group(2))) for m in _FRAME.finditer(strip_ansi(text))]


def innermost_user_frame(exc: BaseException, prefer_not: Iterable[str] = ()) -> tuple[str, int] | None:
    """The user frame closest to where the error arose (the model, not the test calling it)."""
    frames = [f for f in user_frames(exc) if f[0] not in set(prefer_not)] or user_frames(exc)
    return frames[-1] if frames else None


def forward_site(module: object) -> tuple[str, int] | None:
    """Where the module's ``forward`` is defined (its ``def`` line), in the model's code."""
    code = getattr(getattr(type(module), "forward", None), "__code__", None)
    if code is None or not is_model_file(code.co_filename):
        return None
    return code.co_filename, code.co_firstlineno


#: Text by which torch.onnx's ``TorchExportError`` shows it only wraps the error it was raised from.
_WRAPPER_TEXT = "## Exception summary"


#: trace's refusal of an output quotes every value of it: keep the class and the reason only.
_TRACER_TYPE = re.compile(r"^(Tracer cannot infer type of [\w.]+)\(.*?\n:(\S[^\n]*)$", re.DOTALL | re.MULTILINE)


def underlying(exc: BaseException) -> BaseException:
    """The error a wrapper such as torch.onnx's ``TorchExportError`` carries; else ``exc``."""
    seen: list[BaseException] = []
    while exc.__cause__ is not None and exc not in seen and _WRAPPER_TEXT in str(exc):
        seen.append(exc)
        exc = exc.__cause__
    return exc


def trim_error(exc: BaseException, limit: int = 12) -> str:
    """The exporter's own reason, trimmed to what a person reads."""
    exc = underlying(exc)
    text = _TRACER_TYPE.sub(r"\1(...): \2", strip_ansi(str(exc)).strip())
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
    # torch.export.save's SerializeError quotes the traceback under it, which is noise.
    text = text.split(" Original exception Traceback", 1)[0].split("\nOriginal exception Traceback", 1)[0].strip()
    keep: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped and keep:
            if len(keep) >= 3:
                break
            continue
        if stripped.startswith(
            ("For more information", "For extended logs", "If you suspect", "For C++ stack", "For more debugging")
        ):
            continue
        keep.append(line.rstrip())
        if len(keep) >= limit:
            keep.append("...")
            break
    head = f"{type(exc).__name__}: " if not text.startswith(type(exc).__name__) else ""
    if len(keep) == 1 and len(keep[0]) > 400:
        keep[0] = keep[0][:400] + "..."
    pointed = _pointed_at(text)
    if pointed and not any("<--- HERE" in line for line in keep):
        # Never cut the line TorchScript points at.
        keep = [line for line in keep if line != "..."] + ["...", *pointed]
    return head + "\n".join(keep) if keep else f"{type(exc).__name__} (no message)"


def _pointed_at(text: str) -> list[str]:
    """TorchScript's first ``File "...", line N`` block down to its ``<--- HERE`` marker."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "<--- HERE" in line:
            start = next((j for j in range(i, max(i - 12, -1), -1) if _FRAME.search(lines[j])), max(i - 3, 0))
            return [entry.rstrip() for entry in lines[start : i + 1]]
    return []


# Exporter error text -> (finding kind, cause in a person's words).
_ERROR_KINDS: tuple[tuple[tuple[str, ...], FindingKind, str], ...] = (
    (
        ("Unsupported input type", "in output, which is not a known type"),
        "unregistered_type",
        "{backend} cannot take or return an object of a class pytree does not know (a cache class the installed "
        "library registers none for)",
    ),
    (
        ("can be output from traced functions", "Tracer cannot infer type of"),
        "unsupported_output",
        "{backend} can output only tensors (and lists, tuples or dicts of them): the model returns "
        "None or another value that is not a tensor",
    ),
    (
        ("Exporting a ScriptModule is not supported", "ScriptModule is not supported"),
        "scripted_module",
        "{backend} cannot export a ScriptModule: give it the Python module (nn.Module) instead",
    ),
    (
        ("GuardOnDataDependentSymNode", "data-dependent", "Could not guard on data-dependent"),
        "data_dependent_branch",
        "the model branches on a tensor's value, which {backend} cannot capture",
    ),
    (
        ("Constraints violated", "ConstraintViolation", "specialized", "inferred to be a constant", "not in range"),
        "specialized_dim",
        "a dim declared dynamic was specialized to a constant by the model's code",
    ),
    (
        (
            "Unsupported: ONNX export of",
            "is not supported by the ONNX exporter",
            "No decomposition",
            "not supported in ONNX",
            "Unsupported FX nodes",
            "not in Core ATen opset",
            "runtime has no kernel for",
            # the legacy exporter (torch 2.13-2.15)
            "UnsupportedOperatorError",
            "to ONNX opset version",
            # the dynamo exporter's failure to translate one aten op of the graph
            "Error when translating node",
        ),
        "unsupported_op",
        "{backend} has no lowering for an operator the model uses (with these shapes)",
    ),
    (
        (
            "Python builtin",
            "Unsupported",
            "Expected a value of type",
            "Module 'TorchScript'",
            "cannot be used as a value",
            "is not supported",
            "Unknown type annotation",
            "undefined value",
        ),
        "unsupported_python",
        "{backend} cannot compile this Python construct",
    ),
)


#: Errors raised after the model's code ran, so their traceback holds no line of it.
_NO_FRAME_NEEDLES = ("can be output from traced functions",)


def error_finding(
    exc: BaseException, backend: str, stage: str, fallback: tuple[str, int] | None = None
) -> Finding | None:
    """The exporter's error as a finding at the model's line; ``fallback`` (the model's
    ``forward``) where the error names none, as trace's refusal of an output does."""
    text = strip_ansi(str(exc))
    frame = innermost_user_frame(exc)
    if frame is None and fallback is not None and any(n in text for n in _NO_FRAME_NEEDLES):
        frame = fallback
    loc = where(*frame) if frame else None
    line = source_line(*frame) if frame else ""
    # These kinds describe the model's code; a failed save is about the artifact.
    kinds = () if stage == "save" else _ERROR_KINDS
    for needles, kind, cause in kinds:
        if any(n in text or n in type(exc).__name__ for n in needles):
            detail = cause.format(backend=backend) + (f" at {loc} (`{line}`)" if loc else "")
            return Finding(kind, detail, loc)
    if loc:
        return Finding("error_site", f"{backend} failed to {stage} at {loc}" + (f" (`{line}`)" if line else ""), loc)
    return None
