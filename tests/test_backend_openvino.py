"""The `openvino` backend: convert_model from the module, compiled for CPU, saved as .xml/.bin.

A conversion costs 0.5-2 s (about 5 s for the first one in a process, which imports the
PyTorch frontend), so the statuses come from one module-scoped batch of checks and the
plugin path from two short pytester runs.
"""

import functools

import pytest
import torch
from helpers import (
    assert_required_but_unavailable,
    assert_selected_on_the_command_line,
    checked_one,
    gate_branch_finding,
    installed,
    nested_round_trip,
    run_without,
)
from models import MLP, BakedReshape, Gate, Nested
from torch import nn

from pytest_torchexport.backends.openvino import FILENAME, OpenVinoBackend

EX = 5
SEQ = {"dims": {"batch": (1, 4), "seq": (2, 16)}, "dynamic": {0: {0: "batch", 1: "seq", 2: "seq"}}}


class RelativeBias(nn.Module):
    """Relative-position buckets (T5, Swin): ``(j - i) // 2`` on integer offsets, half of them negative.

    OpenVINO 2026.4.1 converts integer floor division to Divide + Floor, and its integer
    Divide truncates: -1 // 2 is 0 there, -1 in PyTorch. The model converts and runs, and
    a quarter of its outputs read the wrong bias. Only where the size is dynamic: at a
    static one the offsets are constants, folded at conversion with the right rounding.
    """

    def __init__(self, buckets: int = 8) -> None:
        super().__init__()
        self.buckets = buckets
        self.bias = nn.Embedding(2 * buckets + 1, 1)

    def forward(self, scores):
        n = scores.shape[-1]
        pos = torch.arange(n, device=scores.device)
        rel = (pos[None, :] - pos[:, None]) // 2
        return scores + self.bias(rel.clamp(-self.buckets, self.buckets) + self.buckets).squeeze(-1)


class Tokens(nn.Module):
    """Integer and bool inputs, keyword arguments, a Python scalar and a constant in the output."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4)

    def forward(self, ids, mask=None, scale=2.0):
        return {"h": self.emb(ids) * mask.unsqueeze(-1) * scale, "n": 3, "count": mask.sum(-1)}


# seed: one bfloat16 run on torch 2.14 failed once unseeded and was not reproduced in 16 seeded runs
_result = functools.partial(checked_one, backend="openvino", examples=EX, seed=0)


@pytest.fixture(scope="module")
def results():
    installed(OpenVinoBackend(), "openvino")
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (2, 5))
    # Also the warm-up: the first conversion imports OpenVINO's PyTorch frontend, which
    # must happen outside pytester's inline runs (see tests/conftest.py).
    return {
        "clean": _result(MLP().eval(), (torch.randn(3, 8),), dims={"batch": (1, 16)}),
        "nested": _result(Nested().eval(), (torch.randn(2, 4),)),
        "tokens": _result(Tokens().eval(), (ids,), {"mask": ids > 3}),
        "bf16": _result(nn.Linear(4, 3).to(torch.bfloat16).eval(), (torch.randn(3, 4, dtype=torch.bfloat16),)),
        "gate": _result(Gate().eval(), (torch.ones(3, 4),)),
        "baked": _result(BakedReshape().eval(), (torch.randn(4, 3),), dims={"batch": (1, 8)}),
        # seq declared dynamic: at a static size OpenVINO folds the offsets at conversion, correctly
        "relbias": _result(RelativeBias().eval(), (torch.randn(2, 6, 6),), **SEQ),
        "relbias_static": _result(RelativeBias().eval(), (torch.randn(2, 6, 6),)),
    }


def test_a_clean_model_passes_through_the_saved_ir(results):
    r = results["clean"]
    assert r.status == "pass", r.message
    assert r.examples >= EX
    assert r.extra["artifact_files"] == [FILENAME, "model.bin"] and r.extra["artifact_bytes"] > 0
    assert "roundtrip" not in r.extra  # the reloaded IR is what was validated
    assert r.rtol == 1e-3 and r.atol == 1e-4  # relowered: OpenVINO's kernels are not eager's
    assert r.extra["standalone"].startswith("loaded and ran in a fresh process")
    assert "external_data" in {f.kind for f in r.findings}  # .xml names its .bin: ship both


def test_nested_outputs_and_every_input_kind_come_through(results):
    assert results["nested"].status == "pass", results["nested"].message
    assert results["tokens"].status == "pass", results["tokens"].message
    assert results["bf16"].status == "pass", results["bf16"].message


def test_a_frozen_branch_converts_and_is_caught_at_the_line(results):
    r = results["gate"]
    assert r.status == "mismatch", r.message
    assert r.message.startswith("Exported outputs differ from eager [backend=openvino, device=cpu] (Gate)")
    gate_branch_finding(r, "frozen_branch")


def test_a_baked_batch_size_is_a_run_error(results):
    r = results["baked"]
    assert r.status == "run_error", r.message
    assert "Reshape" in r.message
    assert "baked_shape" in {f.kind for f in r.findings}


def test_integer_floor_division_lowered_as_truncation_is_a_mismatch(results):
    """The real defect this backend found: OpenVINO's integer Divide + Floor truncates."""
    r = results["relbias"]
    assert r.status == "mismatch", r.message
    assert r.max_abs_err > 0.1  # a wrong bias, not rounding
    assert "a defect, not a tolerance question" in r.message
    assert "localisation not available for openvino" in r.message
    assert results["relbias_static"].status == "pass", results["relbias_static"].message


def test_the_ir_runs_alone_in_float32_at_other_sizes(tmp_path):
    """Saved uncompressed, reloaded from the files alone, compiled with f32 pinned."""
    backend = installed(OpenVinoBackend(), "openvino")
    files, loaded, out, expected = nested_round_trip(backend, tmp_path, batch=7)
    assert files == [tmp_path / FILENAME, tmp_path / "model.bin"]
    assert str(loaded.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert backend.input_shapes(loaded) == [(None, 4)]  # batch declared dynamic, the rest static
    expected_leaves = [expected["logits"][0], expected["logits"][1], expected["hidden"][0], expected["hidden"][1]]
    torch.testing.assert_close(out, expected_leaves, rtol=1e-3, atol=1e-4)
    # float32 weights in the .bin: 4 bytes per parameter
    assert (tmp_path / "model.bin").stat().st_size >= 4 * sum(
        p.numel() for p in Nested().parameters()
    )  # a count: any Nested


def test_selected_on_the_command_line_with_its_own_item_id(tester, results):
    assert_selected_on_the_command_line(tester, "openvino")


def test_a_missing_package_is_a_skipped_row_with_the_install_line(tester, results):
    # The real missing-import path: openvino unimportable for this run (pytester restores sys.modules).
    result, row = run_without(tester, ("openvino",), ["openvino"])
    result.assert_outcomes(skipped=1)
    assert row["status"] == "skipped"
    assert (
        "openvino is not installed" in row["message"] and 'pip install "pytest-torchexport[openvino]"' in row["message"]
    )
    assert_required_but_unavailable(tester, "openvino")
