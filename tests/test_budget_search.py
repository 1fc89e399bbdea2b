"""[Search Budget] budget=, --torchexport-budget and the torchexport_budget ini key.

A slow model is one whose forward sleeps: what the budget bounds is time, and the sleep makes
each eager call cost a known amount without a large model.
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers import run_with_report

from pytest_torchexport import check
from pytest_torchexport.backends.trace import TraceBackend
from pytest_torchexport.errors import InvalidArgument
from pytest_torchexport.options import Options

SLOW = """
import time

import pytest
import torch


class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        time.sleep(0.25)
        return self.fc(x)


@pytest.mark.torchexport(backends=["trace"], dims={{"batch": (1, 8)}}, examples=10{budget})
def test_slow():
    Slow().eval()(torch.randn(3, 4))
"""


def test_a_budget_leaves_drawn_inputs_untried_and_says_so_on_the_row(tester):
    tester.makepyfile(test_slow=SLOW.format(budget=', budget="1s"'))
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    budget = row["budget"]
    assert budget["limit_s"] == 1.0
    # Eager's runs take up to half the budget (two 0.25 s calls for the declared min and max, which always
    # run), the artifact's the rest: within the budget, give or take the one call that crosses it.
    assert 0.5 <= budget["spent_s"] <= 1.0 + 0.25, budget
    assert budget["untried"]["drawn"] >= 5, budget  # drawn inputs go first
    assert row["sizes"]["batch"] == [1, 8]  # each declared dim's min and max were still tried
    finding = next(f for f in row["findings"] if f["kind"] == "budget")
    assert "budget=1s" in finding["detail"] and "--torchexport-budget=off" in finding["detail"]
    result.stdout.re_match_lines([r"torchexport budget: 1 row of 1 left \d+ input\(s\) untried.*"])


def test_budget_off_gives_the_full_search(tester):
    tester.makepyfile(test_slow=SLOW.format(budget=', budget="1s"'))
    result, rows = run_with_report(
        tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off", "--torchexport-budget=off"
    )
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    assert "budget" not in row
    assert not [f for f in row["findings"] if f["kind"] == "budget"]
    assert row["examples"] >= 10
    assert "torchexport budget" not in result.stdout.str()


def test_the_ini_key_sets_the_budget_and_a_small_model_keeps_its_full_search_by_default(tester):
    tester.makepyfile(test_slow=SLOW.format(budget=""))
    result, rows = run_with_report(
        tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off", "-o", "torchexport_budget=1s"
    )
    assert rows["trace"]["budget"]["limit_s"] == 1.0
    tester.makepyfile(test_slow=SLOW.format(budget="").replace("time.sleep(0.25)", "pass"))
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=1)
    assert "budget" not in rows["trace"]  # default: a multiple of the body's time, never below the floor


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("45", 45.0)])
def test_durations_are_read_in_seconds(value, seconds):
    assert Options.build(budget=value).budget == seconds


def test_off_is_the_full_search():
    assert Options.build(budget="off").budget == float("inf")


@pytest.mark.parametrize("value", ["ten", "5 minutes", "-3s", 0, "10d", True, "inf"])
def test_a_malformed_budget_is_refused_with_the_valid_forms(value):
    with pytest.raises(
        InvalidArgument, match=r'budget= takes a number of seconds \(90\), "90s", "10m", "1.5h", or "off"'
    ):
        Options.build(budget=value)


def test_a_malformed_command_line_budget_is_a_usage_error_listing_the_forms(tester):
    tester.makepyfile(test_slow=SLOW.format(budget=""))
    result = tester.runpytest("-q", "--torchexport-budget=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.re_match_lines(
        [
            r'.*budget= takes a number of seconds \(90\), "90s", "10m", "1.5h", or "off" for the full '
            r"search; got 'soon'.*"
        ]
    )


def test_a_malformed_marker_budget_names_the_test(tester):
    # A bad marker fails its own test's one [torchexport-marker] item (a usage_error row), not the session.
    tester.makepyfile(test_slow=SLOW.format(budget=', budget="5 minutes"'))
    result = tester.runpytest("-q")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"test_slow.py::test_slow: .*budget= takes a number of seconds.*got '5 minutes'.*"])
    assert "marker   usage_error" in result.stdout.str()


# Static dims the static-size probes can try (eager takes any length), a forward of 0.25 s.
STATIC = SLOW.replace("return self.fc(x)", "return x * 2").replace("torch.randn(3, 4)", "torch.randn(3, 6)")


def test_a_budget_spent_by_the_search_leaves_static_size_probes_and_latency_untried(tester):
    # [Search Budget] The findings and measurements after the search are counted and go first: a
    # budget the search spends leaves them out, and the row names them.
    tester.makepyfile(test_slow=STATIC.format(budget=', budget="1s"'))
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    budget = row["budget"]
    assert budget["skipped"] == ["latency", "static_size probes"], budget
    assert "latency_ms" not in row and "static_size_s" not in row["timings"], row["timings"]
    # Everything after the exports was counted: within the budget, give or take the call that crosses it.
    assert budget["spent_s"] <= 1.0 + 0.25 + 0.25, budget
    finding = next(f for f in row["findings"] if f["kind"] == "budget")
    assert "left out latency and static_size probes" in finding["detail"], finding
    result.stdout.re_match_lines(
        [
            r"torchexport budget: 1 row of 1 left \d+ input\(s\) untried, 1 left out latency "
            r"and static_size probes .*"
        ]
    )


def test_budget_off_runs_static_size_probes_and_latency(tester):
    tester.makepyfile(test_slow=STATIC.format(budget=', budget="1s"'))
    result, rows = run_with_report(
        tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off", "--torchexport-budget=off"
    )
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    assert "budget" not in row
    assert row["latency_ms"]["eager"] >= 250 and row["timings"]["static_size_s"] > 0, row["timings"]


class SlowRun(TraceBackend):
    """trace, with an artifact whose every call takes 0.3 s: eager is fast, the check's own runs are not."""

    name = "slowrun"

    def unavailable_reason(self):
        return None

    def run(self, artifact, args, kwargs):
        time.sleep(0.3)
        return super().run(artifact, args, kwargs)


class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_a_check_that_spends_the_budget_in_its_own_search_leaves_its_findings_out():
    # The test's process had time for eager's side of latency and the static sizes; the check's
    # artifact runs spent the rest, so it leaves its own static-size probes and latency out.
    report = check(Double(), (torch.randn(3, 6),), backends=[SlowRun()], examples=10, budget="1s")
    [row] = report.results
    assert "shared_static_size_s" in row.timings  # eager's side ran in the test's process
    assert row.extra["budget"]["skipped"] == ["static_size probes", "latency"], row.extra["budget"]
    assert "latency_ms" not in row.extra and "static_size_s" not in row.timings, row.timings
    assert row.timings["after_exports_s"] + row.timings["shared_s"] <= 1.0 + 0.3 + 0.3, row.timings
