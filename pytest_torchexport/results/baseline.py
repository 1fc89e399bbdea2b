"""Compare a run with a committed baseline report: what regressed, what is known, what improved.

A baseline is a JSON report (``--torchexport-report`` format) written by
``--torchexport-update-baseline``. Pure functions over result dicts: the plugin decides
what a verdict does to a test item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import FAILING, STATUSES

#: The order the baseline summary lists its changes in.
KINDS = ("regression", "known", "improvement", "new", "skipped")

# A known failure whose error grows by more than this factor (past its tolerance) is a regression.
GROWTH = 1.5


def key(result: dict[str, Any]) -> str:
    # An item has one row per kind of call its test made, each with its own key.
    call = f"|{result['call']}" if result.get("call") else ""
    return f"{result.get('nodeid') or result.get('test')}|{result['backend']}|{result['device']}{call}"


def load(path: str | Path) -> dict[str, dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {key(r): r for r in data.get("results", [])}


@dataclass
class BaselineVerdict:
    kind: str  # "same", "known", "regression", "improvement", "new", "skipped"
    detail: str = ""

    @property
    def blocks(self) -> bool:
        return self.kind == "regression"


def judge_baseline(current: dict[str, Any], baseline: dict[str, dict[str, Any]]) -> BaselineVerdict:
    before = baseline.get(key(current))
    now = current["status"]
    if before is None:
        return BaselineVerdict("new", f"not in the baseline (now {now})")
    was = before["status"]
    if now == "skipped" and was != "skipped":
        return BaselineVerdict("skipped", f"{was} in the baseline, skipped now: {current.get('message', '')[:120]}")
    if now in FAILING and was in FAILING:
        if _rank(now) > _rank(was):
            return BaselineVerdict("regression", f"got worse: {was} in the baseline, {now} now")
        grown = _grown(before, current)
        if grown:
            return BaselineVerdict("regression", grown)
        return BaselineVerdict("known", f"known failure recorded in the baseline ({was})")
    if now in FAILING:
        return BaselineVerdict("regression", f"got worse: {was} in the baseline, {now} now")
    if was in FAILING:
        return BaselineVerdict("improvement", f"improved: {was} in the baseline, {now} now; update the baseline")
    return BaselineVerdict("same")


def _rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def _grown(before: dict[str, Any], current: dict[str, Any]) -> str | None:
    old, new = before.get("max_abs_err"), current.get("max_abs_err")
    if old is None or new is None:
        return None
    allowed = old * GROWTH + (current.get("atol") or 0.0)
    if new > allowed:
        return f"the error grew: max abs error {old:.3g} in the baseline, {new:.3g} now (allowed up to {allowed:.3g})"
    return None


def change_lines(results: list[dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> list[str]:
    """The baseline summary: one line per row that differs from the baseline, in ``KINDS`` order."""
    groups: dict[str, list[str]] = {}
    for row in results:
        verdict = judge_baseline(row, baseline)
        if verdict.kind != "same":
            groups.setdefault(verdict.kind, []).append(f"{row_name(row)}: {verdict.detail}")
    lines = [f"{kind.upper():12} {line}" for kind in KINDS for line in groups.get(kind, [])]
    return lines or ["no change against the baseline"]


def row_name(row: dict[str, Any]) -> str:
    """A row as the summaries name it: ``test_m.py::test_gate[torchexport-trace] [trace]``."""
    return f"{row.get('nodeid') or row.get('test')} [{row['backend']}]"
