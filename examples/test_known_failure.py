"""A known failure, kept visible: a data-dependent branch.

``ClampedGate`` takes one of two paths depending on the *values* of its input
(``if x.sum() > 0``). Tracing records only the path the example took, so the trace is
silently wrong for inputs that take the other one; ``torch.export`` and the dynamo ONNX
exporter refuse to capture a branch on data at all. Scripting compiles the ``if`` and
is right.

Marking the broken paths with ``xfail={backend: reason}`` keeps the suite green while
the failure stays in the report: the item shows as XFAIL with the plugin's explanation
(which branch froze, the smallest failing input, by how much), and the xfail is strict:
if a future torch exports this correctly, the item fails as XPASS, which says the mark
can go. The real fix would be ``torch.where`` (elementwise) or ``torch.cond`` (a branch
torch.export can capture), or shipping the scripted model.
"""

import pytest
import torch
from torch import nn


class ClampedGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return torch.relu(self.linear(x))
        return -self.linear(x)


@pytest.mark.torchexport(
    xfail={
        # status mismatch: the trace froze the `if` branch taken by the (positive) example;
        # an input with a negative sum gets relu(linear(x)) instead of -linear(x).
        "trace": "trace freezes the data-dependent `if x.sum() > 0` branch: wrong on inputs with a negative sum",
        # status export_error: GuardOnDataDependentSymNode on `if x.sum() > 0`.
        "export": "torch.export cannot capture a branch on tensor values (`if x.sum() > 0`); it needs torch.cond",
        # The dynamo ONNX exporter starts from torch.export, so it fails the same way.
        "onnx": "the dynamo ONNX exporter goes through torch.export, which cannot capture `if x.sum() > 0`",
    }
)
def test_gate_branches_on_data():
    model = ClampedGate().eval()
    x = torch.rand(4, 8)  # all positive: the example takes the `if` branch
    out = model(x)
    assert out.shape == (4, 8)
    assert (out >= 0).all()
