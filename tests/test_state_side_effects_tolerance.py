"""The side-effect checks judge the artifact's outputs as the search does: with the check's
``rtol``/``atol`` and its ``compare=``, not with the default tolerances."""

import copy

import pytest
import torch

from pytest_torchexport import check
from pytest_torchexport.backends.base import Backend
from pytest_torchexport.errors import ExportMismatch

NUDGE = 1e-3  # beyond float32's default tolerances, within atol=1e-2


class Nudged(Backend):
    """The module itself as its artifact (so it carries its state), every output off by NUDGE:
    the numerics of a backend that re-lowers, without an exporter's cost."""

    name = "nudged"
    saveable = False

    def export(self, module, args, kwargs, ctx):
        return copy.deepcopy(module)

    def run(self, artifact, args, kwargs):
        return artifact(*args, **kwargs) + NUDGE


class Counter(torch.nn.Module):
    """Updates a buffer on every call: the artifact is replayed call after call beside eager."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.lin(x) + self.calls


class Scaled(torch.nn.Module):
    """A Python scalar argument: the artifact is called with another value to see it is not baked in."""

    def forward(self, x, scale: float = 2.0):
        return x * scale


def _check(model, args, **options):
    options = {"backends": [Nudged()], "examples": 3, "seed": 0, "isolation": "inline", **options}
    try:
        return check(model, args, **options).results[0]
    except ExportMismatch as exc:
        return exc.report.results[0]


def test_state_replay_without_a_tolerance_is_a_side_effect_mismatch():
    result = _check(Counter().eval(), (torch.randn(2, 4),))
    assert result.status == "mismatch", result.message
    assert result.message.startswith("Side effects differ from eager"), result.message


@pytest.mark.parametrize(
    "given",
    [
        {"atol": 1e-2},
        {"atol": {"nudged": 1e-2}},
        {"compare": lambda expected, actual: torch.testing.assert_close(actual, expected, rtol=0, atol=1e-2)},
    ],
    ids=["atol", "atol-per-backend", "compare"],
)
def test_state_replay_uses_the_checks_tolerance_and_compare(given):
    result = _check(Counter().eval(), (torch.randn(2, 4),), **given)
    assert result.status == "pass", result.message
    assert "mutates_state" in {f.kind for f in result.findings}
    assert "side_effects" not in {f.kind for f in result.findings}


def test_a_baked_argument_is_judged_with_the_checks_tolerance():
    args = (torch.randn(2, 4), 3.0)
    strict = _check(Scaled().eval(), args)  # the nudge alone reads as an ignored argument
    assert "baked_argument" in {f.kind for f in strict.findings}, strict.findings
    loose = _check(Scaled().eval(), args, atol=1e-2)
    assert loose.status == "pass", loose.message
    assert "baked_argument" not in {f.kind for f in loose.findings}, loose.findings
