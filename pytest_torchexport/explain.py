"""Turn what exporters say (warnings, exceptions) into findings at the user's source line.

Exporters report problems in their own words and deep inside their own frames; a person
needs "trace froze the branch at models.py:12 (`if x.sum() > 0:`)". Everything here is
text processing over warnings and exceptions: no exporting, no comparing.
"""

from __future__ import annotations

import linecache
import os
import re
import sysconfig
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path

from .report import Finding

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_LIB_DIRS = tuple(
    p for p in {sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), sysconfig.get_paths().get("stdlib")} if p
)


def is_user_file(filename: str) -> bool:
    """A file the user wrote: not the stdlib, not site-packages, not torch, not this plugin."""
    if not filename or filename.startswith("<") or "__torch__" in filename:
        # "<string>", and TorchScript's serialized code (code/__torch__/models.py)
        return False
    path = os.path.realpath(filename)
    if path.startswith(_PACKAGE_DIR):
        return False
    if "site-packages" in path or "dist-packages" in path:
        return False
    return not any(path.startswith(os.path.realpath(d)) for d in _LIB_DIRS)


def where(filename: str, lineno: int) -> str:
    return f"{_short(filename)}:{lineno}"


def source_line(filename: str, lineno: int) -> str:
    return linecache.getline(filename, lineno).strip()


def _short(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


class FindingWarning(UserWarning):
    """A finding a backend raises while it exports (``onnx_checker``): the engine records an
    export's warnings, and ``tracer_findings`` hands this one on as it is, no text parsed."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


# TracerWarning text -> (finding kind, what it means). Matched in order.
_TRACER_KINDS = (
    ("Python boolean", "frozen_branch", "a tensor was read as a Python bool, so the branch taken on the example is frozen into the trace"),
    ("Iterating over a tensor", "baked_shape", "iterating over a tensor unrolls the loop for the example's size"),
    ("Python index", "baked_shape", "a tensor was read as a Python index, so its value on the example is a constant in the trace"),
    ("Python integer", "baked_shape", "a tensor was read as a Python int, so its value on the example is a constant in the trace"),
    ("Python float", "baked_shape", "a tensor was read as a Python float, so its value on the example is a constant in the trace"),
    ("Python number", "frozen_value", "a tensor was read as a Python number (.item()), so its value on the example is a constant in the trace"),
    ("registered as constants", "baked_shape", "torch.tensor() of a computed value is a constant in the trace"),
)


def tracer_findings(caught: Iterable[warnings.WarningMessage], backend: str) -> list[Finding]:
    """One finding per distinct (kind, line) among the TracerWarnings an export raised, and
    each finding the backend raised as a ``FindingWarning``."""
    import torch

    findings: dict[tuple[str, str], Finding] = {}
    for w in caught:
        if isinstance(w.message, FindingWarning):
            findings.setdefault((w.message.finding.kind, w.message.finding.detail), w.message.finding)
            continue
        if not issubclass(w.category, torch.jit.TracerWarning):
            continue
        text = str(w.message)
        kind, meaning = "tracer_warning", "TracerWarning: " + text.split(". ")[0]
        for needle, k, m in _TRACER_KINDS:
            if needle in text:
                kind, meaning = k, m
                break
        line = source_line(w.filename, w.lineno)
        if kind == "baked_shape" and line and not re.search(r"shape|size|len\(|numel|dim\(", line) and "Python integer" not in text:
            kind = "frozen_value"
        loc = where(w.filename, w.lineno) if is_user_file(w.filename) else None
        detail = f"{backend} {_verb(kind)} at {loc or 'an unknown line'}" + (f" (`{line}`)" if line else "") + f": {meaning}"
        findings.setdefault((kind, loc or text), Finding(kind, detail, loc))
        if kind != "tracer_warning":
            findings.setdefault(("tracer_warning", loc or text), Finding("tracer_warning", f"TracerWarning: {text.splitlines()[0]}", loc))
    return list(findings.values())


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
            if is_user_file(fs.filename) and key not in seen:
                seen.add(key)
                frames.append(key)
        for m in _FRAME.finditer(strip_ansi(str(e))):
            key = (m.group(1), int(m.group(2)))
            if is_user_file(key[0]) and key not in seen:
                seen.add(key)
                frames.append(key)
    return frames


def innermost_user_frame(exc: BaseException, prefer_not: Iterable[str] = ()) -> tuple[str, int] | None:
    """The user frame closest to where the error arose (the model, not the test calling it)."""
    frames = [f for f in user_frames(exc) if f[0] not in set(prefer_not)] or user_frames(exc)
    return frames[-1] if frames else None


def trim_error(exc: BaseException, limit: int = 12) -> str:
    """The exporter's own reason, trimmed to what a person reads."""
    text = strip_ansi(str(exc)).strip()
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
    keep: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped and keep:
            if len(keep) >= 3:
                break
            continue
        if stripped.startswith(("For more information", "For extended logs", "If you suspect", "For C++ stack", "For more debugging")):
            continue
        keep.append(line.rstrip())
        if len(keep) >= limit:
            keep.append("...")
            break
    head = f"{type(exc).__name__}: " if not text.startswith(type(exc).__name__) else ""
    if len(keep) == 1 and len(keep[0]) > 400:
        keep[0] = keep[0][:400] + "..."
    return head + "\n".join(keep) if keep else f"{type(exc).__name__} (no message)"


# Exporter error text -> (finding kind, cause in a person's words).
_ERROR_KINDS = (
    (("Exporting a ScriptModule is not supported", "ScriptModule is not supported"),
     "scripted_module", "{backend} cannot export a ScriptModule: give it the Python module (nn.Module) instead"),
    (("GuardOnDataDependentSymNode", "data-dependent", "Could not guard on data-dependent"),
     "data_dependent_branch", "the model branches on a tensor's value, which {backend} cannot capture"),
    (("Constraints violated", "ConstraintViolation", "specialized", "inferred to be a constant", "not in range"),
     "specialized_dim", "a dim declared dynamic was specialized to a constant by the model's code"),
    (("Unsupported: ONNX export of", "is not supported by the ONNX exporter", "No decomposition", "not supported in ONNX",
      "Unsupported FX nodes", "not in Core ATen opset", "runtime has no kernel for"),
     "unsupported_op", "{backend} has no lowering for an operator the model uses (with these shapes)"),
    (("Python builtin", "Unsupported", "Expected a value of type", "Module 'TorchScript'", "cannot be used as a value",
      "is not supported", "Unknown type annotation", "undefined value"),
     "unsupported_python", "{backend} cannot compile this Python construct"),
)


def error_finding(exc: BaseException, backend: str, stage: str) -> Finding | None:
    text = strip_ansi(str(exc))
    frame = innermost_user_frame(exc)
    loc = where(*frame) if frame else None
    line = source_line(*frame) if frame else ""
    for needles, kind, cause in _ERROR_KINDS:
        if any(n in text or n in type(exc).__name__ for n in needles):
            detail = cause.format(backend=backend) + (f" at {loc} (`{line}`)" if loc else "")
            return Finding(kind, detail, loc)
    if loc:
        return Finding("error_site", f"{backend} failed to {stage} at {loc}" + (f" (`{line}`)" if line else ""), loc)
    return None
