"""The measured budget: eager's peak memory on the recorded call bounds the drawn sizes, its time
the drawn examples (never a dim's bounds); small models keep their range."""

from __future__ import annotations

import sys
import time

import pytest
import torch
from helpers import assert_draws_within

from pytest_torchexport import check
from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.options import SIZE_LIMITS_ENV, Options
from pytest_torchexport.reference.eager import Eager, EagerCall, Footprint
from pytest_torchexport.results.report import Result
from pytest_torchexport.stages import budget

MB = 2**20
GB = 2**30
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc")


class Head(torch.nn.Module):
    def forward(self, x):
        return x * 2


class Transient(torch.nn.Module):
    """Holds 32 MB per batch element while it runs and returns a small output, as a vector
    quantizer's distance matrix does: the bytes budget sees only the small input and output."""

    def forward(self, x):
        scratch = x.new_ones(x.shape[0], 8 * MB)  # float32: 32 MB per batch element, touched
        return x + scratch.sum(1, keepdim=True) * 0


def _plan(shape=(2, 8), **kw):
    return plan_inputs(Head(), (torch.zeros(shape),), None, **kw)


def _call(peak_mb=None, seconds=0.001, out=None):
    out = torch.zeros(2, 8) if out is None else out
    return EagerCall(out, ((), {}), None, seconds=seconds, peak_bytes=None if peak_mb is None else int(peak_mb * MB))


def _result():
    return Result(backend="trace", device="cpu", status="pass")


# -- the measurement ------------------------------------------------------------------------


class KeepsFeatures(torch.nn.Module):
    """Keeps every layer's output for a concatenation at the end, as DenseNet does: many
    blocks of a few MB each, which glibc serves from (and returns to) its heap."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Conv3d(8, 8, 3, padding=1) for _ in range(6))

    def forward(self, x):
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return torch.cat(features, 1).mean()


@linux_only
def test_footprint_sees_a_replay_of_a_call_whose_blocks_the_heap_kept():
    """[Freed Memory] The replay follows the test body's own call of the same forward, whose
    freed blocks glibc kept: measured as they were, the replay grew the process by 9 MB of its
    21 (MONAI's DenseNet169 3-D: 0.1 MB), so no limit ever saw it."""
    model = KeepsFeatures().eval()
    x = torch.randn(2, 8, 24, 32, 32)  # six 1.5 MB features, their 9 MB concatenation
    with torch.no_grad():
        model(x)  # the test body's call
        fp = Footprint()
        fp.start()
        model(x)
        peak = fp.stop()
    assert peak is not None and peak >= 17 * MB, peak / MB


def test_what_the_recorded_call_held_is_a_cost_never_a_cap():
    """Before: a call that held 40 MB was held to 4x it (batch 8 of 16) on a 64 GB machine;
    the allowance is absolute, so the declared range is drawn where the machine holds it."""
    plan, options = _plan(), Options.build()
    result = _result()
    capped, _ = budget.bound(plan, plan.tree, _call(peak_mb=40), result, options, machine=budget.Machine(64 * GB, 1, 1))
    assert capped is plan and not result.findings and "size_cut" not in result.extra
    assert result.extra["memory_budget_mb"] == 32 * 1024  # half of the 64 GB each check has


@linux_only
def test_footprint_sees_a_transient_allocation():
    fp = Footprint()
    fp.start()
    torch.ones(64 * MB // 4).sum()  # 64 MB, freed before stop()
    peak = fp.stop()
    assert peak is not None and 60 * MB <= peak <= 100 * MB


def test_only_the_recorded_calls_replay_is_measured():
    eager = Eager(Transient(), "cpu")
    args = (torch.zeros(1, 4),)
    first = eager(args, {}, trace_lines=True, restore=False)  # as engine/pipeline.py replays the recorded call
    drawn = eager(args, {}, trace_lines=True)  # as the search calls it
    assert first.seconds > 0 and drawn.seconds > 0
    assert drawn.peak_bytes is None  # resetting the high-water mark each call would blind the others
    if sys.platform.startswith("linux"):
        assert first.peak_bytes is not None and first.peak_bytes >= 30 * MB
    assert eager(args, {}, measure=True).peak_bytes is not None or not sys.platform.startswith("linux")


# -- the prediction math --------------------------------------------------------------------


def test_memory_limit_shares_the_machine_among_workers_and_checks():
    machine = budget.Machine(available=8 * GB, workers=2, checks=2)
    assert machine.per_check == 2 * GB
    limit = budget.memory_limit(256 * MB, budget.allowance(Options.build(), machine))
    # Half of 2 GB for two drawn calls of 256 MB each: 2x the recorded call.
    assert limit.growth == pytest.approx(budget.MEMORY_SHARE * 2 * GB / (budget.PEAK_FACTOR * 256 * MB))
    assert limit.growth == pytest.approx(2.0)
    assert "peaked at 256 MB" in limit.why and "2 xdist workers / 2 checks side by side" in limit.why


def test_memory_limit_never_below_the_floor_and_absent_without_a_measurement():
    tiny_machine = budget.Machine(available=10 * MB)
    allowed = budget.allowance(None, tiny_machine)
    assert budget.memory_limit(1 * MB, allowed).growth == pytest.approx(budget.MEMORY_FLOOR / (budget.PEAK_FACTOR * MB))
    assert budget.memory_limit(None, allowed) is None
    assert budget.memory_limit(0, allowed) is None
    assert budget.allowance(None, budget.Machine(available=None)) is None
    # The option is taken as given, below the floor too, and "off" allows anything.
    assert budget.allowance(Options.build(memory="1MB"), tiny_machine)[0] == MB
    assert budget.allowance(Options.build(memory="off"), tiny_machine) is None


def test_time_limit_counts_every_call_of_the_model():
    plan, options = _plan(), Options.build(examples=10, timeout=200)
    explicit = budget.explicit_calls(plan, options)
    limit = budget.time_limit(0.5, plan, options)
    allowance = budget.TIME_SHARE * 200  # 100 s: 200 calls of 0.5 s
    fixed = budget.FIXED_CALLS + budget.CALLS_PER_EXAMPLE * explicit
    assert limit.growth == pytest.approx((allowance / 0.5 - fixed) / (budget.CALLS_PER_EXAMPLE * 10))
    assert "took 0.50 s" in limit.why and "200 s time limit" in limit.why
    # Fewer calls fit than the recorded size needs: the examples that do (at least one).
    assert budget.examples_within(0.5, plan, options) == min(10, int((allowance / 0.5 - fixed) / 2))
    assert budget.examples_within(1000.0, plan, options) == 1


def test_time_limit_has_a_floor_for_short_timeouts():
    plan, options = _plan(), Options.build(examples=10, timeout=2)
    # 2 s timeout: the allowance is TIME_FLOOR, not 1 s, so a fast model keeps its range.
    assert budget.time_limit(0.001, plan, options).growth > budget.full_growth(plan)


def test_special_values_count_as_explicit_calls():
    plan = _plan()
    plain = budget.explicit_calls(plan, Options.build())
    assert budget.explicit_calls(plan, Options.build(special_values=True)) > plain >= 3


def test_tightest_limit_rules_and_every_draw_stays_within_it():
    plan, options = _plan(), Options.build(examples=10)
    result = _result()
    # 1 GB peak on a 16 GB machine with 2 checks: half of 8 GB over 2 GB a draw -> growth 2.
    capped, opts = budget.bound(
        plan, plan.tree, _call(peak_mb=1024), result, options, machine=budget.Machine(16 * GB, 1, 2)
    )
    cap = capped.caps["batch"]
    assert cap == 4 and plan.dims["batch"].max == 16  # recorded 2, growth 2; the export range untouched
    assert opts.examples == 10
    assert result.extra["budget_limit"] == "memory" and result.extra["eager_peak_mb"] == 1024
    [finding] = result.findings
    assert finding.kind == "size_budget"
    assert "peaked at 1.0 GB (measured)" in finding.detail and "batch to 4 (of 16)" in finding.detail
    assert "8.0 GB each check has here" in finding.detail and "TORCHEXPORT_JOBS=1" in finding.detail

    assert_draws_within(capped, "batch", cap, examples=100)


def test_a_seq_dim_counts_squared_in_the_measured_limits_too():
    x = torch.zeros(1, 64, dtype=torch.int64)
    plan = plan_inputs(
        Head(), (x,), None, dims={"batch": (1, 16), "seq": (1, 1024)}, dynamic={0: {0: "batch", 1: "seq"}}
    )
    result = _result()
    capped, _ = budget.bound(
        plan, plan.tree, _call(peak_mb=512), result, Options.build(), machine=budget.Machine(8 * GB, 1, 1)
    )
    growth = budget.MEMORY_SHARE * 8 * GB / (budget.PEAK_FACTOR * 512 * MB)  # 4
    assert capped.caps["batch"] * (capped.caps["seq"] / 64) ** 2 <= growth + 1e-9


def test_past_the_time_limit_at_the_recorded_size_the_examples_are_cut():
    plan, options = _plan(), Options.build(examples=25, timeout=900)
    result = _result()
    # 19 s a call (a real vector quantizer's time): not even the probes fit in 450 s.
    capped, opts = budget.bound(plan, plan.tree, _call(seconds=19.0), result, options, machine=budget.Machine(16 * GB))
    # A time estimate cuts the examples, never the sizes: each dim's bounds are still tried (memory alone caps them)
    assert not capped.caps and "size_caps" not in result.extra
    assert opts.examples == 1 and result.extra["examples_cap"] == 1
    assert options.examples == 25  # the caller's options are not changed
    [finding] = result.findings
    assert result.extra["budget_limit"] == "time"
    assert "took 19.00 s (measured)" in finding.detail and "examples cut to 1 (of 25)" in finding.detail
    assert "Raise timeout=" in finding.detail


def test_small_models_keep_their_whole_range():
    plan, options = _plan(), Options.build()
    result = _result()
    capped, opts = budget.bound(
        plan, plan.tree, _call(peak_mb=2, seconds=0.002), result, options, machine=budget.Machine(2 * GB, 4, 1)
    )  # even a small, busy machine
    assert capped is plan and opts is options
    assert not result.findings and "size_caps" not in result.extra
    assert result.extra["eager_peak_mb"] == 2 and result.extra["eager_s"] == 0.002


def test_bytes_in_and_out_count_where_they_exceed_the_peak_and_the_budget_can_be_disabled(monkeypatch):
    plan, options = _plan(), Options.build()
    result = _result()
    big_out = torch.zeros(2, 2**25)  # 268 MB output, 10 MB measured: the output is what a call holds
    capped, _ = budget.bound(
        plan, plan.tree, _call(peak_mb=10, out=big_out), result, options, machine=budget.Machine(4 * GB, 1, 1)
    )
    assert capped.caps == {"batch": 8} and result.extra["budget_limit"] == "memory"
    assert "holds 256 MB (its tensors in and out)" in result.findings[0].detail
    monkeypatch.setenv(SIZE_LIMITS_ENV, "off")
    result = _result()
    assert budget.bound(plan, plan.tree, _call(peak_mb=10**5, seconds=100.0), result, options)[0] is plan
    assert not result.findings and result.extra["eager_peak_mb"] == 10**5  # still measured and recorded


def test_machine_here_reads_workers_and_side_by_side_checks(monkeypatch):
    from pytest_torchexport.isolation import runner

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    monkeypatch.setattr(runner, "parallel_checks", lambda: 2)
    monkeypatch.setattr(budget, "_mem_available", lambda: 12 * GB)
    machine = budget.Machine.here()
    assert (machine.workers, machine.checks, machine.per_check) == (3, 2, 2 * GB)


# -- whole checks ---------------------------------------------------------------------------


def test_a_small_models_check_is_measured_and_never_capped():
    report = check(Head(), (torch.randn(2, 8),), backends=["trace"], examples=3, seed=0)
    r = report.results[0]
    assert r.status == "pass"
    assert not [f for f in r.findings if f.kind == "size_budget"] and "size_caps" not in r.extra
    if sys.platform.startswith("linux"):
        assert r.extra["eager_peak_mb"] < 64


@linux_only
def test_a_check_whose_forward_holds_more_than_it_returns_is_capped(monkeypatch):
    # 64 MB held at the recorded batch 2, 2 MB in and out; a 512 MB machine for one check:
    # half of it over two drawn calls' peaks allows 2x the recorded call, so batch <= 4.
    monkeypatch.setattr(budget.Machine, "here", classmethod(lambda cls, device="cpu": cls(512 * MB, 1, 1)))
    report = check(Transient(), (torch.randn(2, 8),), backends=["trace"], examples=3, seed=0)
    r = report.results[0]
    assert r.status == "pass", r.message
    assert 60 <= r.extra["eager_peak_mb"] <= 100
    assert r.extra["budget_limit"] == "memory" and 2 <= r.extra["size_caps"]["batch"] <= 4
    [finding] = [f for f in r.findings if f.kind == "size_budget"]
    assert "(measured)" in finding.detail and "0.5 GB each check has here" in finding.detail


def test_a_check_past_its_time_allowance_runs_fewer_examples(monkeypatch):
    monkeypatch.setattr(budget, "TIME_FLOOR", 0.0)
    monkeypatch.setattr(budget, "TIME_SHARE", 1e-9)  # no call fits: as a model slower than its timeout allows
    report = check(Head(), (torch.randn(2, 8),), backends=["trace"], examples=6, seed=0)
    r = report.results[0]
    assert r.status == "pass", r.message
    assert r.extra["examples_cap"] == 1 and "size_caps" not in r.extra
    assert r.extra["sizes"]["batch"] == [1, 16]  # the bounds are tried all the same
    assert r.examples <= budget.explicit_calls(plan_inputs(Head(), (torch.randn(2, 8),), None), Options.build()) + 1
    [finding] = [f for f in r.findings if f.kind == "size_budget"]
    assert "examples cut to 1 (of 6)" in finding.detail


class Sleeps(torch.nn.Module):
    """Eager's call takes at least SLEEP seconds, whatever the machine."""

    SLEEP = 0.05

    def forward(self, x):
        time.sleep(self.SLEEP)
        return x * 2


def test_eager_s_is_the_recorded_calls_own_time():
    # A lower bound the clock cannot break: eager_s measures the call, not a constant or nothing.
    r = check(Sleeps(), (torch.randn(2, 8),), backends=["trace"], examples=2, seed=0).results[0]
    assert r.status == "pass"
    assert r.extra["eager_s"] >= Sleeps.SLEEP, r.extra
