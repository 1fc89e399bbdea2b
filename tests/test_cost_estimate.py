"""Before the first check, one line on what the session's marked tests will cost.

Real suites run twice through pytest: the first run's times are kept in pytest's cache, the
second says what they add up to where that passes the threshold (``ESTIMATE_ABOVE_S``,
lowered here so a suite of seconds crosses it).
"""

from __future__ import annotations

import pytest

from pytest_torchexport.glue import costs

SUITE = """
import time

import pytest
import torch


@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_heavy():
    time.sleep({sleep})  # a body whose model takes its time: what dominates the session
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_quick():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))
"""

NEW = """
import pytest
import torch


@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_new():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))
"""

LINE = r"torchexport: the \d+ marked items? took about .* last time"


def _run(tester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return tester.runpytest("-q", "--torchexport-cache=off", *args)


@pytest.mark.parametrize("workers", [None, 2], ids=["serial", "xdist"])
def test_a_second_run_says_what_the_first_cost_and_which_test_dominates(tester, monkeypatch, workers):
    monkeypatch.setattr(costs, "ESTIMATE_ABOVE_S", 0.5)
    args = () if workers is None else ("-n", str(workers))
    # Under xdist each worker's first item pays that worker's start (imports, the fork server):
    # on a slow CI machine ~3 s, so there the heavy body must outweigh it by more than rounding.
    tester.makepyfile(test_suite=SUITE.format(sleep=1.5 if workers is None else 6))
    first = _run(tester, *args)
    first.assert_outcomes(passed=2)
    assert "torchexport: the" not in first.stdout.str()  # nothing known yet: nothing said
    tester.makepyfile(test_new=NEW)
    second = _run(tester, *args)
    second.assert_outcomes(passed=3)
    per_worker = r" \(.* on each of 2 workers\)" if workers else ""
    second.stdout.re_match_lines(
        [
            rf"torchexport: the 3 marked items took about \d+ s{per_worker} last time \(1 has no earlier time\): "
            r"test_suite.py::test_heavy \d+ s, test_suite.py::test_quick \d+ s$"
        ]
    )
    text = second.stdout.str()
    assert text.count("torchexport: the") == 1  # once, in the controller
    assert text.index("torchexport: the") < text.index("torchexport summary")  # before the checks' results


def test_no_line_where_the_last_run_took_less_than_the_threshold(tester):
    tester.makepyfile(test_suite=SUITE.format(sleep=0))
    _run(tester).assert_outcomes(passed=2)
    second = _run(tester)
    second.assert_outcomes(passed=2)
    assert costs.ESTIMATE_ABOVE_S == 180.0
    second.stdout.no_re_match_line(LINE)


def test_without_pytests_cache_nothing_is_kept_or_said(tester, monkeypatch):
    monkeypatch.setattr(costs, "ESTIMATE_ABOVE_S", 0.0)
    tester.makepyfile(test_suite=SUITE.format(sleep=0))
    for _ in range(2):
        result = _run(tester, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=2)
        result.stdout.no_re_match_line(LINE)


def test_the_estimate_groups_a_tests_items_and_counts_the_untimed_ones():
    history = {
        "t.py::test_a[torchexport-onnx]": {"test": "t.py::test_a", "s": 100.0},
        "t.py::test_a[torchexport-trace]": {"test": "t.py::test_a", "s": 150.0},
        "t.py::test_b[x-torchexport-onnx]": {"test": "t.py::test_b[x]", "s": 30.0},
        "t.py::test_gone[torchexport-onnx]": {"test": "t.py::test_gone", "s": 999.0},  # not collected now
        "t.py::test_odd[torchexport-onnx]": {"test": "t.py::test_odd", "s": "soon"},  # not a time
    }
    ids = [*list(history)[:3], "t.py::test_odd[torchexport-onnx]", "t.py::test_c[torchexport-onnx]", "t.py::test_plain"]
    found = costs.estimate(history, ids)
    assert found.seconds == 280.0
    assert found.tests == [("t.py::test_a", 250.0), ("t.py::test_b[x]", 30.0)]
    assert (found.timed, found.untimed) == (3, 2)  # test_plain is no check of ours
    assert found.worth_saying() and not found.worth_saying(workers=2)  # 140 s a worker: under 3 min
    assert found.line() == (
        "torchexport: the 5 marked items took about 4.7 min last time (2 have no earlier time): "
        "t.py::test_a 4.2 min, t.py::test_b[x] 30 s"
    )


def test_the_history_keeps_this_runs_times_first_and_drops_what_is_not_a_time():
    history = {"a": {"test": "A", "s": 1.0}, "b": {"test": "B", "s": 2.0}, "c": "junk"}
    kept = costs.updated(history, {"b": ("B", 5.0), "d": ("D", 0.25)})
    assert kept == {"b": {"test": "B", "s": 5.0}, "d": {"test": "D", "s": 0.25}, "a": {"test": "A", "s": 1.0}}
    assert list(kept) == ["b", "d", "a"]
