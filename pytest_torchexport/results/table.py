"""The summary table: one fixed-width row per test and backend (the terminal summary,
``str(report)``), and the cells every rendering of a row writes alike: this table, the
Markdown report (``markdown.py``), the HTML page (``html.py``) and the summary's lines.

Pure text from ``Result`` fields: nothing here prints; the plugin decides where the lines go.
Text at the edge ([Data Until Written]): each cell reads a ``Result``'s fields and returns a
string that nothing reads back.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import Result


def summary_lines(results: list[Result], width: int = 100) -> list[str]:
    """A fixed-width table: one row per test and backend, readable at ``width`` columns."""
    if not results:
        return []
    rows = []
    for r, name in zip(results, _short_tests(results)):
        backend = r.backend if r.device == "cpu" else f"{r.backend}/{r.device}"
        status = f"{r.status} (cached)" if r.extra.get("cached") else r.status  # [Verdict Cache] reused
        rows.append((name, r.module or "-", backend, status, format_err(r.max_abs_err), examples_cell(r), r.cause))
    # The latency column only when some row was timed, and only where it does not push a
    # cause out of its column: the cause is what a reader acts on (latency is in the report).
    latencies = [format_latency(r.extra.get("latency_ms")) for r in results]
    if any(r.extra.get("latency_ms") for r in results):
        timed = [(*row[:-1], cell, row[-1]) for row, cell in zip(rows, latencies)]
        header = ("test", "module", "backend", "status", "max err", "ex", "ms e/a", "cause")
        if not any(row[-1] for row in rows) or not _cause_below(timed, header, width):
            return table_lines(timed, width, header)
    return table_lines(rows, width)


def table_lines(rows: Sequence[tuple[str, ...]], width: int, header: tuple[str, ...] | None = None) -> list[str]:
    """The summary's layout for rows of (test, module, backend, status, max err, examples, [ms e/a,] cause)."""
    header = header or ("test", "module", "backend", "status", "max err", "ex", "cause")
    fixed = _widths(rows, header)
    indent = sum(fixed) + 2 * len(fixed)
    # The cause is what a reader acts on, so it wraps instead of being cut to a stub: in its
    # column when the column is wide enough, else on indented lines under the row.
    below = _cause_below(rows, header, width)
    lines = []
    for row in (header, *rows):
        cells = "  ".join(_clip(cell, w).ljust(w) for cell, w in zip(row[:-1], fixed))
        if row is header or not below:
            cause = _wrap(row[-1], max(width - indent, _MIN_CAUSE))
            lines.append(f"{cells}  {cause[0]}".rstrip() if cause else cells.rstrip())
            lines.extend(" " * indent + more for more in cause[1:])
        else:
            lines.append(cells.rstrip())
            lines.extend("    " + more for more in _wrap(row[-1], width - 4))
    return lines


def _widths(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> list[int]:
    fixed = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header[:-1])]
    fixed[0] = min(fixed[0], max(_NAME, *(len(row[0]) for row in rows)))  # [Alike At 80] never cut again
    fixed[1] = min(fixed[1], 20)  # the module's class: enough to tell the model from a helper
    return fixed


def _cause_below(rows: Sequence[tuple[str, ...]], header: tuple[str, ...], width: int) -> bool:
    fixed = _widths(rows, header)
    column = width - (sum(fixed) + 2 * len(fixed))
    # A word longer than the column (a long path:line) would be clipped there: under the row it fits.
    return column < _MIN_CAUSE or any(len(word) > column for row in rows for word in row[-1].split()[:3])


_MIN_CAUSE = 30  # narrower than this, a cause column shows a stub: put the cause under the row
_CAUSE_LINES = 3


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of ``width``, at most ``_CAUSE_LINES`` of them (the last one clipped)."""
    lines = textwrap.wrap(text, width, break_on_hyphens=False)
    if len(lines) > _CAUSE_LINES:
        lines = [*lines[: _CAUSE_LINES - 1], _clip(" ".join(lines[_CAUSE_LINES - 1 :]), width)]
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _test_name(r: Result) -> str:
    name = r.nodeid or r.test or r.module or "?"
    name = name.split("::", 1)[-1]
    if "[" in name:
        base, _, params = name.partition("[")
        params = re.sub(r"-?torchexport-[^\]]*$", "", params.rstrip("]"))
        name = f"{base}[{params}]" if params else base
    call = r.extra.get("call")  # one row per kind of call the test made (recording/kinds.py)
    return f"{name} ({call})" if call else name


def _clip_middle(name: str) -> str:
    return name if len(name) <= _NAME else name[:15] + "…" + name[-16:]


_NAME = 32  # the test column's width


def _short_tests(results: list[Result]) -> list[str]:
    """[Alike At 80] Each row's short test name, never one two different tests share:
    ``test_model_forward[1-test_resnet]`` and ``test_model_forward_torchscript[1-test_resnet]``
    both clip to ``test_model_forw…t[1-test_resnet]``, and a reader could not tell the failing
    item from the passing one. Names that clip alike are cut again from a few characters
    before where they first differ, so the difference shows."""
    full = [_test_name(r) for r in results]
    short = [_clip_middle(n) for n in full]
    groups: dict[str, set[str]] = {}
    for s, f in zip(short, full):
        groups.setdefault(s, set()).add(f)
    for clipped, names in groups.items():
        if len(names) < 2:
            continue
        ordered = sorted(names)
        # the longest prefix any two of them share: the cut starts a little before its end
        common = max(len(os.path.commonprefix([a, b])) for a in ordered for b in ordered if a != b)
        start = max(0, common - 6)
        fixed = {n: _clip_middle(("…" if start else "") + n[start:]) for n in ordered}
        if len(set(fixed.values())) < len(fixed):
            fixed = {n: n for n in ordered}  # past any cut that keeps them apart: whole
        short = [fixed.get(f, s) if s == clipped else s for s, f in zip(short, full)]
    return short


#: A cause shared by this many failing checks of one backend is also said once, with its count.
SHARED_CAUSE = 3

#: An object's address in a cause (``<function BertConfig.__init__ at 0x7f4c...>``): one process's
#: detail, which would split a cause the rows of several workers share.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class SharedCause:
    """One cause that ``SHARED_CAUSE`` or more failing checks of one backend share, and those rows."""

    backend: str
    status: str
    cause: str
    rows: tuple[Result, ...]

    def tests(self, shown: int = 3) -> str:
        """The tests it fails, each name once (a test with several kinds of call has a row per kind)."""
        names = list(dict.fromkeys((r.test or r.nodeid or "?").rsplit("::", 1)[-1] for r in self.rows))
        more = len(names) - shown
        return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def shared_causes(results: list[Result]) -> list[SharedCause]:
    """The causes many failing checks share, most rows first (29 ``script`` rows of transformers
    models failing at the config's ``**kwargs``): a reader sees one thing to fix, not 29."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        if r.failed and r.cause:
            groups.setdefault((r.backend, r.status, _ADDRESS.sub("", r.cause)), []).append(r)
    return [
        SharedCause(backend, status, cause, tuple(rows))
        for (backend, status, cause), rows in sorted(groups.items(), key=lambda g: -len(g[1]))
        if len(rows) >= SHARED_CAUSE
    ]


def shared_cause_lines(results: list[Result]) -> list[str]:
    """One line per shared cause (``shared_causes``), with its count and the tests."""
    return [
        f"torchexport: {len(g.rows)} {g.backend} checks are {g.status} for one cause: {g.cause} ({g.tests()})"
        for g in shared_causes(results)
    ]


# --- the cells every rendering shares ------------------------------------------------------------


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


__all__ = [
    "SharedCause",
    "examples_cell",
    "format_err",
    "format_latency",
    "shared_cause_lines",
    "shared_causes",
    "summary_lines",
    "table_lines",
]
