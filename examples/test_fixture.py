"""The ``torchexport`` fixture: check a model explicitly and look at the report.

Use the fixture instead of the marker when the test should decide what is checked: a
model the test body never calls, several models in one test, or assertions on the
results themselves. ``torchexport(module, args, **options)`` takes the marker's options,
returns a ``Report`` and raises ``ExportMismatch`` (an ``AssertionError`` carrying the
report) when any backend fails. Its results also reach the session summary and the
``--torchexport-report`` file.
"""

import pytest
import torch
from torch import nn

# The paths this team ships: TorchScript (trace, script) for a LibTorch server and
# torch.export for AOTInductor. No ONNX here, so it is not checked.
BACKENDS = ["trace", "script", "export"]


class Regressor(nn.Module):
    """8 features -> 1 value, with a normalised hidden layer."""

    def __init__(self, activation: type[nn.Module] = nn.ReLU, hidden: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(8, hidden),
            nn.LayerNorm(hidden),
            activation(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def test_regressor_exports(torchexport):
    model = Regressor().eval()
    x = torch.randn(4, 8)
    report = torchexport(model, (x,), dims={"batch": (1, 16)}, backends=BACKENDS)

    assert report.ok
    statuses = {result.backend: result.status for result in report.results}
    assert statuses == {"trace": "pass", "script": "pass", "export": "pass"}
    for result in report.results:
        # Each backend was checked on many generated inputs, not only on x.
        assert result.examples > 1
        assert result.max_abs_err is not None and result.max_abs_err <= 1e-4


@pytest.mark.parametrize("activation", [nn.ReLU, nn.GELU, nn.SiLU], ids=lambda a: a.__name__)
def test_activation_variants(torchexport, activation):
    # One test, one model per parameter: the fixture checks what the test builds.
    model = Regressor(activation=activation, hidden=32).eval()
    report = torchexport(model, (torch.randn(2, 8),), dims={"batch": (1, 16)}, backends=BACKENDS)
    # One row per backend and device (--torchexport-devices=cpu,cuda on a GPU runner doubles them).
    assert {(r.backend, r.status) for r in report.results} == {(b, "pass") for b in BACKENDS}
