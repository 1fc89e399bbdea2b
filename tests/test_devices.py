"""Device plumbing. CUDA cannot run on this machine: these tests mock only what needs a GPU."""

import pytest
import torch
from models import MLP

from pytest_torchexport.engine.pipeline import _exact_cuda_math
from pytest_torchexport.options import resolve_devices


def test_auto_is_cpu_plus_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_devices(("auto",)) == ("cpu",)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # mocked: no GPU here
    assert resolve_devices(("auto",)) == ("cpu", "cuda")
    assert resolve_devices(("cpu",)) == ("cpu",)


def test_tf32_is_off_during_cuda_checks_and_restored():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with _exact_cuda_math("cuda"):
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
        with _exact_cuda_math("cpu"):
            assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_onnxruntime_says_when_it_falls_back_from_cuda():
    import io

    import onnxruntime

    from pytest_torchexport._compat import quiet_torch
    from pytest_torchexport.backends.onnx import OnnxSession

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    buffer = io.BytesIO()
    with quiet_torch():  # the legacy exporter's own DeprecationWarning
        torch.onnx.export(MLP().eval(), (torch.randn(2, 8),), buffer, dynamo=False)
    session = OnnxSession(buffer.getvalue(), "cuda")
    assert session.fallback == "onnxruntime has no CUDAExecutionProvider here; ran on CPU"
    assert session.session.get_providers() == ["CPUExecutionProvider"]
