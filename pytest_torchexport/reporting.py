"""End of session: the terminal summary, the baseline verdicts, CI annotations and the report file.

Results are read from each test report (not from items), so serial runs and xdist's
controller, which sees only reports, take the same path. Workers write nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from .report import FAILING


class Reporting:
    """Registered once per pytest process; holds the process's ``State`` (see plugin.py)."""

    def __init__(self, config: pytest.Config, state: Any) -> None:
        self.config = config
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        results = getattr(report, "torchexport_results", None)
        if results and report.when == "call":
            self.state.results.extend(results)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if _is_worker(self.config):
            return
        from .report import Result, summary_lines

        results = [Result.from_dict(r) for r in self.state.results]
        if not results:
            return
        terminalreporter.write_sep("=", "torchexport summary")
        width = min(terminalreporter._tw.fullwidth, 120)
        for line in summary_lines(results, width=width):
            terminalreporter.write_line(line)
        path = self.state.report_path
        if path:
            terminalreporter.write_line(f"torchexport report written to {path}")
        self._baseline_summary(terminalreporter)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            from .annotations import annotation

            # Each command on a line of its own (write_line), which -q does not suppress.
            for result in self.state.results:
                if result["status"] in FAILING and result.get("baseline") != "known":
                    terminalreporter.write_line(annotation(result))

    def _baseline_summary(self, terminalreporter: Any) -> None:
        state = self.state
        if state.update_baseline:
            terminalreporter.write_line(f"torchexport baseline written to {state.baseline_path}")
            return
        if state.baseline is None:
            return
        from .baseline import judge

        groups: dict[str, list[str]] = {}
        for result in state.results:
            verdict = judge(result, state.baseline)
            if verdict.kind != "same":
                groups.setdefault(verdict.kind, []).append(
                    f"{result['nodeid']} [{result['backend']}]: {verdict.detail}"
                )
        terminalreporter.write_sep("-", f"torchexport baseline {state.baseline_path}")
        if not groups:
            terminalreporter.write_line("no change against the baseline")
        for kind in ("regression", "known", "improvement", "new", "skipped"):
            for line in groups.get(kind, []):
                terminalreporter.write_line(f"{kind.upper():12} {line}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _is_worker(self.config):
            return
        path = self.state.report_path
        results = self.state.results
        if not results or not (path or self.state.update_baseline):
            return
        from .report import Report, collect_environment

        report = Report.from_dict({"results": results})
        # Devices that ran something: a cuda item skipped for want of a GPU does not count.
        env = collect_environment(sorted({r["device"] for r in results if r["status"] != "skipped"}) or ["cpu"])
        state = self.state
        if state.update_baseline and state.baseline_path:
            Path(state.baseline_path).parent.mkdir(parents=True, exist_ok=True)
            Path(state.baseline_path).write_text(
                json.dumps(report.to_dict(env), indent=2, default=str), encoding="utf-8"
            )
        if not path:
            return
        from .merge import write_report  # one writer for the session report and merged shards

        write_report(path, report, env)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")
