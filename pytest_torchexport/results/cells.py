"""The cells every rendering of a row writes alike: the terminal table (``table.py``), the
Markdown report (``markdown.py``), the HTML page (``html.py``) and the summary's lines.

Text at the edge ([Data Until Written]): each reads a ``Result``'s fields and returns a string
that nothing reads back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import Result


def format_err(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.2g}"


def examples_cell(r: Result) -> str:
    """Inputs tried, and the short form of ``compared`` where a row rests on less than all of
    its outputs: ``11 (0 el)`` compared no element, ``11 (60% el)`` part of them."""
    compared = r.extra.get("compared")
    if not compared or r.failed or compared["elements"] >= compared["of"] > 0:
        return str(r.examples)
    if not compared["elements"]:
        return f"{r.examples} (0 el)"
    return f"{r.examples} ({100 * compared['elements'] // compared['of']}% el)"


def format_latency(latency: dict[str, Any] | None) -> str:
    """``eager/artifact`` milliseconds, two significant digits: ``1.9/0.8``."""
    if not latency:
        return "-"
    return f"{_ms(latency['eager'])}/{_ms(latency['artifact'])}"


def _ms(value: float) -> str:
    return f"{value:.2g}" if value < 100 else f"{value:.0f}"


__all__ = ["examples_cell", "format_err", "format_latency"]
