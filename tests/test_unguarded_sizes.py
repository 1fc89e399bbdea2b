"""An input outside the shapes the export proved, which a runtime without guards
still runs, is judged by its values: a match is a pass with an ``unguarded_sizes`` finding that
quotes the guard, a difference a mismatch that quotes it; never a run_error, since nothing raised.

The guard here is the ONNX backend's own oracle told to refuse batches under 3 (a stand-in for a
torch.export guard such as Wav2Vec2's ``input_values.size()[1] >= 52``, which a tiny model cannot
be made to produce deterministically); the export, onnxruntime and the search are real.
"""

import pytest
import torch

from pytest_torchexport import ExportMismatch, check
from pytest_torchexport.backends.onnx import DynamoOnnxBackend

GUARD = "Guard failed: x.size()[0] >= 3"


class Guarded(DynamoOnnxBackend):
    """onnx, with a guard that refuses batches under 3; ``wrong_below``: its runtime also differs there."""

    def __init__(self, wrong_below: bool = False) -> None:
        super().__init__()
        self.wrong_below = wrong_below

    def guard_violation(self, artifact, args, kwargs):
        return GUARD if args[0].shape[0] < 3 else None

    def run(self, artifact, args, kwargs):
        outputs = super().run(artifact, args, kwargs)
        if self.wrong_below and args[0].shape[0] < 3:
            return [o + 1 for o in outputs]
        return outputs


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2).eval()


def test_a_match_outside_the_proved_shapes_passes_with_the_guard_as_a_finding():
    (row,) = check(_model(), (torch.randn(5, 4),), backends=[Guarded()], dims={"batch": (1, 8)}, examples=6).results
    assert row.status == "pass", row.message
    (detail,) = [f.detail for f in row.findings if f.kind == "unguarded_sizes"]
    assert detail.startswith(f"onnx ran inputs outside the shapes its export proved ({GUARD})"), detail
    assert "matched eager there (first: " in detail


def test_a_difference_outside_the_proved_shapes_is_a_mismatch_quoting_the_guard():
    with pytest.raises(ExportMismatch) as caught:
        check(_model(), (torch.randn(5, 4),), backends=[Guarded(wrong_below=True)], dims={"batch": (1, 8)}, examples=6)
    (row,) = caught.value.report.results
    assert row.status == "mismatch", row.message
    assert GUARD in row.message
    assert row.failing_example["inputs"]["input"]["shape"][0] < 3
