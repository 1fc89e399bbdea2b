"""The `tensorrt` backend: torch_tensorrt, CUDA only.

No GPU here (nor in CI): the skip and --torchexport-require paths run for real. The
export/save/load/run wiring is tested with MOCKS, because TensorRT cannot run without an
NVIDIA GPU: a fake ``torch_tensorrt`` module in ``sys.modules`` (its ``compile`` captures
with ``torch.export`` over the ``Input`` profiles it is given, ``save``/``load`` go through
``torch.export.save``/``load``), ``torch.cuda.is_available`` patched to True and the
backend's GPU device pointed at "cpu". What the mocks prove is the wiring (profiles from
the declared dims, the settings passed, the files written, outputs compared by the
engine), not TensorRT's numbers.
"""

import functools
import inspect
import sys
import types

import pytest
import torch
from helpers import checked_one, linear_test, skipped_then_required
from models import MLP, Nested

from pytest_torchexport.backends import tensorrt as trt_backend
from pytest_torchexport.backends.tensorrt import FILENAME, TensorRtBackend


class FakeInput:
    def __init__(self, min_shape, opt_shape, max_shape, dtype, name=""):
        self.min_shape, self.opt_shape, self.max_shape = tuple(min_shape), tuple(opt_shape), tuple(max_shape)
        self.dtype, self.name = dtype, name


class Skewed(torch.nn.Module):
    """A one-input engine that adds ``skew`` to every output."""

    def __init__(self, inner, skew):
        super().__init__()
        self.inner, self.skew = inner, skew

    def forward(self, input_0):
        return torch.utils._pytree.tree_map(lambda t: t + self.skew, self.inner(input_0))


def fake_torch_tensorrt(calls, skew=0.0):
    """A stand-in for torch_tensorrt: torch.export over the profiles; ``skew`` plants a wrong engine."""

    def compile(module, ir, inputs, **settings):
        calls.append({"ir": ir, "inputs": inputs, "settings": settings})
        # As torch_tensorrt's _tracer.get_dynamic_shapes_args: keyed by forward's parameter
        # names, one Dim per input and axis named after the Input.
        names = list(inspect.signature(module.forward).parameters)
        shapes = {
            name: {
                ax: torch.export.Dim(f"{inp.name}_{ax}", min=low, max=high)
                for ax, (low, high) in enumerate(zip(inp.min_shape, inp.max_shape))
                if low != high
            }
            for inp, name in zip(inputs, names)
        }
        example = tuple(torch.randn(inp.opt_shape).to(inp.dtype) for inp in inputs)
        if skew:  # an engine that computes something else, in memory and in the saved file
            module = Skewed(module, skew)
        program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
        engine = program.module()
        engine.fake_program = program
        return engine

    def save(module, path, output_format, arg_inputs):
        calls.append({"save": path, "output_format": output_format, "arg_inputs": arg_inputs})
        torch.export.save(module.fake_program, path)

    def load(path):
        return torch.export.load(path)

    return types.SimpleNamespace(Input=FakeInput, compile=compile, save=save, load=load, __name__="torch_tensorrt")


@pytest.fixture
def mocked_gpu(monkeypatch):
    """MOCK: a fake torch_tensorrt, CUDA reported available, the 'GPU' device being cpu."""
    calls = []
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake_torch_tensorrt(calls))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(trt_backend, "GPU", "cpu")
    return calls


_result = functools.partial(
    checked_one, backend="tensorrt", devices="cpu", examples=5, standalone=False, isolation="inline"
)


def test_without_a_gpu_it_is_skipped_with_the_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    reason = TensorRtBackend().unavailable_reason()
    assert reason.startswith("TensorRT runs on NVIDIA GPUs only and CUDA is not available here")
    r = _result(MLP().eval(), (torch.randn(3, 8),))
    assert r.status == "skipped"
    assert r.message.startswith("tensorrt skipped: TensorRT runs on NVIDIA GPUs only")


def test_require_turns_the_skip_into_a_failure_with_the_install_line(tester):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tester.makepyfile(test_t=linear_test(backends=["trace", "tensorrt"]))
    _, row = skipped_then_required(tester, "tensorrt")
    assert "CUDA is not available here" in row["message"]
    assert (
        'Install: pip install "pytest-torchexport[tensorrt]" on a machine with an NVIDIA GPU and CUDA' in row["message"]
    )


def test_mocked_engine_profiles_come_from_the_declared_dims(mocked_gpu):
    r = _result(MLP().eval(), (torch.randn(3, 8),), dims={"batch": (1, 16)})
    assert r.status == "pass", r.message
    assert r.extra["artifact_files"] == [FILENAME]
    compiled = [c for c in mocked_gpu if "ir" in c][-1]
    assert compiled["ir"] == "dynamo" and compiled["settings"] == {"disable_tf32": True}
    (inp,) = compiled["inputs"]
    assert (inp.min_shape, inp.opt_shape, inp.max_shape, inp.dtype) == ((1, 8), (3, 8), (16, 8), torch.float32)
    saved = [c for c in mocked_gpu if "save" in c][-1]
    assert saved["output_format"] == "exported_program" and saved["save"].endswith(FILENAME)
    assert [tuple(t.shape) for t in saved["arg_inputs"]] == [(3, 8)]


def test_mocked_engine_with_nested_outputs_passes(mocked_gpu):
    r = _result(Nested().eval(), (torch.randn(2, 4),))
    assert r.status == "pass", r.message


def test_mocked_wrong_engine_is_a_mismatch(monkeypatch, mocked_gpu):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake_torch_tensorrt([], skew=0.01))
    r = _result(MLP().eval(), (torch.randn(3, 8),))
    assert r.status == "mismatch", r.message
    assert r.message.startswith("Exported outputs differ from eager [backend=tensorrt, device=cpu] (MLP)")
