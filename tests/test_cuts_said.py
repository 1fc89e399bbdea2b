"""Declared bounds are tried, and a cut is said where the person looks.

The memory cap is an absolute allowance (the machine's free memory, or
``--torchexport-memory``), never a multiple of the recorded call: a 24 KB image with
``dims={"h": (16, 128), "w": (16, 128)}`` was searched up to 90 because "the recorded call's
eager run peaked at 0 MB ... capped at 4x", and the cut was said only in the JSON finding.
"""

from __future__ import annotations

import json

TEST_FILE = """
import pytest
import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.torchexport(backends=["trace"], dims={"h": (16, 128), "w": (16, 128)},
                         dynamic={0: {2: "h", 3: "w"}}, examples=3, standalone=False)
def test_image():
    Conv().eval()(torch.randn(2, 3, 32, 32))  # 24 KB
"""


def _row(tester):
    [row] = json.loads((tester.path / "out.json").read_text())["results"]
    return row


def test_declared_bounds_are_tried_and_a_cut_is_one_line_of_the_summary(tester):
    tester.makepyfile(test_image=TEST_FILE)
    # The machine holds the declared range: its max is tried, nothing is cut, nothing said.
    result = tester.runpytest("--torchexport-report=out.json")
    result.assert_outcomes(passed=1)
    row = _row(tester)
    assert row["sizes"] == {"h": [16, 128], "w": [16, 128]}, row["sizes"]
    assert not [f for f in row["findings"] if f["kind"] == "size_budget"]
    assert "size_cut" not in row and "torchexport sizes not tried" not in result.stdout.str()

    # An allowance the declared max does not fit in: the cut is a line of the terminal summary,
    # as well as the row's finding, with the numbers of both from the row.
    result = tester.runpytest("--torchexport-report=out.json", "--torchexport-memory=1MB")
    result.assert_outcomes(passed=1)
    row = _row(tester)
    cut = row["size_cut"]
    assert cut["limit"] == "memory" and set(cut["dims"]) == {"h", "w"}
    tried = cut["dims"]["h"][0]
    assert 32 <= tried < 128 and cut["dims"]["h"][1] == 128
    assert row["sizes"]["h"][1] <= tried
    [finding] = [f for f in row["findings"] if f["kind"] == "size_budget"]
    assert "the memory allowance of 1 MB (--torchexport-memory)" in finding["detail"]
    result.stdout.fnmatch_lines(
        [
            f"torchexport sizes not tried: test_image.py::test_image ?trace?: h above {tried} (declared up to 128), "
            f"w above {tried} (declared up to 128) (the memory limit: --torchexport-memory=SIZE allows more)",
        ]
    )


def test_a_memory_allowance_that_is_not_a_size_is_a_usage_error(tester):
    tester.makepyfile(test_image=TEST_FILE)
    result = tester.runpytest("--torchexport-memory=5x")
    assert result.ret == 4
    result.stderr.fnmatch_lines(['*memory= takes a number of bytes, "512MB", "8GB"*got \'5x\'*'])
