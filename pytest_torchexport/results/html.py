"""The session report as one self-contained HTML page.

``page`` turns the report's rows (JSON dicts) into what ``templates/report.html.j2`` lays out;
every value comes from a row's keys, never from its message text. Everything is inline and
the page fetches nothing. Nothing here imports torch or pytest, so ``merge`` can render
without either. See docs/html-report.md.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from .._compat import package_version
from . import plots
from .report import CAUSE_KIND_DOCS, FAILING, STATUS_DOCS, STATUSES, TIMING_DOCS, Result
from .table import format_err, format_latency

if TYPE_CHECKING:
    import jinja2

    from .report import Finding

#: The ``html`` extra: what the page needs beyond the plugin's own dependencies.
REQUIRED = ("jinja2", "pygal")
INSTALL = "pip install 'pytest-torchexport[html]'"
#: Lines of the user's source shown around a cause's line.
CONTEXT_LINES = 2
#: The backends of a TorchScript user, for the migration panel.
TORCHSCRIPT = ("trace", "script")


def missing() -> list[str]:
    """The ``html`` extra's packages not installed here."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def missing_message(option: str) -> str | None:
    """What to install for an HTML report, naming the option that asked for one; or None."""
    absent = missing()
    if not absent:
        return None
    return (
        f"{option} asks for an HTML report, which needs {' and '.join(absent)} (not installed here): "
        f"install the html extra, {INSTALL}, or write a .json or .md report"
    )


def _templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_torchexport.results", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render(rows: list[dict[str, Any]], environment: dict[str, Any], session: dict[str, Any] | None = None) -> str:
    """The page for ``rows`` (report dicts), as one string of HTML; ``session``: the session's totals."""
    from markupsafe import Markup  # a jinja2 dependency; pygal's SVG goes in unescaped

    env = _templates()
    view = page(rows, environment, session)
    for detail in view["details"]:
        svg = plots.error_plot(detail["row"])
        detail["plot"] = Markup(svg) if svg else None
    view["chart_css"] = Markup(plots.chart_stylesheet())
    return env.get_template("report.html.j2").render(**view)


def extra(row: dict[str, Any]) -> str:
    """One row's verdict and plot as an HTML fragment for another page (pytest-html's extras)."""
    from markupsafe import Markup

    detail = _detail(0, row, Result.from_dict(row))
    svg = plots.error_plot(row, standalone=True)
    detail["plot"] = Markup(svg) if svg else None
    return _templates().get_template("extra.html.j2").render(d=detail)


def page(
    rows: list[dict[str, Any]], environment: dict[str, Any], session: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the template lays out, from the rows alone (``render`` draws the plots)."""
    results = [Result.from_dict(row) for row in rows]
    counts = Counter(r.status for r in results)
    columns = list(dict.fromkeys(_column(r) for r in results))
    tests = list(dict.fromkeys(_test(r) for r in results))
    details = [_detail(i, row, result) for i, (row, result) in enumerate(zip(rows, results))]
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {test: {} for test in tests}
    for detail, r in zip(details, results):
        cells[_test(r)].setdefault(_column(r), []).append(detail)
    return {
        "title": "torchexport parity report",
        "environment": _environment(environment),
        "counts": [
            {"status": s, "count": counts[s], "failing": s in FAILING, "doc": STATUS_DOCS.get(s, "")}
            for s in STATUSES
            if counts[s]
        ],
        "total": len(results),
        "session": session,
        "columns": columns,
        "matrix": [{"test": t, "cells": [cells[t].get(c, []) for c in columns]} for t in tests],
        "details": details,
        "cause_kinds": sorted({r.cause_kind for r in results if r.cause_kind}),
        "cause_docs": CAUSE_KIND_DOCS,
        "migration": migration(rows),
        "timings": _session_timings(results, session),
        "timing_docs": TIMING_DOCS,
        "any_cached": any(r.extra.get("cached") for r in results),
    }


def _test(r: Result) -> str:
    """The test the row belongs to, without our ``[torchexport-...]`` suffix."""
    name = r.test or r.nodeid or r.module or "?"
    return re.sub(r"\[(.*?)-?torchexport-[^\]]*\]$", lambda m: f"[{m.group(1)}]" if m.group(1) else "", name)


def _column(r: Result) -> str:
    return r.backend if r.device == "cpu" else f"{r.backend}-{r.device}"


def _environment(environment: dict[str, Any]) -> list[tuple[str, str]]:
    shown = dict(environment)
    shown.pop("mixed", None)
    if "pytest-torchexport" not in shown:
        shown["pytest-torchexport"] = package_version("pytest-torchexport") or "(not installed: a checkout)"
    return [
        (k, ", ".join(map(str, v)) if isinstance(v, list) else "not installed" if v is None else str(v))
        for k, v in shown.items()
    ]


def _detail(index: int, row: dict[str, Any], r: Result) -> dict[str, Any]:
    """One row's expandable part."""
    example = r.failing_example or {}
    latency = row.get("latency_ms")
    # A passing row has no cause: its findings are notes.
    cause_finding = _cause_finding(r) if r.status != "pass" else None
    return {
        "id": f"row-{index}",
        "row": row,
        "test": _test(r),
        "nodeid": r.nodeid or r.test or "",
        "module": r.module
        + (f".{row['method']}" if row.get("method") else "")
        + (f" ({row['call']} call)" if row.get("call") else ""),
        "backend": _column(r),
        "status": r.status,
        "failing": r.failed,
        "cached": bool(row.get("cached")),
        "baseline": row.get("baseline"),
        "max_abs": format_err(r.max_abs_err),
        "max_rel": format_err(r.max_rel_err),
        "tolerance": f"rtol {format_err(r.rtol)}, atol {format_err(r.atol)}" if r.rtol is not None else "",
        "examples": r.examples,
        "message": r.message,
        "cause": (r.likely_cause or r.cause) if r.status != "pass" else "",
        "cause_kind": r.cause_kind or "",
        "cause_doc": CAUSE_KIND_DOCS.get(r.cause_kind or "", ""),
        "cause_where": cause_finding.where if cause_finding is not None else None,
        "source": source_excerpt(cause_finding.where) if cause_finding is not None and cause_finding.where else None,
        "findings": ranked_findings(r),
        "sizes": [(dim, span[0], span[1]) for dim, span in (row.get("sizes") or {}).items()],
        "sizes_text": ", ".join(
            f"{dim} {lo}" if lo == hi else f"{dim} {lo}–{hi}" for dim, (lo, hi) in (row.get("sizes") or {}).items()
        ),
        "compared": row.get("compared"),
        "latency": latency,
        "latency_text": format_latency(latency) if latency else None,
        "inputs": [(name, _input(spec)) for name, spec in (example.get("inputs") or {}).items()],
        "repro": example.get("repro"),
        "replay": replay_command(r),
        "within": within_text(row),
        "float64": row.get("float64_check"),
        "diverges_at": row.get("diverges_at"),
        "timings": [(k, f"{v:.3g}") for k, v in r.timings.items()],
        "total_s": f"{r.timings['total_s']:.3g}" if isinstance(r.timings.get("total_s"), (int, float)) else None,
        "per_input": len(row.get("per_input") or []),
    }


def replay_command(r: Result) -> str | None:
    """The command that reproduces a failing row: its replay file, else a rerun that saves one."""
    if not r.failed:
        return None
    repro = (r.failing_example or {}).get("repro")
    if repro:
        return f"python -m pytest_torchexport replay {repro}"
    nodeid = r.nodeid or ""
    if nodeid.startswith("torchexport-model::"):
        spec = re.sub(r"\[[^\]]*\]$", "", nodeid.removeprefix("torchexport-model::"))
        return f"python -m pytest_torchexport check '{spec}' --backends={r.backend} -- --torchexport-repro-dir=repro"
    return f"python -m pytest '{nodeid}' --torchexport-repro-dir=repro" if nodeid else None


def within_text(row: dict[str, Any]) -> str | None:
    """A row none of whose inputs failed, in one line instead of a plot."""
    entries = [e for e in row.get("per_input") or [] if e.get("max_abs") is not None]
    if not entries or any(e.get("status", "pass") != "pass" for e in entries):
        return None
    worst = max(entries, key=lambda e: e["max_abs"])
    allowed = f" (allowed {format_err(worst['allowed'])} there)" if worst.get("allowed") else ""
    return (
        f"All {len(entries)} inputs compared were within tolerance: the greatest error {format_err(worst['max_abs'])}"
        f"{allowed}, at {', '.join(f'{k}={v}' for k, v in (worst.get('sizes') or {}).items()) or 'the recorded sizes'}."
    )


def _cause_finding(r: Result) -> Finding | None:
    """The finding the cause rests on: the one of the cause's kind, else the first with a place."""
    for finding in r.findings:
        if finding.kind == r.cause_kind and finding.where:
            return finding
    if r.cause_kind in (
        "error_site",
        "frozen_branch",
        "baked_shape",
        "baked_argument",
        "frozen_value",
        "specialized_dim",
        "standalone_load",
        "control_flow_path",
    ):
        return next((f for f in r.findings if f.where), None)
    return None


#: Findings in reading order: what explains the verdict, what qualifies it, then notes.
_RANK = (
    "frozen_branch",
    "frozen_value",
    "baked_shape",
    "baked_argument",
    "specialized_dim",
    "data_dependent_branch",
    "unsupported_op",
    "unsupported_python",
    "unsupported_output",
    "unregistered_type",
    "scripted_module",
    "side_effects",
    "error_site",
    "diverges_at",
    "standalone_load",
    "static_size",
    "shipped_step",
    "runtime_optimizer",
    "mutates_input",
    "mutates_state",
    "numeric_noise",
    "tracer_warning",
    "training_mode",
    "compiled_parts",
    "vacuous_output",
    "rejected_inputs",
    "onnx_checker",
    "external_data",
    "device_fallback",
    "timeout",
    "budget",
    "size_budget",
)


def ranked_findings(r: Result) -> list[dict[str, Any]]:
    """The row's findings, the cause's own first, then by ``_RANK``."""

    def rank(item: tuple[int, Any]) -> tuple[int, int, int]:
        i, f = item
        return (f.kind != r.cause_kind, _RANK.index(f.kind) if f.kind in _RANK else len(_RANK), i)

    ordered = sorted(enumerate(r.findings), key=rank)
    return [{"rank": n, "kind": f.kind, "where": f.where, "detail": f.detail} for n, (_, f) in enumerate(ordered, 1)]


def source_excerpt(where: str) -> list[tuple[int, str, bool]] | None:
    """Lines around ``path:line`` where the file is readable here: (number, text, is the line)."""
    match = re.match(r"^(.*?):(\d+)", where)
    if not match:
        return None
    path, line = match.group(1), int(match.group(2))
    if not os.path.isfile(path):
        return None
    lines = [
        (n, linecache.getline(path, n).rstrip("\n"))
        for n in range(max(1, line - CONTEXT_LINES), line + CONTEXT_LINES + 1)
    ]
    shown = [(n, text, n == line) for n, text in lines if text or n <= line]
    return shown or None


def _input(spec: dict[str, Any]) -> str:
    if "shape" not in spec:
        return repr(spec.get("value"))
    stats = ", ".join(f"{k} {spec[k]:.4g}" for k in ("min", "max", "mean") if isinstance(spec.get(k), (int, float)))
    return f"{spec.get('dtype')}{spec['shape']}" + (f" ({stats})" if stats else "")


def migration(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The modules checked on ``trace`` or ``script`` beside their ``export`` row's verdict:
    what stands between each module and ``torch.export``."""
    groups: dict[tuple[str, str, str], dict[str, Result]] = {}
    for row in rows:
        r = Result.from_dict(row)
        # The method and the kind of call each migrate on their own.
        module = r.module + (f".{row['method']}" if row.get("method") else "")
        module += f" ({row['call']} call)" if row.get("call") else ""
        groups.setdefault((_test(r), module, r.device), {})[r.backend] = r
    out = []
    for (test, module, device), by_backend in groups.items():
        scripted = {b: by_backend[b].status for b in TORCHSCRIPT if b in by_backend}
        if not scripted:
            continue
        export = by_backend.get("export")
        ready = None if export is None else export.status == "pass"
        out.append(
            {
                "test": test,
                "module": module,
                "device": device,
                "torchscript": scripted,
                "export": export.status if export is not None else None,
                "ready": ready,
                "cause": (export.likely_cause or export.cause) if export is not None and not ready else "",
            }
        )
    return out


def _session_timings(results: list[Result], session: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """Seconds per stage over all rows, largest first, after the session's wall time. The
    checks' summed ``total_s`` is not the session's time: checks run side by side."""
    totals: Counter[str] = Counter()
    for r in results:
        for stage, seconds in r.timings.items():
            totals[stage] += seconds  # type: ignore[assignment]  # float seconds
    whole = totals.pop("total_s", None)
    ranked = [(stage, f"{seconds:.2f}") for stage, seconds in totals.most_common()]
    head = [("session wall time", f"{session['wall_s']:.2f}")] if session and session.get("wall_s") is not None else []
    if whole is not None:
        head.append(("the checks' own times, summed (total_s; several run side by side)", f"{whole:.2f}"))
    return head + ranked
