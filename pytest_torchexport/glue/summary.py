"""End of session: the terminal summary, the baseline verdicts, CI annotations and the report file.

Rows are read from test reports, not items, so a serial run and xdist's controller (which
sees only reports) take the same path; workers write nothing. See docs/report.md and
docs/howto-ci.md.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .._compat import terminal_width
from ..cache.store import REFUSED
from ..isolation.runner import CARRIED_ROW
from ..options import environment
from ..results import html as page
from ..results.baseline import change_lines
from ..results.explain import is_user_file
from ..results.merge import write_report  # one writer for the session report and merged shards
from ..results.report import FAILING, Report, Result, collect_environment
from ..results.table import format_err, shared_cause_lines, summary_lines

if TYPE_CHECKING:
    from .state import State

#: The session's ``Reporting``.
REPORTING = pytest.StashKey["Reporting"]()


def carried_rows(call: pytest.CallInfo[None]) -> list[dict[str, Any]] | None:
    """[Interrupted] The row a stopped or raising check attached to its item's exception."""
    row = getattr(call.excinfo.value, CARRIED_ROW, None) if call.excinfo else None
    return None if row is None else [row.to_dict()]


class Reporting:
    """The plugin's reporting hooks, registered once per session."""

    def __init__(self, config: pytest.Config, state: State) -> None:
        self.config = config
        self.state = state
        #: report node id -> the rows of its last call report
        self.rows: dict[str, list[dict[str, Any]]] = {}
        #: test key -> its last row in ``state.results`` (``_insert``)
        self.last_row: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()  # reset in pytest_sessionstart

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.monotonic()

    def session(self) -> dict[str, Any]:
        """The session's totals: wall time, the checks' summed time, items and rows."""
        return session_totals(self.state.results, items=len(self.rows), wall_s=time.monotonic() - self.started)

    @pytest.hookimpl(tryfirst=True)  # before pytest-html reads the report's extras
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        results = getattr(report, "torchexport_results", None)
        if not results or report.when == "teardown":  # setup's: an item skipped before its body
            return
        # Only with --html: pytest-html's plugin is loaded in every session.
        if self.config.getoption("htmlpath", None) and not _is_worker(self.config):
            html_extras(report, results)
        earlier = self.rows.get(report.nodeid)
        if earlier:  # pytest-rerunfailures: this attempt's rows replace the last one's
            stale = {id(row) for row in earlier}
            first = next(i for i, row in enumerate(self.state.results) if id(row) in stale)
            kept = [row for row in self.state.results if id(row) not in stale]
            self.state.results[:] = [*kept[:first], *results, *kept[first:]]
            test = getattr(report, "torchexport_test", None)
            if test is not None and id(self.last_row.get(test)) in stale:
                self.last_row[test] = results[-1]
        else:
            self._insert(report, results)
        self.rows[report.nodeid] = results

    def _insert(self, report: pytest.TestReport, results: list[dict[str, Any]]) -> None:
        """Add an item's rows after the last row of its test, so a test's rows stay together
        however its items ran: body_ahead runs the next test's first item before this test's
        later ones, and xdist's workers report in the order they finish."""
        rows = self.state.results
        test = getattr(report, "torchexport_test", None)
        last = self.last_row.get(test) if test is not None else None
        at = len(rows)
        if last is not None and rows[-1] is not last:
            at = 1 + next((i for i in range(len(rows) - 1, -1, -1) if rows[i] is last), len(rows) - 1)
        rows[at:at] = results
        if test is not None:
            self.last_row[test] = results[-1]

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_html(self, report: pytest.TestReport, data: list[str]) -> None:
        # The check's findings as plain escaped text in pytest-html's log section.
        results = getattr(report, "torchexport_results", None)
        if results and report.when != "teardown":
            data.append(f"{' torchexport ':-^80}\n{html.escape(item_text(results))}\n")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if _is_worker(self.config):
            return

        results = [Result.from_dict(r) for r in self.state.results]
        if not results:
            return
        terminalreporter.write_sep("=", "torchexport summary")
        width = min(terminal_width(terminalreporter), 120)
        for line in summary_lines(results, width=width):
            terminalreporter.write_line(line)
        for line in shared_cause_lines(results):
            terminalreporter.write_line(line)
        for line in call_lines(self.state.results):
            terminalreporter.write_line(line)
        for path in self.state.report_paths:
            terminalreporter.write_line(f"torchexport report written to {path}")
        for line in cache_lines(self.state.results):
            terminalreporter.write_line(line)
        for line in torchscript_lines(self.state.results):
            terminalreporter.write_line(line)
        for line in budget_lines(self.state.results):
            terminalreporter.write_line(line)
        for line in cut_lines(self.state.results):
            terminalreporter.write_line(line)
        self._baseline_summary(terminalreporter)

        if environment("GITHUB_ACTIONS") == "true":
            # write_line: -q does not suppress it.
            for result in self.state.results:
                if result["status"] in FAILING and result.get("baseline") != "known":
                    terminalreporter.write_line(annotation(result))

    def _baseline_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        state = self.state
        if state.update_baseline:
            terminalreporter.write_line(f"torchexport baseline written to {state.baseline_path}")
            return
        if state.baseline is None:
            return

        terminalreporter.write_sep("-", f"torchexport baseline {state.baseline_path}")
        for line in change_lines(state.results, state.baseline):
            terminalreporter.write_line(line)

    def write_reports(self) -> None:
        """Write the report files and the baseline from every row (controller only)."""
        if _is_worker(self.config):
            return
        paths = self.state.report_paths
        results = self.state.results
        if not results or not (paths or self.state.update_baseline):
            return

        report = Report.from_dict({"results": results})
        # A cuda item skipped for lack of a GPU does not count.
        env = collect_environment(sorted({r["device"] for r in results if r["status"] != "skipped"}) or ["cpu"])
        state = self.state
        if state.update_baseline and state.baseline_path:
            Path(state.baseline_path).parent.mkdir(parents=True, exist_ok=True)
            Path(state.baseline_path).write_text(
                json.dumps(report.to_dict(env), indent=2, default=str), encoding="utf-8"
            )

        totals = self.session()
        for path in paths:
            write_report(path, report, env, session=totals)


def call_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A line explaining extra rows where a test made several kinds of call (recording/kinds.py)."""
    kinds: dict[str, list[str]] = {}
    items: dict[str, int] = {}
    for row in rows:
        if row.get("call"):
            test = str(row.get("test") or row.get("nodeid"))
            items[str(row.get("nodeid"))] = items.get(str(row.get("nodeid")), 0) + 1
            if row["call"] not in kinds.setdefault(test, []):
                kinds[test].append(row["call"])
    if not kinds:
        return []
    named = "; ".join(f"{test.split('::', 1)[-1]}: {', '.join(calls)}" for test, calls in kinds.items())
    n = len(kinds)
    return [
        f"torchexport: {n} test{'s' * (n != 1)} made more than one kind of call, each checked on its own "
        f"row: {sum(items.values())} rows from {len(items)} items ({named})"
    ]


def cache_lines(rows: list[dict[str, Any]]) -> list[str]:
    """[Verdict Cache] How many verdicts were reused, and every entry the cache could not use."""
    reused = sum(1 for row in rows if row.get("cached"))
    # One line per distinct note, with the number of checks it concerns.
    notes: dict[str, list[str]] = {}
    for row in rows:
        if row.get("cache") and row.get("cache_refused") not in REFUSED:  # refused ones: counted below
            notes.setdefault(row["cache"], []).append(str(row.get("nodeid")))
    lines = []
    if reused:
        failures = sum(1 for row in rows if row.get("cached") and row.get("status") not in ("pass", "xpass"))
        what = f"{reused} pass{'es' * (reused != 1)}"
        if failures:  # reused failures still fail the run, so say they were reused
            passes = reused - failures
            what = f"{reused} verdicts ({passes} pass{'es' * (passes != 1)}, {failures} failure{'s' * (failures != 1)})"
        lines.append(f"torchexport cache: reused {what} of {len(rows)} checks (nothing they depend on changed)")
    # Notes that differ only in the entry they name are one line: its folder, with their count.
    grouped: dict[str, list[tuple[str, str]]] = {}
    for note, items in notes.items():
        grouped.setdefault(_ENTRY_PATH.sub(r"\1/…", note), []).extend((note, item) for item in items)
    for general, said in grouped.items():
        (note, item), *more = said
        line = f"torchexport cache warning: {f'{len(said)} checks' if more else item}: {general}"
        if not more and len(f"torchexport cache warning: {item}: {note}") <= WIDEST_LINE:
            line = f"torchexport cache warning: {item}: {note}"  # the entry's whole path, where it fits
        lines.append(line)
    lines.extend(refused_lines(rows))
    return lines


#: A cache entry's path in a note (``DIR/vN/ab/abcdef….json``): the folder is kept.
_ENTRY_PATH = re.compile(r"(\S+)/[0-9a-f]{2}/[0-9a-f]{16,}\.json")
#: The widest line the summary prints where it can choose (a terminal's usual width).
WIDEST_LINE = 200


def refused_lines(rows: list[dict[str, Any]]) -> list[str]:
    """[Signed Entries] One line counting the entries TORCHEXPORT_CACHE_SECRET refused, and why."""
    counts = Counter(row["cache_refused"] for row in rows if row.get("cache_refused") in REFUSED)
    if not counts:
        return []
    total = sum(counts.values())
    why = "; ".join(f"{n} {REFUSED[kind]}" for kind, n in sorted(counts.items()))
    entries = "entry" if total == 1 else "entries"
    return [f"torchexport cache: refused {total} stored {entries}: {why}; checked again"]


def html_extras(report: pytest.TestReport, rows: list[dict[str, Any]]) -> None:
    """Add each row's verdict (and plot, with the html extra) to the item's pytest-html extras."""
    # Deferred: pytest-html is optional and needed only with --html.
    from pytest_html import extras

    if page.missing():
        fragments = [
            f"<p><strong>torchexport {html.escape(r['backend'])}: {html.escape(r['status'])}</strong> "
            f"(install {html.escape(page.INSTALL)} for the plot)</p>"
            for r in rows
        ]
    else:
        fragments = [page.extra(row) for row in rows]
    report.extras = [*getattr(report, "extras", []), *(extras.html(f) for f in fragments)]  # type: ignore[attr-defined]  # pytest-html's


def torchscript_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Where this torch deprecates TorchScript: its warning (kept out of the user's warnings),
    and how many trace/script modules already pass on ``export``."""
    said = next((row["torchscript_deprecated"] for row in rows if row.get("torchscript_deprecated")), None)
    if said is None:
        return []
    modules = {(row.get("test"), row.get("module")) for row in rows if row["backend"] in ("trace", "script")}
    export: dict[Any, list[str]] = {}
    for row in rows:
        if row["backend"] == "export" and (row.get("test"), row.get("module")) in modules:
            export.setdefault((row.get("test"), row.get("module")), []).append(row["status"])
    passing = sum(1 for statuses in export.values() if all(s == "pass" for s in statuses))
    unchecked = len(modules) - len(export)
    n = len(modules)
    if not n:  # a backend that traces on its own (openvino) is no TorchScript module of the user's
        return [f"torchexport: {said.split(': ', 1)[0]} deprecates TorchScript ({said.split(': ', 1)[-1]})"]
    counts = (
        f"torchexport: of the {n} module{'s' if n != 1 else ''} checked on trace or script, {passing} pass on export"
    )
    failing = n - passing - unchecked
    if failing:
        counts += f", {failing} {'does' if failing == 1 else 'do'} not (failed or xfailed there)"
    if unchecked:
        counts += f', {unchecked} not checked on export (add "export" to their backends=)'
    return [f"torchexport: {said.split(': ', 1)[0]} deprecates TorchScript ({said.split(': ', 1)[-1]})", counts]


def budget_lines(rows: list[dict[str, Any]]) -> list[str]:
    """[Search Budget] How many rows the budget cut short, and how many inputs it left untried."""
    budgeted = [row["budget"] for row in rows if isinstance(row.get("budget"), dict)]
    if not budgeted:
        return []
    untried = sum(sum(b.get("untried", {}).values()) for b in budgeted)
    rows_word = "row" if len(budgeted) == 1 else "rows"
    skipped = [b["skipped"] for b in budgeted if b.get("skipped")]
    what = sorted({name for names in skipped for name in names})
    also = f", {len(skipped)} left out {' and '.join(what)}" if skipped else ""
    return [
        f"torchexport budget: {len(budgeted)} {rows_word} of {len(rows)} left {untried} input(s) untried{also} (each "
        "row's budget finding says which); --torchexport-budget=off for the full search"
    ]


def session_totals(rows: list[dict[str, Any]], items: int, wall_s: float) -> dict[str, Any]:
    """The report's ``session`` key: items, rows, wall time and the checks' summed time (seconds)."""
    checks_s = sum(float((row.get("timings") or {}).get("total_s") or 0.0) for row in rows)
    return {"items": items, "rows": len(rows), "wall_s": round(wall_s, 1), "checks_s": round(checks_s, 1)}


def cut_lines(rows: list[dict[str, Any]]) -> list[str]:
    """[Memory Budget] One line per test whose declared sizes a limit cut, and how to lift it."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for row in rows:
        cut = row.get("size_cut")
        if not isinstance(cut, dict):
            continue
        dims = tuple((name, tried, declared) for name, (tried, declared) in cut.get("dims", {}).items())
        key = (
            row.get("test") or row.get("nodeid"),
            dims,
            tuple(cut.get("examples") or ()),
            cut["limit"],
            cut.get("lift"),
        )
        groups.setdefault(key, []).append(
            row["backend"] if row.get("device", "cpu") == "cpu" else f"{row['backend']}-{row['device']}"
        )
    lines = []
    for (test, dims, examples, limit, lift), backends in groups.items():
        parts = [f"{name} above {tried} (declared up to {declared})" for name, tried, declared in dims]
        if examples:
            parts.append(f"{examples[1] - examples[0]} of {examples[1]} examples")
        how = f": {lift}" if lift else ""
        lines.append(
            f"torchexport sizes not tried: {test} [{', '.join(backends)}]: {', '.join(parts)} (the {limit} limit{how})"
        )
    return lines


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def item_text(rows: list[dict[str, Any]]) -> str:
    """One item's rows as plain text for pytest-html."""
    header = ("backend", "device", "status", "max abs err", "max rel err", "examples")
    table = [header] + [
        (
            r["backend"],
            r["device"],
            r["status"],
            format_err(r.get("max_abs_err")),
            format_err(r.get("max_rel_err")),
            str(r.get("examples", 0)),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    for r in rows:
        example = r.get("failing_example") or {}
        if example.get("inputs"):
            inputs = ", ".join(f"{name}: {_input(spec)}" for name, spec in example["inputs"].items())
            lines.append(f"failing input ({r['backend']}): {inputs}")
        if example.get("repro"):
            lines.append(f"replay ({r['backend']}): {example['repro']}")
        where = r.get("diverges_at")
        if where:
            lines.append(
                f"diverges at ({r['backend']}): {where.get('module') or '(top level)'} ({where.get('class')}), "
                f"max abs err {format_err(where.get('max_abs_err'))}"
            )
    return "\n".join(lines)


def _input(spec: dict[str, Any]) -> str:
    if "shape" not in spec:
        return repr(spec.get("value"))
    stats = ", ".join(f"{k} {spec[k]:.4g}" for k in ("min", "max", "mean") if k in spec)
    return f"{spec['dtype']}{spec['shape']}" + (f" ({stats})" if stats else "")


# -- GitHub Actions annotations: a failing row shows at the user's source line -------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def location(result: dict[str, Any]) -> tuple[str, int] | None:
    """The user's line: a finding's source line, else the test function; never site-packages."""
    for finding in result.get("findings", []):
        where = finding.get("where")
        if where and ":" in where:
            path, _, line = where.rpartition(":")
            if line.isdigit() and is_user_file(os.path.abspath(path)):
                return path, int(line)
    loc = result.get("location")
    if loc and is_user_file(os.path.abspath(loc["file"])):
        return loc["file"], int(loc["line"])
    return None


def annotation(result: dict[str, Any]) -> str:
    where = location(result)
    title = f"torchexport {result['backend']} {result['status']}"
    lines = (result.get("message") or "").splitlines()
    body = "\n".join(lines[:12])
    props = f"title={_escape_property(title)}"
    if where:
        props = f"file={_escape_property(where[0])},line={where[1]},{props}"
    return f"::error {props}::{_escape_data(body)}"
