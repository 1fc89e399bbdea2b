"""[Localisation] The first diverging module in words: the message's "Diverges at" lines with the
artifact's code there, its finding, and whether the module introduces the error or carries it."""

from __future__ import annotations

from typing import Any

from ..results.report import Finding, Result
from .failure import Failure


def diverges_at(result: Result, failure: Failure, name: str) -> list[str]:
    """Where the artifact first computes differently, with its own code there (localize.py)."""
    located = failure.diverges_at
    if located is None:
        if failure.no_localization:
            result.extra["diverges_at_unavailable"] = failure.no_localization
            return [f"Diverges at: unknown (localisation {failure.no_localization})"]
        return []
    from .localize import MESSAGE_LINES

    result.extra["diverges_at"] = located.as_dict()
    where = located.module or "(top level)"
    given = (
        "given eager's own input to it"
        if located.method == "isolated"
        else "in the artifact's own run, where every module before it agrees"
    )
    role = _role(located)
    if located.module:
        detail = (
            f"{where} ({located.cls}) is the first module whose {name} output differs from eager's {given} "
            f"(max abs err {located.max_abs_err:.3g}); its submodules agree, so its own code diverges{role}"
        )
    else:
        detail = (
            f"no submodule of {located.cls} differs on its own input: the top-level module's own code diverges "
            f"(max abs err {located.max_abs_err:.3g}){role}"
        )
    result.findings.append(Finding("diverges_at", detail, where))
    lines = [
        f"Diverges at: {where} ({located.cls}), max abs err {located.max_abs_err:.3g} {given}{role}"
        if located.module
        else f"Diverges at: the top-level module's own code ({located.cls}): no submodule differs on its own input{role}"
    ]
    excerpt = located.excerpt.splitlines()
    if excerpt:
        lines.append(f"  the {name} artifact's code there:")
        lines += [f"    {line}" for line in excerpt[:MESSAGE_LINES]]
        if len(excerpt) > MESSAGE_LINES:
            lines.append(f"    ... ({len(excerpt) - MESSAGE_LINES} more lines in the report's diverges_at)")
    return lines


def _role(located: Any) -> str:
    """[Introduced Or Carried] The word on whether the module introduces the error or carries it."""
    if located.introduced is None:
        return ""
    if located.introduced:
        if located.method == "isolated":
            return "; introduced here"
        return "; introduced here: the artifact's input to it agrees with eager's"
    return (
        f"; carried from upstream, not introduced here: the artifact's input to it already differs from eager's "
        f"(max abs err {located.input_err:.3g}), so the error enters before it{entry(located)}"
    )


def entry(located: Any) -> str:
    """Where a carried error enters: ``, in the top-level module's own code before blocks.3``."""
    if located.enters is None:
        return ""
    owner, before = located.enters
    whose = f"{owner}'s" if owner else "the top-level module's"
    return f", in {whose} own code before {before}"
