"""Findings worth reading.

- A value formatted into an assert's or a raise's message (timm's
  ``_assert(H == ..., f"Input height ({H}) ...")``) is validation, not computation: no
  ``frozen_value`` for it, as torch's own validation ``if``s already have none.
- On a passing row the finding that breaks another input (a size the artifact
  fails at, a frozen branch or size) comes before one that may matter on other values only.
- The terminal summary never prints two different items alike at 80 columns.
"""

import pytest
from helpers import run_with_report

from pytest_torchexport.results.report import Finding, Result
from pytest_torchexport.results.table import summary_lines

VALIDATION = """
import pytest
import torch
from torch import nn


class Patch(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 2, stride=2)

    def forward(self, x):
        B, C, H, W = x.shape
        torch._assert(H % 2 == 0, f"Input height ({H}) must be even.")
        return self.proj(x).flatten(2)


class Columns(nn.Module):
    def forward(self, x):
        k = x.new_ones(()).item()  # a value frozen into the trace, the same on every input
        out = x * k
        return torch.stack([out[:, i] * (i + 1) for i in range(x.shape[1])], 1)  # unrolled at 4 columns


@pytest.mark.torchexport(backends=["trace"], dims={"batch": (1, 4)})
def test_patch():
    Patch().eval()(torch.randn(2, 3, 8, 8))


@pytest.mark.torchexport(backends=["trace"], dims={"batch": (1, 4)})
def test_columns():
    Columns()(torch.randn(2, 4))
"""


def test_a_value_in_an_assert_message_is_no_finding(tester):
    tester.makepyfile(test_v=VALIDATION)
    result, rows = run_with_report(tester, "-k", "patch")
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    assert row["status"] == "pass"
    # Before: "trace froze a value inside torch's Tensor.__format__ ..., reached from test_v.py:13 (`torch._assert(...`"
    assert [f for f in row["findings"] if f["kind"] in ("frozen_value", "baked_shape")] == [], row["findings"]


def test_on_a_pass_what_breaks_another_size_comes_first(tester):
    tester.makepyfile(test_v=VALIDATION)
    result, rows = run_with_report(tester, "-k", "columns")
    result.assert_outcomes(passed=1)
    row = rows["trace"]
    kinds = [f["kind"] for f in row["findings"]]
    assert "frozen_value" in kinds and "static_size" in kinds, kinds
    assert kinds[0] == "static_size", kinds  # before: frozen_value (appended first, at export)
    result.stdout.re_match_lines([r"test_columns\s+Columns\s+trace\s+pass\s+.*", r"\s+static_size$"])


def test_the_cause_cell_of_a_pass_is_its_most_consequential_finding():
    row = Result(
        backend="trace",
        device="cpu",
        status="pass",
        module="VisionTransformer",
        findings=[
            Finding("frozen_value", "an f-string", "patch_embed.py:126"),
            Finding("frozen_branch", "breaks 176 and 320", "pos_embed.py:31"),
        ],
    )
    assert row.cause == "frozen_branch pos_embed.py:31"
    assert [f["kind"] for f in row.to_dict()["findings"]] == ["frozen_branch", "frozen_value"]
    failing = Result(backend="trace", device="cpu", status="mismatch", module="M", findings=list(row.findings[::-1]))
    # A failure's findings keep the order its message explains them in.
    assert [f["kind"] for f in failing.to_dict()["findings"]] == ["frozen_branch", "frozen_value"]


@pytest.mark.parametrize(
    "names",
    [
        ("test_model_forward_fx_torchscript[1-test_resnet]", "test_model_forward_torchscript[1-test_resnet]"),
        (
            "test_model_forward_intermediates_fx[1-test_resnet]",
            "test_model_forward_intermediates[1-test_resnet]",
            "test_model_default_cfgs_non_std_at[1-test_resnet]",
        ),
        ("TestSuite::test_a_very_long_method_name_x[cfg1]", "TestSuite::test_a_very_long_method_name_y[cfg1]"),
    ],
)
def test_no_two_items_print_alike_at_80_columns(names):
    results = [
        Result(
            backend="trace",
            device="cpu",
            status=status,
            module="ResNet",
            nodeid=f"tests/test_models.py::{name[:-1]}-torchexport-trace]",
        )
        for name, status in zip(names, ["mismatch", "pass", "pass"])
    ]
    lines = summary_lines(results, width=80)[1:]
    firsts = [line.split()[0] for line in lines]
    assert len(set(firsts)) == len(names), lines
    assert all(len(line) <= 80 for line in lines), lines
