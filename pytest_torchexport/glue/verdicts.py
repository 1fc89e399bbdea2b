"""A check's row as pytest shows it: a pass, a skip, an xfail or a failure.

``record`` stashes each row on its item for the test report; ``settle_item`` maps a row to
pytest's outcome. See docs/statuses.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..errors import ExportMismatch
from ..results.baseline import judge_baseline
from ..results.report import Report
from . import wording
from .model_items import ONLY, PREFIX
from .state import State

if TYPE_CHECKING:
    from ..results.report import Result

ITEM_RESULTS = pytest.StashKey[list]()


def record(item: pytest.Item, results: list[Result]) -> None:
    if item.nodeid.startswith(f"{PREFIX}::"):  # a model named on the command line: its flags, not a marker's
        wording.for_item(results, bool(item.config.getoption(ONLY, False)))
    item.stash.setdefault(ITEM_RESULTS, []).extend(results)
    for n, r in enumerate(results):
        # One row per kind of call the test made (recording/kinds.py); repeats of a backend are numbered.
        again = any((o.backend, o.device) == (r.backend, r.device) for o in results[:n])
        prefix = (
            "torchexport" if len(results) == 1 else f"torchexport[{r.backend}-{r.device}{f'-{n + 1}' if again else ''}]"
        )
        item.user_properties.append((f"{prefix}.backend", r.backend))
        item.user_properties.append((f"{prefix}.status", r.status))
        if r.max_abs_err is not None:
            item.user_properties.append((f"{prefix}.max_abs_err", r.max_abs_err))


def settle_item(result: Result, state: State) -> None:
    """Raise (or skip, or xfail) as the row says; return for a pass."""
    __tracebackhide__ = True  # the failure is in the user's model, not these frames

    if result.status == "skipped" or result.status == "nondeterministic":
        pytest.skip(f"[{result.status}] {result.message}")
    if result.status == "xfail":
        pytest.xfail(result.message)
    if state.update_baseline and result.failed:
        pytest.xfail(f"recorded into the baseline {state.baseline_path}: {result.status}")
    if state.baseline is not None:
        verdict = judge_baseline(result.to_dict(), state.baseline)
        result.extra["baseline"] = verdict.kind
        if verdict.kind == "known":
            pytest.xfail(f"{verdict.detail} ({state.baseline_path}): {result.message.splitlines()[0]}")
        if verdict.blocks:
            raise ExportMismatch(
                f"Regression against the baseline {state.baseline_path}: {verdict.detail}\n{result.message}",
                Report([result]),
            )
    if result.failed:
        raise ExportMismatch(result.message + _reused(result), Report([result]))


def _reused(result: Result) -> str:
    """[Verdict Cache] A note that a failure was reused from an earlier run, and how to rerun it."""
    when = result.reused_at
    if when is None:
        return ""
    return (
        f"\n(reused: the verdict of the run of {when}; nothing it depends on changed since. "
        "--cache-clear or --torchexport-cache=off runs the check again.)"
    )


def settle_rows(results: list[Result], state: State) -> None:
    """One item's rows as one outcome: fail if any row fails, else skip, else xfail, else pass."""
    __tracebackhide__ = True

    if len(results) == 1:
        settle_item(results[0], state)
        return
    failed, skipped, xfailed = [], [], []
    for result in results:
        try:
            settle_item(result, state)
        except pytest.skip.Exception as exc:
            skipped.append(exc)
        except pytest.xfail.Exception as exc:
            xfailed.append(exc)
        except ExportMismatch as exc:
            failed.append((result, exc))
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        raise ExportMismatch("\n\n".join(str(exc) for _, exc in failed), Report([r for r, _ in failed]))
    if skipped:
        raise skipped[0]
    if xfailed:
        raise xfailed[0]


def rows_of(item: pytest.Item) -> list[dict] | None:
    """The item's rows as JSON-able dicts, for its call report (None: it made none)."""
    if ITEM_RESULTS not in item.stash:
        return None
    return [r.to_dict() for r in item.stash[ITEM_RESULTS]]


__all__ = ["ITEM_RESULTS", "record", "rows_of", "settle_item", "settle_rows"]
