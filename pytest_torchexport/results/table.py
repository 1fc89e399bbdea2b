"""The summary table (one fixed-width row per test and backend) and the cells that every
rendering of a row (terminal, Markdown, HTML) writes alike.

Pure text: nothing here prints. [Data Until Written] Each cell reads a ``Result``'s fields
and returns a string that nothing reads back. See docs/report.md.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Result
    from .row_extra import LatencyMs


def summary_lines(results: list[Result], width: int = 100) -> list[str]:
    """A fixed-width table: one row per test and backend, readable at ``width`` columns."""
    if not results:
        return []
    rows = []
    previous: tuple[str | None, str, str] | None = None
    for r, name in zip(results, _short_tests(results)):
        backend = r.backend if r.device == "cpu" else f"{r.backend}/{r.device}"
        status = f"{r.status} (cached)" if r.extra.get("cached") else r.status  # [Verdict Cache] reused
        cause, this = r.cause, (r.test or name, r.status, r.cause)
        # A sentence every backend of a test shares (a model that could not be built) is said once.
        if this == previous and len(cause) > _SAID_ONCE:
            cause = "as above"
        previous = this
        rows.append((name, r.module or "-", backend, status, format_err(r.max_abs_err), examples_cell(r), cause))
    # A latency column only where it does not push the cause, which a reader acts on, out of its column.
    latencies = [format_latency(r.extra.get("latency_ms")) for r in results]
    if any(r.extra.get("latency_ms") for r in results):
        timed = [(*row[:-1], cell, row[-1]) for row, cell in zip(rows, latencies)]
        header = ("test", "module", "backend", "status", "max err", "ex", "ms e/a", "cause")
        if not any(row[-1] for row in rows) or not _cause_below(timed, header, width):
            return table_lines(timed, width, header)
    return table_lines(rows, width)


def table_lines(rows: Sequence[tuple[str, ...]], width: int, header: tuple[str, ...] | None = None) -> list[str]:
    """The summary's layout for rows whose last cell is the cause."""
    header = header or ("test", "module", "backend", "status", "max err", "ex", "cause")
    fixed = _widths(rows, header)
    indent = sum(fixed) + 2 * len(fixed)
    # The cause wraps rather than being cut: in its column if wide enough, else under the row.
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
    fixed[0] = min(fixed[0], max(_NAME, *(len(row[0]) for row in rows)))  # names already cut by _short_tests
    fixed[1] = min(fixed[1], 20)  # enough to tell the model from a helper
    return fixed


def _cause_below(rows: Sequence[tuple[str, ...]], header: tuple[str, ...], width: int) -> bool:
    fixed = _widths(rows, header)
    column = width - (sum(fixed) + 2 * len(fixed))
    # A word longer than the column (a long path:line) would be clipped there.
    return column < _MIN_CAUSE or any(len(word) > column for row in rows for word in row[-1].split()[:3])


_MIN_CAUSE = 30  # a narrower cause column shows a stub: put the cause under the row
_CAUSE_LINES = 3
#: A cause longer than this that a test's next row repeats is written "as above" there: a finding with its
#: line (`frozen_branch models.py:19`) stays on each row, a sentence is said once.
_SAID_ONCE = 48


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in at most ``_CAUSE_LINES`` lines of ``width``."""
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
    call = r.extra.get("call")  # one row per kind of call the test made
    return f"{name} ({call})" if call else name


def _clip_middle(name: str) -> str:
    return name if len(name) <= _NAME else name[:15] + "…" + name[-16:]


_NAME = 32  # the test column's width


def _short_tests(results: list[Result]) -> list[str]:
    """Each row's short test name, never one that two different tests share: names that clip
    alike are cut again from just before where they first differ."""
    full = [_test_name(r) for r in results]
    short = [_clip_middle(n) for n in full]
    groups: dict[str, set[str]] = {}
    for s, f in zip(short, full):
        groups.setdefault(s, set()).add(f)
    for clipped, names in groups.items():
        if len(names) < 2:
            continue
        ordered = sorted(names)
        # the cut starts a little before the end of the longest shared prefix
        common = max(len(os.path.commonprefix([a, b])) for a in ordered for b in ordered if a != b)
        start = max(0, common - 6)
        fixed = {n: _clip_middle(("…" if start else "") + n[start:]) for n in ordered}
        if len(set(fixed.values())) < len(fixed):
            fixed = {n: n for n in ordered}  # no cut keeps them apart: whole
        short = [fixed.get(f, s) if s == clipped else s for s, f in zip(short, full)]
    return short


#: A cause shared by this many failing checks of one backend is also said once, with its count.
SHARED_CAUSE = 3

#: An object's address in a cause: it differs per process and would split a shared cause.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class SharedCause:
    """A cause that ``SHARED_CAUSE`` or more failing checks of one backend share, and those rows."""

    backend: str
    status: str
    cause: str
    rows: tuple[Result, ...]

    def tests(self, shown: int = 3) -> str:
        """The tests it fails, each name once."""
        names = list(dict.fromkeys((r.test or r.nodeid or "?").rsplit("::", 1)[-1] for r in self.rows))
        more = len(names) - shown
        return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def shared_causes(results: list[Result]) -> list[SharedCause]:
    """The causes many failing checks share, most rows first: one thing to fix, not many."""
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
    """One line per shared cause, with its count and the tests."""
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
    """Inputs tried, and the share of output elements compared where not all: ``11 (60% el)``."""
    compared = r.extra.get("compared")
    if not compared or r.failed or compared["elements"] >= compared["of"] > 0:
        return str(r.examples)
    if not compared["elements"]:
        return f"{r.examples} (0 el)"
    return f"{r.examples} ({100 * compared['elements'] // compared['of']}% el)"


def format_latency(latency: LatencyMs | None) -> str:
    """``eager/artifact`` milliseconds: ``1.9/0.8``."""
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
