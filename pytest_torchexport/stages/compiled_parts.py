"""[Compiled Parts] What the test did to the module before calling it: submodules that were
scripted, traced or compiled in place.

A library's ``compile()`` helper often scripts or traces a model's submodules in place
before the test calls the model. The check is of the module as called (recording/recorder.py's [As
Called]), so its verdict is true of that module; but the exporters then meet TorchScript or
a ``torch.compile`` wrapper where the class's Python code would be, and a fresh instance of
the same class may export differently. A failure's cause says so, with each part's path.
"""

from __future__ import annotations

from typing import Any

from .._compat import compiled_in_place
from ..results.report import Finding


def compiled_parts(module: Any) -> list[tuple[str, str]]:
    """(path, what it is) of each outermost submodule that is not Python code at the call."""
    import torch

    parts: list[tuple[str, str]] = []
    for path, sub in module.named_modules():
        if any(path.startswith(p + ".") for p, _ in parts):
            continue  # inside a part already named
        if path and isinstance(sub, torch.jit.ScriptModule):
            traced = isinstance(sub, torch.jit.TracedModule)
            parts.append((path, "traced by torch.jit.trace" if traced else "scripted by torch.jit.script"))
        elif path and type(sub).__name__ == "OptimizedModule":
            parts.append((path, "compiled by torch.compile"))
        elif compiled_in_place(sub):
            parts.append((path or "(the module itself)", "compiled in place by Module.compile()"))
    return parts


def describe(parts: list[tuple[str, str]], name: str) -> str:
    """The cause's words: which parts, and that a fresh instance may export differently."""
    listed = ", ".join(f"{path} ({what})" for path, what in parts[:4]) + (" ..." if len(parts) > 4 else "")
    # The parts may be the class's own design (an __init__ that scripts a cell) or what a helper
    # did to this instance; only the second makes a fresh instance differ, and both read true here.
    return (
        f"{name} held compiled submodules when the test called it: {listed}; the exporter met that code, not "
        f"the Python code of those parts: where the test or a helper compiled them in place, a fresh {name} "
        "may export differently"
    )


def finding(parts: list[tuple[str, str]], name: str) -> Finding:
    return Finding("compiled_parts", describe(parts, name), parts[0][0])


def with_cause(parts: list[tuple[str, str]], name: str, cause: str | None) -> str | None:
    """``cause`` with the compiled parts named first (what the test did to the module)."""
    if not parts:
        return cause
    return describe(parts, name) + (f"; {cause}" if cause else "")
