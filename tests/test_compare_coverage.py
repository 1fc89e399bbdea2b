"""What a row rests on (the report's ``compared``, docs/report.md): how many output elements the verdict
compared, of how many the outputs hold, per leaf kind; a check that compared nothing is not
a pass."""

import json

from helpers import by_test_and_backend, run_with_report

from pytest_torchexport.results.markdown import markdown
from pytest_torchexport.results.report import Report

MODELS = """
import pytest
import torch


class Heads(torch.nn.Module):
    def forward(self, x):
        return {"logits": x * 2, "score": x.sum(-1)}


class Silent(torch.nn.Module):
    def forward(self, x):
        return x * 0


class Nothing(torch.nn.Module):
    def forward(self, x):
        return x[..., :0] * 2  # a (batch, 0) map: no element to compare


class NothingButNone(torch.nn.Module):
    def forward(self, x):
        return {"boxes": x[..., :0] * 2, "aux": None}


@pytest.mark.torchexport(backends=["trace", "export"])
def test_heads():
    Heads()(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["trace", "export"])
def test_silent():
    Silent()(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["trace", "export"])
def test_nothing():
    Nothing()(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["export"])
def test_nothing_but_none():
    NothingButNone()(torch.randn(3, 4))
"""


def test_each_row_says_how_much_it_compared_and_nothing_is_not_a_pass(tester):
    tester.makepyfile(test_models=MODELS)
    result, rows = run_with_report(tester, "-rs", key=by_test_and_backend)
    result.assert_outcomes(passed=4, skipped=3)

    heads = rows["test_heads", "trace"]["compared"]
    assert heads["leaves"] == {"tensors": 2} and heads["elements"] == heads["of"] > 0
    assert heads["inputs"] == rows["test_heads", "trace"]["examples"]
    # A constant output is compared in full: the vacuous_output finding says what it is worth.
    for backend in ("trace", "export"):
        silent = rows["test_silent", backend]
        assert silent["status"] == "pass" and silent["compared"]["elements"] == silent["compared"]["of"] > 0
        assert "vacuous_output" in [f["kind"] for f in silent["findings"]]

    for key in [("test_nothing", "trace"), ("test_nothing", "export"), ("test_nothing_but_none", "export")]:
        row = rows[key]
        assert row["status"] == "skipped", key
        assert row["compared"]["elements"] == 0 and row["compared"]["of"] == 0
        assert row["message"].startswith(f"{key[1]} compared nothing [backend={key[1]}")
    assert rows["test_nothing_but_none", "export"]["compared"]["leaves"] == {"tensors": 1, "skipped": {"None": 1}}
    result.stdout.re_match_lines(
        [r"test_nothing\s+Nothing\s+trace\s+skipped\s+\S+\s+\d+ \(0 el\)", r"\s+trace compared nothing"]
    )

    md = markdown(Report.from_dict(json.loads((tester.path / "out.json").read_text())).results)
    assert any("`test_models.py::test_nothing`" in line and "(0 el)" in line for line in md.splitlines())
    assert not any("test_heads" in line and " el)" in line for line in md.splitlines())
