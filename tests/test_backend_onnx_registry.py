"""The dynamo ONNX exporter's op registry is built once per process (backends/onnx_backend.py)."""

import onnxruntime as ort
import pytest
import torch

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends import onnx as onnx_backend

_registration = pytest.importorskip("torch.onnx._internal.exporter._registration")


def test_each_export_gets_its_own_copy_of_one_kept_registry():
    cls = _registration.ONNXRegistry
    original = cls.__dict__["from_torchlib"]
    with onnx_backend.reused():
        first = cls.from_torchlib()
        builds = onnx_backend._kept.cache_info().misses
        second = cls.from_torchlib()
    assert onnx_backend._kept.cache_info().misses == builds, "the second export built its registry again"
    assert cls.__dict__["from_torchlib"] is original  # restored: a test's own export builds its own
    kept = [onnx_backend._kept(original.__func__, cls, (), ())]  # the registry kept (a hit: nothing is built)
    assert onnx_backend._kept.cache_info().misses == builds
    assert first.functions == second.functions == original.__func__(cls).functions  # what torch builds
    # A registration in one export's copy (a custom_translation_table) reaches neither the other nor the kept one.
    target = next(iter(first.functions))
    first.functions[target].append("custom")
    first.functions["my::op"] = ["custom"]
    assert "custom" not in second.functions[target]
    assert all("my::op" not in r.functions and "custom" not in r.functions[target] for r in kept)
    assert first.opset_version == second.opset_version


def test_an_export_through_the_kept_registry_runs_like_eager():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(5, 8)
    sessions = []
    for _ in range(2):  # the second export is served from the kept registry
        with onnx_backend.reused(), torch.no_grad(), quiet_torch():
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
        sessions.append(
            ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
        )
    with torch.no_grad():
        expected = model(x)
    for session in sessions:
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
