"""The session report as Markdown, fit for a CI step summary (``--torchexport-report out.md``,
``python -m pytest_torchexport merge``).
"""

from __future__ import annotations

from typing import Any

from .report import FAILING, STATUSES, Result, collect_environment
from .table import examples_cell, format_err, format_latency, shared_causes


def markdown(
    results: list[Result], environment: dict[str, Any] | None = None, session: dict[str, Any] | None = None
) -> str:
    """The session report as Markdown, fit for a CI step summary; ``session``: the session's totals."""
    env = environment or collect_environment()
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [
        "# torchexport parity report",
        "",
        f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"Python {env.get('python')}, devices {', '.join(env.get('devices', []))}",
        "",
        " · ".join(f"**{n}** {s}" for s, n in sorted(counts.items(), key=lambda kv: STATUSES.index(kv[0]))),
        "",
        "| test | backend | device | status | max abs err | max rel err | examples | ms eager/artifact | cause |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        cause = r.cause.replace("|", "\\|")
        lines.append(
            f"| `{r.test or r.module}`{_call(r)} | {r.backend} | {r.device} | {_badge(r.status, r.extra.get('baseline'))}"
            f"{_cached(r)} | "
            f"{format_err(r.max_abs_err)} | {format_err(r.max_rel_err)} | {examples_cell(r)} | "
            f"{format_latency(r.extra.get('latency_ms'))} | {cause} |"
        )
    if session:
        lines += ["", session_words(session)]
    shared = shared_causes(results)
    if shared:
        lines += ["", "## Causes shared by several checks", ""]
        lines += [
            f"- **{len(g.rows)}** {g.backend} checks are {g.status} for one cause: "
            f"{g.cause.replace('|', chr(92) + '|')} ({g.tests()})"
            for g in shared
        ]
    failed = [r for r in results if r.failed]
    if failed:
        # A shared cause's message is shown once, at its first row, with the others named under it.
        group_of = {id(r): g for g in shared for r in g.rows}
        lines += ["", "## Failures", ""]
        for r in failed:
            group = group_of.get(id(r))
            if group is not None and group.rows[0] is not r:
                continue
            known = " (known: recorded in the baseline)" if r.extra.get("baseline") == "known" else ""
            lines += [f"### `{r.nodeid or r.test}`{_call(r)}{known}", "", "```", r.message.strip(), "```", ""]
            if group is not None:
                others = ", ".join(f"`{o.nodeid or o.test}`{_call(o)}" for o in group.rows[1:])
                lines += [f"The same cause fails {len(group.rows) - 1} more {group.backend} checks: {others}", ""]
    return "\n".join(lines) + "\n"


def session_words(session: dict[str, Any]) -> str:
    """Rows and items, wall time and the checks' summed time, each said as what it is."""
    rows, items = session["rows"], session["items"]
    return (
        f"{rows} row{'s' * (rows != 1)} from {items} item{'s' * (items != 1)}; {session['wall_s']:.0f} s wall time, "
        f"the checks' own times sum to {session['checks_s']:.0f} s (several run side by side)"
    )


def _cached(r: Result) -> str:
    """A reused pass says so, and from when (``cached_at``: the run that made it)."""
    if not r.extra.get("cached"):
        return ""
    return f" (cached {str(r.extra.get('cached_at', ''))[:10]})".replace(" )", ")")


def _call(r: Result) -> str:
    """Which kind of call the row checked, where the test made several (recording/kinds.py)."""
    call = r.extra.get("call")
    return f" ({call})" if call else ""


def _badge(status: str, baseline: str | None = None) -> str:
    # Against a baseline, a known failure must not read like the regression that blocks.
    if baseline == "known":
        return f"⚠️ {status} (known)"
    if baseline in ("regression", "improvement"):
        return f"{_badge(status)} ({baseline})"
    return f"❌ {status}" if status in FAILING else f"✅ {status}" if status == "pass" else status


__all__ = ["markdown"]
