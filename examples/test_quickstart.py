"""Quickstart: one marker on a test you already have.

The test below is an ordinary unit test of a small classifier. Adding
``@pytest.mark.torchexport`` is the only change: the plugin records the model call the
test makes (``model(x)``), then exports that model on every default backend (trace,
script, onnx, export) and checks each artifact against eager PyTorch on inputs drawn by
hypothesis (other batch sizes, other values), after a save/load round trip.

Each backend is its own test item::

    examples/test_quickstart.py::test_classifier[torchexport-trace] PASSED
    examples/test_quickstart.py::test_classifier[torchexport-onnx] PASSED
    ...

so ``-k onnx`` selects one path and CI shows which one broke.
"""

import pytest
import torch
from torch import nn


class Classifier(nn.Module):
    """A plain MLP: 16 features -> 3 class logits."""

    def __init__(self, in_features: int = 16, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.torchexport  # bare: all defaults (dim 0 of x is the dynamic "batch" dim)
def test_classifier():
    model = Classifier().eval()
    out = model(torch.randn(4, 16))  # the existing test, unchanged
    assert out.shape == (4, 3)
