"""Stateful modules: eager and every artifact start each example from the same state."""

import torch
from helpers import run_with_report
from torch import nn

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options

RUNNING_SUM = """
import pytest
import torch
from torch import nn


class RunningSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x):
        self.total.add_(x.sum(0))
        return x * 2 + self.total


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx", "onnx-legacy"])
def test_running_sum():
    RunningSum().eval()(torch.randn(3, 4))
"""


def test_faithful_artifacts_pass_and_dropped_updates_name_the_buffer(tester):
    tester.makepyfile(test_state=RUNNING_SUM)
    result, rows = run_with_report(tester, "-rA")
    statuses = {name: r["status"] for name, r in rows.items()}
    # trace, script and export carry the update (and save/load keeps it exactly): no
    # roundtrip_mismatch, and the trace's own export run does not leak into its state.
    assert statuses == {"trace": "pass", "script": "pass", "export": "pass", "onnx": "mismatch", "onnx-legacy": "mismatch"}
    for name in ("onnx", "onnx-legacy"):
        message = rows[name]["message"]
        assert message.startswith(f"Side effects differ from eager [backend={name}, device=cpu]")
        # Either the update is dropped, or the export run's update was baked in as the start.
        assert "does not carry the update of total" in message or "starts from other values of total" in message
        assert any(f["kind"] == "side_effects" and "total" in f["detail"] for f in rows[name]["findings"])
    assert all(any(f["kind"] == "mutates_state" for f in r["findings"]) for r in rows.values())
    result.assert_outcomes(passed=3, failed=2)


class Steps(nn.Module):
    """A step counter: the output depends on how many calls came before."""

    def __init__(self):
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.steps += 1
        return x * self.steps


def test_every_example_starts_from_the_initial_state():
    opts = Options.build(backends=["trace", "script"], examples=8, roundtrip=True)
    module = Steps().eval()
    report = run(module, (torch.randn(2, 3),), None, opts, Session())
    for r in report.results:
        assert r.status == "pass", r.message
        assert r.examples >= 8
    assert int(module.steps) == 0  # the user's module is never touched


ONE_CALL = """
import pytest
import torch
from torch import nn


class Acc(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(4))

    def forward(self, x):
        self.acc += x
        out = self.acc * 2
        self.acc = self.acc * self.acc
        return out


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx", "onnx-legacy"])
def test_acc():
    Acc().eval()(torch.randn(4))  # called once
"""


def test_one_call_that_updates_a_buffer_is_replayed(tester):
    # Called once, the buffer update still decides the deployed model's second call: eager
    # and each artifact are called again from the state as called. ONNX keeps no state, so
    # both exporters lose the update (a mismatch naming the buffer and the call); script and
    # export carry it, and their round trip is judged from the same state (no roundtrip flag).
    tester.makepyfile(test_acc=ONE_CALL)
    result, rows = run_with_report(tester)
    assert {name: r["status"] for name, r in rows.items()} == {
        "trace": "mismatch", "script": "pass", "export": "pass", "onnx": "mismatch", "onnx-legacy": "mismatch",
    }
    for name in ("onnx", "onnx-legacy", "trace"):
        message = rows[name]["message"]
        assert message.startswith(f"Side effects differ from eager [backend={name}, device=cpu] (Acc)")
        assert "forward updates acc on every call" in message
        # The call named: the second one (the update dropped) or the first (the export run's update kept).
        assert "after 2 calls on the same input" in message or "on the first call already" in message
    assert "does not carry the update of acc" in rows["onnx"]["message"]
    for name in ("script", "export"):
        assert not any(f["kind"] == "side_effects" for f in rows[name]["findings"])
        assert "roundtrip" not in rows[name]["message"]
    result.assert_outcomes(passed=2, failed=3)
