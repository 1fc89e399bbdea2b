"""Stateful modules: eager and every artifact start each example from the same state."""

import pytest
import torch
from helpers import run_with_report
from models import source
from torch import nn

from pytest_torchexport import ExportMismatch, check
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options


class RunningSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x):
        self.total.add_(x.sum(0))
        return x * 2 + self.total


RUNNING_SUM = (
    source(RunningSum)
    + """


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx", "onnx-legacy"])
def test_running_sum():
    RunningSum().eval()(torch.randn(3, 4))
"""
)


def test_faithful_artifacts_pass_and_dropped_updates_name_the_buffer(tester):
    tester.makepyfile(test_state=RUNNING_SUM)
    result, rows = run_with_report(tester, "-rA")
    statuses = {name: r["status"] for name, r in rows.items()}
    # trace, script and export carry the update (and save/load keeps it exactly): no
    # roundtrip_mismatch, and the trace's own export run does not leak into its state.
    assert statuses == {
        "trace": "pass",
        "script": "pass",
        "export": "pass",
        "onnx": "mismatch",
        "onnx-legacy": "mismatch",
    }
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


class Acc(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(4))

    def forward(self, x):
        self.acc += x
        out = self.acc * 2
        self.acc = self.acc * self.acc
        return out


ONE_CALL = (
    source(Acc)
    + """


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx", "onnx-legacy"])
def test_acc():
    Acc().eval()(torch.randn(4))  # called once
"""
)


def test_one_call_that_updates_a_buffer_is_replayed(tester):
    # Called once, the buffer update still decides the deployed model's second call: eager
    # and each artifact are called again from the state as called. ONNX keeps no state, so
    # both exporters lose the update (a mismatch naming the buffer and the call); script and
    # export carry it, and their round trip is judged from the same state (no roundtrip flag).
    tester.makepyfile(test_acc=ONE_CALL)
    result, rows = run_with_report(tester)
    assert {name: r["status"] for name, r in rows.items()} == {
        "trace": "mismatch",
        "script": "pass",
        "export": "pass",
        "onnx": "mismatch",
        "onnx-legacy": "mismatch",
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


class SquaredAcc(nn.Module):
    """Adds the input's sum to acc, then squares it: an update an artifact without state drops."""

    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(4))

    def forward(self, x):
        self.acc += x.sum(0)
        self.acc = self.acc * self.acc
        return x + self.acc


NO_OP_AT_THE_RECORDED_CALL = (
    source(SquaredAcc)
    + """


@pytest.mark.torchexport(backends=["onnx", "export"])
def test_acc():
    SquaredAcc().eval()(torch.zeros(3, 4))  # on zeros the update is a no-op: acc stays 0
"""
)


def test_state_is_compared_after_every_input_not_only_the_recorded_call(tester):
    # [State After Every Input] The recorded call leaves acc at 0, so the prelude sees no state
    # change; a drawn input does change it. ONNX keeps no buffers: its second call on that input
    # differs from eager's, a side-effects mismatch naming acc. export keeps the update, and its
    # loaded and in-memory artifacts start every input from the same state: a pass, not a
    # roundtrip_mismatch (as it was when each was called a different number of times).
    tester.makepyfile(test_acc=NO_OP_AT_THE_RECORDED_CALL)
    result, rows = run_with_report(tester)
    assert {name: r["status"] for name, r in rows.items()} == {"onnx": "mismatch", "export": "pass"}, rows
    onnx = rows["onnx"]
    assert onnx["message"].startswith("Side effects differ from eager [backend=onnx, device=cpu] (SquaredAcc)")
    assert "forward updates acc on this input (the recorded call left it unchanged)" in onnx["message"]
    assert "State compared: acc (second call)" in onnx["message"]
    assert onnx["cause_kind"] == "side_effects"
    assert onnx["max_abs_err"] > 0.1
    assert any(f["kind"] == "side_effects" and "acc" in f["detail"] for f in onnx["findings"])
    assert not any(f["kind"] == "side_effects" for f in rows["export"]["findings"])
    assert rows["export"]["examples"] >= 5
    for row in rows.values():
        assert any(
            f["kind"] == "mutates_state" and "not at the recorded call: acc" in f["detail"] for f in row["findings"]
        )
    result.assert_outcomes(passed=1, failed=1)


class Frozen(nn.Module):
    """The artifact: the same outputs on one call from the initial state, its buffer never updated."""

    def __init__(self):
        super().__init__()
        self.register_buffer("acc", torch.zeros(4))

    def forward(self, x):
        new = (self.acc + x.sum(0)) ** 2
        return x + new


def test_a_module_artifact_is_judged_by_its_buffers():
    # The artifact has a buffer of the updated name: its value after the input is compared with
    # eager's, so no second call is needed to see the update was dropped.
    from helpers import Pickled

    class Dropping(Pickled):
        name = "dropping"

        def export(self, module, args, kwargs, ctx):
            return Frozen()

    with pytest.raises(ExportMismatch) as raised:
        check(SquaredAcc().eval(), (torch.zeros(2, 4),), backends=[Dropping()], examples=6)
    (row,) = raised.value.report.results
    assert row.status == "mismatch", row.message
    assert "State compared: acc (buffers)" in row.message
    assert "the dropping artifact's buffers after the input differ from eager's" in row.message


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.register_buffer("scale", torch.full((4,), 2.0))

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale


STATELESS = (
    source(Net)
    + """


@pytest.mark.torchexport(backends=["onnx", "export", "trace"])
def test_net():
    torch.manual_seed(0)
    Net().eval()(torch.randn(3, 4))
"""
)


def test_a_module_whose_buffers_no_input_changes_keeps_its_verdicts(tester):
    # Buffers (BatchNorm's running statistics, a constant) that no input changes: no state is
    # compared, no state finding, every backend passes.
    tester.makepyfile(test_net=STATELESS)
    result, rows = run_with_report(tester)
    assert {name: r["status"] for name, r in rows.items()} == {"onnx": "pass", "export": "pass", "trace": "pass"}
    for row in rows.values():
        assert not any(f["kind"] in ("mutates_state", "side_effects") for f in row["findings"]), row["findings"]
        assert row["examples"] >= 5
    result.assert_outcomes(passed=3)
