"""special_values=True probes every special value before the random draws.

A defect that shows only at NaN is found on every run, with or without ``CI``; the
probes are bounded (16 per float input, at most 3 inputs) and run at the recorded input.
"""

import functools
import math

import torch
from helpers import checked
from torch import nn

from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.inputs.strategies import PROBE_INPUTS, PROBE_VALUES, materialize, special_probes


class Peak(nn.Module):
    # Python's max(nan, 1.0) is nan, TorchScript's is 1.0: the scripted artifact divides by
    # 1.0 where eager divides by NaN, so they differ at a NaN in x and nowhere else
    # (a NaN filling x is NaN on both sides).
    def forward(self, x):
        peak = x.max().item()
        return x / max(peak, 1.0)


# Local runs (no derandomize) use conftest's not_in_ci fixture.
results = functools.partial(checked, eval_mode=True, examples=3, isolation="inline")


def test_a_nan_only_defect_is_caught_on_every_local_run(not_in_ci):
    # Before the probes, NaN was one random special value among a few random elements:
    # this check (3 examples) caught it on 4 runs of 20 (6 of 10 with 5 examples).
    caught = []
    for _ in range(10):
        r = results(Peak(), (torch.randn(2, 4),), ["script"], special_values=True)["script"]
        caught.append(r.status)
        assert r.failing_example["draw"].endswith("probe: nan in its first element"), r.failing_example
        assert "the special value NaN in the first element of x (a special_values=True probe)" in r.message
    assert caught == ["mismatch"] * 10


def test_without_special_values_nothing_is_probed():
    assert results(Peak(), (torch.randn(2, 4),), ["script"])["script"].status == "pass"


def test_every_special_value_reaches_the_model_before_the_random_draws():
    seen = []

    class Spy(nn.Module):  # eager runs a copy of the module: the list outlives it
        def forward(self, x, y):
            seen.append(x.clone())
            return x * 2 + y

    x, y = torch.randn(3, 4), torch.randn(3, 4)
    r = results(Spy(), (x, y), ["trace"], special_values=True, examples=1)["trace"]  # one random draw
    assert r.status == "pass", r.message
    info = torch.finfo(torch.float32)
    firsts = [t.flatten()[0].item() for t in seen]
    fills = [t for t in seen if (t == t.flatten()[0]).all() or t.isnan().all()]
    for value in (info.max, info.min, info.tiny, math.inf, -math.inf):
        assert value in firsts and any(t.flatten()[0].item() == value for t in fills), value
    assert any(math.isnan(v) for v in firsts) and any(t.isnan().all() for t in seen)
    # Signed zeros, both placements: -0.0 == 0.0, so the sign bit tells them apart.
    assert any(t.flatten()[0].item() == 0 and math.copysign(1, t.flatten()[0].item()) < 0 for t in seen)
    # Alone in one element: the rest of x is the recorded input.
    one = next(t for t in seen if math.isnan(t.flatten()[0].item()) and not t.isnan().all())
    assert torch.equal(one.flatten()[1:], x.flatten()[1:])


def test_probes_are_bounded_and_placed():
    recorded = tuple(torch.randn(2, 3) for _ in range(5)) + (torch.arange(6).reshape(2, 3),)
    plan = plan_inputs(nn.Identity(), recorded, None)
    probes = special_probes(plan)
    assert len(probes) == 2 * len(PROBE_VALUES) * PROBE_INPUTS == 48
    assert {p.probe[0] for p in probes} == {0, 1, 2}  # the first three float inputs; never the int one
    args, _ = materialize(plan, next(p for p in probes if p.probe == (1, "-0.0", "all")))
    assert (args[1] == 0).all() and (torch.signbit(args[1])).all()
    assert torch.equal(args[0], recorded[0])  # the others keep their values
    args, _ = materialize(plan, next(p for p in probes if p.probe == (0, "tiny", "one")))
    assert args[0][0, 0].item() == torch.finfo(torch.float32).tiny
    # A one-element input has no "alone in one element" probe: it would be the fill again.
    single = plan_inputs(nn.Identity(), (torch.randn(1, 1, dtype=torch.float16),), None, dims={"batch": (1, 1)})
    assert [p.probe[2] for p in special_probes(single)] == ["all"] * len(PROBE_VALUES)
    args, _ = materialize(single, next(p for p in special_probes(single) if p.probe[1] == "max"))
    assert args[0].item() == torch.finfo(torch.float16).max
