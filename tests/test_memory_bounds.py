"""Bounded memory (issue 9, item 4): drawn sizes within a budget from the recorded call, and
whole checks on a 268 MB output and a (1, 1024)-token transformer within their RSS bounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import assert_draws_within

from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.results.report import Result
from pytest_torchexport.stages import budget

MB = 2**20


class Head(torch.nn.Module):
    def forward(self, x):
        return x


def _plan(shape, **kw):
    return plan_inputs(Head(), (torch.zeros(shape),), None, **kw)


def test_small_calls_are_never_capped():
    plan = _plan((2, 16))
    assert budget.size_caps(plan, budget.nbytes(plan.args)) == {}


def test_a_large_recorded_output_caps_the_batch_at_the_factor():
    plan = _plan((2, 8))  # batch drawn up to 16 by default: 8x the recorded one
    caps = budget.size_caps(plan, 268 * MB)
    assert caps == {"batch": int(2 * budget.MEMORY_FACTOR)}


def test_drawn_batch_never_exceeds_the_cap():
    plan = _plan((2, 8))
    result = Result(backend="trace", device="cpu", status="pass")
    capped = budget.apply(plan, plan.tree, torch.zeros(2, 2**25), result)  # a 268 MB output
    cap = capped.caps["batch"]
    assert cap == 8 and plan.dims["batch"].max == 16  # the export range is untouched
    assert [f.kind for f in result.findings] == ["size_budget"]
    assert "batch to 8 (of 16)" in result.findings[0].detail

    assert_draws_within(capped, "batch", cap, examples=200)


def test_declared_dims_are_clipped_and_a_sequence_counts_squared():
    x = torch.zeros(1, 1024, dtype=torch.int64)
    plan = plan_inputs(Head(), (x,), None, dims={"batch": (1, 16), "seq": (1, 8192)},
                       dynamic={0: {0: "batch", 1: "seq"}})
    caps = budget.size_caps(plan, 100 * MB)
    # batch counts once, seq twice: batch_ratio * seq_ratio**2 <= 4
    ratio = caps["batch"] * (caps["seq"] / 1024) ** 2
    assert ratio <= budget.MEMORY_FACTOR + 1e-9 and caps["seq"] >= 1024


def test_budget_can_be_disabled(monkeypatch):
    monkeypatch.setenv(budget.OFF_ENV, "off")
    assert budget.size_caps(_plan((2, 8)), 268 * MB) == {}


# -- whole checks, each in its own interpreter so its peak RSS is its own ---------------------

DRIVER = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch import nn
    from pytest_torchexport import check

    torch.manual_seed(0)

    class SegHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 4096)

        def forward(self, x):
            return torch.relu(self.proj(x))

    class TinyEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(1000, 512)
            layer = nn.TransformerEncoderLayer(512, 8, dim_feedforward=2048, batch_first=True, dropout=0.0)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, ids):
            return self.encoder(self.embed(ids))

    case, backends = sys.argv[1], sys.argv[2].split(",")
    if case == "segmentation":
        module, args = SegHead(), (torch.randn(4, 64, 64, 8),)
    else:
        module, args = TinyEncoder(), (torch.randint(0, 1000, (1, 1024)),)
    report = check(module, args, backends=backends, examples=3, seed=0)
    print(json.dumps({
        "statuses": [r.status for r in report.results],
        "parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))
    """
)


def _run_case(case: str, backends: str, tmp_path: Path) -> dict:
    driver = tmp_path / "driver.py"  # a file, not ``-c``: the script backend reads the source
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(driver), case, backends], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_segmentation_sized_output_passes_under_6_gb(tmp_path):
    r = _run_case("segmentation", "trace,onnx", tmp_path)
    assert r["statuses"] == ["pass", "pass"]
    assert max(r["parent_mb"], r["child_mb"]) < 6 * 1024, r


@pytest.mark.slow
def test_transformer_on_1024_tokens_passes_under_4_gb(tmp_path):
    r = _run_case("transformer", "trace,export", tmp_path)
    assert r["statuses"] == ["pass", "pass"]
    assert max(r["parent_mb"], r["child_mb"]) < 4 * 1024, r
