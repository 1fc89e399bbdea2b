"""Every figure a row shows comes from one place, and remedies follow the verdict.

As a person met them: a module updating a buffer in ``forward`` on onnx was a row with
``examples 0``, ``max abs err -`` and no sizes while its message said "Greatest absolute
difference: 0.0478", with no source line and no remedy; the HTML said ``all checks (total_s)
146 s`` for a 116 s session and counted rows where pytest counts items; a shape test
(``if x.shape[-1] > 64``) was "a tensor was read as a Python bool", and a defect's last line
offered a looser tolerance.
"""

from __future__ import annotations

import json
import re

TEST_FILE = """
import pytest
import torch
from torch import nn


class RunningNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(8))

    def forward(self, x):
        self.running_mean.mul_(0.9).add_(0.1 * x.mean(0))
        return x - self.running_mean


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if x.shape[-1] > 64:
            return y * 2
        return y


@pytest.mark.torchexport(backends=["onnx"], standalone=False)
def test_running():
    RunningNorm().eval()(torch.randn(4, 8))


@pytest.mark.torchexport(backends=["trace"], dims={"w": (16, 128)}, dynamic={0: {3: "w"}}, standalone=False)
def test_wide():
    Wide().eval()(torch.randn(1, 3, 8, 32))


def test_two_rows_one_item(torchexport):
    torchexport(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backends=["trace", "export"], standalone=False)
"""


def test_a_rows_numbers_agree_with_its_message_and_remedies_follow_the_verdict(tester):
    tester.makepyfile(test_models=TEST_FILE)
    result = tester.runpytest("--torchexport-report=out.json", "--torchexport-report=out.md")
    result.assert_outcomes(passed=1, failed=2)
    data = json.loads((tester.path / "out.json").read_text())
    rows = {r["test"].rsplit("::", 1)[1] + "-" + r["backend"]: r for r in data["results"]}

    # The side-effects row says what its message says: calls compared, greatest errors, the input.
    running = rows["test_running-onnx"]
    assert running["status"] == "mismatch" and running["cause_kind"] == "side_effects"
    greatest = float(re.search(r"Greatest absolute difference: ([0-9.e+-]+)", running["message"]).group(1))
    assert running["max_abs_err"] > 0 and f"{running['max_abs_err']:.3g}" == f"{greatest:.3g}"
    assert running["examples"] == 2 and running["compared"]["inputs"] == 2
    assert running["sizes"] == {"batch": [4, 4]} and running["rtol"] and running["atol"]
    assert running["failing_example"]["inputs"]["x"]["shape"] == [4, 8]
    assert [e["status"] for e in running["per_input"]] == ["pass", "mismatch"]
    # ... names the line that updates the state, and says what to do
    written = (tester.path / "test_models.py").read_text().splitlines()
    line = next(n for n, text in enumerate(written, 1) if "self.running_mean.mul_" in text)
    assert f"at test_models.py:{line} (`self.running_mean.mul_(0.9).add_(0.1 * x.mean(0))`)" in running["likely_cause"]
    assert {f["where"] for f in running["findings"] if f["kind"] in ("side_effects", "mutates_state")} == {
        f"test_models.py:{line}"
    }
    assert running["message"].splitlines()[-1].startswith("Return the updated state as an output")
    # The summary's max err and examples are the row's.
    result.stdout.re_match_lines(
        [rf"test_running\s+RunningNorm\s+onnx\s+mismatch\s+{running['max_abs_err']:.2g}\s+2\b"]
    )

    # A shape test is said as one, and a defect (the float64 run says so) is offered no tolerance.
    wide = rows["test_wide-trace"]
    assert wide["status"] == "mismatch"
    assert "a size was tested in Python" in wide["likely_cause"]
    assert "read as a Python bool" not in wide["message"]
    last = wide["message"].splitlines()[-1]
    assert last.startswith("This is a defect, not a tolerance question:") and last.endswith('xfail={"trace": "reason"}')
    assert "Loosen with" not in wide["message"] and "Would pass with atol" not in wide["message"]

    # The session's totals: items apart from rows (a fixture's call gave one item two rows), wall
    # time apart from the checks' summed time, each what it says.
    session = data["session"]
    assert (session["items"], session["rows"]) == (3, 4)
    assert session["checks_s"] == round(sum(r["timings"]["total_s"] for r in data["results"]), 1)
    assert 0 < session["wall_s"]
    markdown = (tester.path / "out.md").read_text()
    assert (
        f"4 rows from 3 items; {session['wall_s']:.0f} s wall time, the checks' own times sum to "
        f"{session['checks_s']:.0f} s (several run side by side)"
    ) in markdown


SCRIPT = """
import torch
from pytest_torchexport import check


@torch.library.custom_op("numbers_agree::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class UsesOp(torch.nn.Module):
    def forward(self, x):
        return twice(x) + 1


try:
    check(UsesOp().eval(), (torch.randn(3, 4),), backends=["trace"], examples=2)
except AssertionError as failure:  # ExportMismatch, carrying the report
    row = failure.report.results[0]
    print("CAUSE:", row.status, row.likely_cause)
"""


def test_a_model_with_no_test_file_is_not_told_about_the_tests_code(tester):
    """check() from a script: the op exists only where the model's code was imported, not "the test's"."""
    tester.makepyfile(check_script=SCRIPT)
    result = tester.runpython(tester.path / "check_script.py")
    result.stdout.fnmatch_lines(
        ["CAUSE: load_error the model uses *, which exists only while the code that built the model is imported"]
    )
