"""The ONNX artifact as onnxruntime serves it: the ONNX checker (issue 21).

Every exported model goes through ``onnx.checker.check_model(full_check=True)``: a
failure is a finding.
"""

import torch
from torch import nn

from pytest_torchexport.backends.onnx import LegacyOnnxBackend, _InMemory
from pytest_torchexport.checks import Session, run
from pytest_torchexport.options import Options


def results(module, args, backends, **options):
    torch.manual_seed(0)
    session = Session()
    session.backends = {**session.backends, **{b.name: b for b in backends if not isinstance(b, str)}}
    names = [b if isinstance(b, str) else b.name for b in backends]
    opts = Options.build(valid_backends=tuple(session.backends), backends=names,
                         **{"examples": 4, "isolation": "inline", "seed": 0, **options})
    return run(module.eval(), args, None, opts, session).by_backend()


def kinds(result):
    return [f.kind for f in result.findings]


# -- the ONNX checker ---------------------------------------------------------------------


class ContradictedOutput(LegacyOnnxBackend):
    """Test-only: the legacy export with its output declared 5 wide where the graph makes it
    3 wide. onnxruntime runs it (it merges the declared shape leniently), the full check
    refuses it. No exporter output of a real torch model was found to fail the full check
    here (the real-model exports of tests/test_real_models.py pass it)."""

    name = "onnx-contradicted"

    def export(self, module, args, kwargs, ctx):
        import onnx

        model = onnx.load_from_string(super().export(module, args, kwargs, ctx).program)
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
        return _InMemory(model.SerializeToString(), ctx.device, self.name)


def test_a_model_the_full_check_refuses_is_a_finding_not_a_failure():
    r = results(nn.Linear(4, 3), (torch.randn(2, 4),), [ContradictedOutput()])["onnx-contradicted"]
    assert r.status == "pass", r.message
    (finding,) = [f for f in r.findings if f.kind == "onnx_checker"]
    assert "fails onnx.checker.check_model(model, full_check=True)" in finding.detail
    assert "InferenceError" in finding.detail and "differ in dimension 1: (3) vs (5)" in finding.detail
    assert r.cause == "onnx_checker"  # the summary's cause column


def test_exported_models_pass_the_full_check():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(6), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    r = results(model, (torch.randn(2, 3, 8, 8),), ["onnx", "onnx-legacy"])
    for name, result in r.items():
        assert result.status == "pass", result.message
        assert "onnx_checker" not in kinds(result), (name, result.findings)
