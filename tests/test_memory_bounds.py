"""Bounded memory (an absolute allowance, never a multiple of the
recorded call): drawn sizes within what the machine holds, and
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
from pytest_torchexport.options import SIZE_LIMITS_ENV, Options
from pytest_torchexport.reference.eager import EagerCall
from pytest_torchexport.results.report import Result
from pytest_torchexport.stages import budget

MB = 2**20
GB = 2**30


class Head(torch.nn.Module):
    def forward(self, x):
        return x


def _plan(shape, **kw):
    return plan_inputs(Head(), (torch.zeros(shape),), None, **kw)


def _call(out, peak_mb=None):
    return EagerCall(out, ((), {}), None, seconds=0.001, peak_bytes=None if peak_mb is None else int(peak_mb * MB))


def _bound(plan, out, available, peak_mb=None, **options):
    result = Result(backend="trace", device="cpu", status="pass")
    capped, _ = budget.bound(
        plan, plan.tree, _call(out, peak_mb), result, Options.build(**options), machine=budget.Machine(available, 1, 1)
    )
    return capped, result


def test_small_calls_are_never_capped():
    plan = _plan((2, 16))
    capped, result = _bound(plan, torch.zeros(2, 16), 2 * GB)
    assert capped is plan and not result.findings


def test_a_large_recorded_output_is_capped_only_where_the_machine_cannot_hold_it():
    plan = _plan((2, 8))  # batch drawn up to 16 by default: 8x the recorded one
    big = torch.zeros(2, 2**25)  # a 268 MB output
    # 64 GB: half of it holds two drawn calls at 8x; no multiple of the recorded call caps it.
    assert _bound(plan, big, 64 * GB)[0] is plan
    # 4 GB: 2 GB for two calls of 256 MB each grown: 4x, batch to 8.
    capped, result = _bound(plan, big, 4 * GB)
    assert capped.caps == {"batch": 8} and result.extra["budget_limit"] == "memory"
    assert result.extra["size_cut"] == {
        "limit": "memory",
        "dims": {"batch": [8, 16]},
        "lift": "--torchexport-memory=SIZE allows more",
    }
    # The option is an absolute allowance: 1 GB for two calls of 256 MB is 2x, batch to 4.
    capped, result = _bound(plan, big, 64 * GB, memory="1GB")
    assert capped.caps == {"batch": 4} and result.extra["memory_budget_mb"] == 1024
    assert "the memory allowance of 1.0 GB (--torchexport-memory)" in result.findings[0].detail
    assert _bound(plan, big, 4 * GB, memory="off")[0] is plan


def test_drawn_batch_never_exceeds_the_cap():
    plan = _plan((2, 8))
    capped, result = _bound(plan, torch.zeros(2, 2**25), 4 * GB)
    cap = capped.caps["batch"]
    assert cap == 8 and plan.dims["batch"].max == 16  # the export range is untouched
    assert [f.kind for f in result.findings] == ["size_budget"]
    assert "batch to 8 (of 16)" in result.findings[0].detail

    assert_draws_within(capped, "batch", cap, examples=200)


def test_declared_dims_are_clipped_and_a_sequence_counts_squared():
    x = torch.zeros(1, 1024, dtype=torch.int64)
    plan = plan_inputs(
        Head(), (x,), None, dims={"batch": (1, 16), "seq": (1, 8192)}, dynamic={0: {0: "batch", 1: "seq"}}
    )
    caps = budget.growth_caps(plan, 4.0)
    # batch counts once, seq twice: batch_ratio * seq_ratio**2 <= 4
    ratio = caps["batch"] * (caps["seq"] / 1024) ** 2
    assert ratio <= 4.0 + 1e-9 and caps["seq"] >= 1024


def test_budget_can_be_disabled(monkeypatch):
    monkeypatch.setenv(SIZE_LIMITS_ENV, "off")
    plan = _plan((2, 8))
    assert _bound(plan, torch.zeros(2, 2**25), 1 * GB)[0] is plan


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
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, str(driver), case, backends], capture_output=True, text=True, env=env, timeout=600
    )
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
