"""The `litert` backend: litert-torch to a .tflite, run by ai-edge-litert's interpreter.

litert-torch 0.10.0 installs next to torch 2.13.0 without replacing it, but pulls JAX,
jaxlib, scipy and transformers (about 1.4 GB beside torch), so the suite's environment does
not carry it: here the skip and --torchexport-require paths run for real, and the
conversion tests run where `pip install "pytest-torchexport[litert]"` was done (they were
run so in a throwaway venv: see docs/backends.md).
"""

import functools

import pytest
import torch
from helpers import assert_required_but_unavailable, checked_one, run_without
from models import MLP, Nested
from torch import nn

from pytest_torchexport.backends.litert import FILENAME, LiteRtBackend

UNAVAILABLE = LiteRtBackend().unavailable_reason()
needs_litert = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"litert is not installed: {UNAVAILABLE}")


class Gate(nn.Module):
    """Both branches computed, one picked per row: no frozen branch, a static reshape in the .tflite."""

    def forward(self, x):
        return torch.where(x.sum(-1, keepdim=True) > 0, x * 2, x - 1)


# Inline: litert-torch imports JAX, whose at-fork hook warns (RuntimeWarning, an error
# under this suite's filterwarnings) on every fork the process isolation makes.
_result = functools.partial(checked_one, backend="litert", examples=5, isolation="inline")


def test_a_missing_package_is_a_skipped_row_with_the_install_line(tester):
    hidden = ("litert_torch", "ai_edge_litert", "ai_edge_litert.interpreter") if UNAVAILABLE is None else ()
    result, row = run_without(tester, hidden, ["trace", "litert"], "--torchexport-isolation=inline")
    result.assert_outcomes(passed=1, skipped=1)
    assert row["status"] == "skipped"
    assert row["message"].startswith("litert skipped: litert-torch or ai-edge-litert is not installed (")
    assert row["message"].endswith('pip install "pytest-torchexport[litert]"')
    assert_required_but_unavailable(tester, "litert", "--torchexport-isolation=inline", passed=1)


@needs_litert
def test_a_clean_model_passes_through_the_tflite_file():
    r = _result(MLP().eval(), (torch.randn(3, 8),), dims={"batch": (1, 16)})
    assert r.status == "pass", r.message
    assert r.extra["artifact_files"] == [FILENAME]
    assert r.rtol == 1e-3 and r.atol == 1e-4
    # A static fallback: litert-torch 0.10.0's JAX lowerings refuse the symbolic batch size
    kinds = {f.kind for f in r.findings}
    assert "specialized_dim" in kinds and "backend_note" in kinds


@needs_litert
def test_nested_outputs_keywords_and_int64_come_back_as_eager_returns_them():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 3)

        def forward(self, x, mask=None, ids=None):
            return {"y": self.lin(x) + mask, "z": ids + 2}

    r = _result(Tokens().eval(), (torch.randn(4, 8),), {"mask": torch.ones(4, 3), "ids": torch.randint(0, 9, (4, 5))})
    assert r.status == "pass", r.message
    assert _result(Nested().eval(), (torch.randn(2, 4),)).status == "pass"


@needs_litert
def test_a_size_baked_into_the_static_tflite_is_a_run_error():
    r = _result(Gate().eval(), (torch.randn(3, 4),), dims={"batch": (1, 8)})
    assert r.status == "run_error", r.message
    assert "RESHAPE" in r.message
    assert "litert made dim 0 of x ('batch', declared dynamic) static" in r.message
