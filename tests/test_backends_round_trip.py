"""Every backend's export, save, load and run on a tiny model, through check()."""

import pytest
import torch
from models import MLP, Nested

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends.base import (
    Backend,
    ExportContext,
    GraphLevels,
    OnnxArtifact,
    OnnxModelSource,
    PostProcessed,
)
from pytest_torchexport.backends.export import ExportBackend
from pytest_torchexport.backends.onnx import DynamoOnnxBackend, LegacyOnnxBackend
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.options import BUILTIN_BACKENDS, Options

FILES = {
    "trace": ["model.pt"],
    "script": ["model.pt"],
    "export": ["model.pt2"],
    "onnx": ["model.onnx"],
    "onnx-legacy": ["model.onnx"],
}


def _one(module, args, backend, session=None, **options):
    valid = tuple((session or Session()).backends)
    opts = Options.build(backends=[backend], examples=6, valid_backends=valid, **options)
    return run(module, args, None, opts, session or Session()).results[0]


@pytest.mark.parametrize("backend", list(FILES))
def test_round_trip_through_files(backend):
    r = _one(MLP().eval(), (torch.randn(3, 8),), backend)
    assert r.status == "pass", r.message
    assert r.extra["artifact_files"] == FILES[backend]
    assert r.extra["artifact_bytes"] > 0
    assert r.timings["load_s"] > 0
    assert r.examples >= 6
    # batch is dynamic by default: sizes other than 3 ran against the same artifact.
    assert "external_data" not in {f.kind for f in r.findings}


@pytest.mark.parametrize("backend", ["trace", "script", "export", "onnx"])
def test_nested_dict_and_tuple_outputs(backend):
    r = _one(Nested().eval(), (torch.randn(2, 4),), backend)
    assert r.status == "pass", r.message


def test_roundtrip_off_validates_the_in_memory_artifact():
    r = _one(MLP().eval(), (torch.randn(3, 8),), "trace", roundtrip=False)
    assert r.status == "pass"
    assert "artifact_files" not in r.extra and r.extra["roundtrip"] == "off (roundtrip=False)"


class _AlwaysExternal(DynamoOnnxBackend):
    external_data_bytes = 0


def test_onnx_external_data_travels_with_the_model_and_is_said():
    session = Session(backends={**BUILTIN_BACKENDS, "onnx-ext": _AlwaysExternal()})
    r = _one(MLP().eval(), (torch.randn(3, 8),), "onnx-ext", session=session)
    assert r.status == "pass", r.message
    assert len(r.extra["artifact_files"]) == 2
    finding = next(f for f in r.findings if f.kind == "external_data")
    assert "ship them together" in finding.detail


def test_kwargs_reach_every_backend():
    class Scaled(torch.nn.Module):
        def forward(self, x, scale=None):
            return x * scale

    for backend in ("trace", "export", "onnx"):
        opts = Options.build(backends=[backend], examples=4)
        r = run(Scaled().eval(), (torch.randn(2, 3),), {"scale": torch.full((2, 3), 2.0)}, opts, Session()).results[0]
        assert r.status == "pass", (backend, r.message)


@pytest.mark.slow
def test_compile_runs_and_has_no_round_trip():
    r = _one(MLP().eval(), (torch.randn(3, 8),), "compile")
    assert r.status == "pass", r.message
    assert r.extra["roundtrip"].startswith("not applicable")


@pytest.mark.slow
def test_aoti_package_round_trip():
    r = _one(MLP().eval(), (torch.randn(3, 8),), "aoti")
    assert r.status == "pass", r.message
    assert r.extra["artifact_files"] == ["model_aoti.pt2"]


def test_onnx_guard_oracle_names_the_guard_onnxruntime_ignores():
    """The dynamo exporter drops torch.export's runtime asserts: the oracle restores them."""
    from pytest_torchexport._compat import quiet_torch
    from pytest_torchexport.backends.base import ExportContext
    from pytest_torchexport.inputs.specs import plan_inputs

    model = MLP().eval()
    args = (torch.randn(3, 8),)
    plan = plan_inputs(model, args, None, dims={"batch": (3, 16)})
    backend = DynamoOnnxBackend()
    with quiet_torch(fds=True):
        artifact = backend.export(model, args, {}, ExportContext("cpu", plan, model))
    two = (torch.randn(2, 8),)
    assert backend.run(artifact, two, {})[0].shape == (2, 3)  # onnxruntime runs it anyway
    assert backend.guard_violation(artifact, two, {}) == "Guard failed: x.size()[0] >= 3"
    assert backend.guard_violation(artifact, (torch.randn(5, 8),), {}) is None
    assert backend.guard_violation(artifact, (torch.randn(4, 9),), {}) == "Guard failed: x.size()[1] == 8"


def test_a_backend_answers_for_its_artifacts_and_the_defaults_mean_not_available():
    plain, module = Backend(), MLP().eval()
    assert plain.artifact_module(module) is module  # an artifact that is a module holds its own state
    assert plain.artifact_module(object()) is None
    assert plain.exported_program(module) is None and plain.device_fallback(module) is None
    # what only an ONNX artifact answers is no stub of every backend's: the engine asks first
    assert not isinstance(plain, (OnnxModelSource, GraphLevels, PostProcessed))
    assert isinstance(DynamoOnnxBackend(), OnnxArtifact)  # all three
    assert isinstance(LegacyOnnxBackend(), OnnxModelSource) and isinstance(LegacyOnnxBackend(), GraphLevels)
    assert not isinstance(LegacyOnnxBackend(), PostProcessed)  # ONNX as shipped is the dynamo exporter's

    export = ExportBackend()
    exported = export.export(module, (torch.randn(3, 8),), {}, _ctx(module))
    assert isinstance(export.exported_program(exported), torch.export.ExportedProgram)
    assert isinstance(export.artifact_module(exported), torch.nn.Module)

    onnx = LegacyOnnxBackend()
    if onnx.unavailable_reason() is None:
        with torch.no_grad(), quiet_torch():
            artifact = onnx.export(module, (torch.randn(3, 8),), {}, _ctx(module))
        # the in-memory model's session runs it from a file: its path
        source = onnx.onnx_model(artifact)
        assert isinstance(source, str) and source.endswith(".onnx") and onnx.device_fallback(artifact) is None
        assert onnx.graph_optimizer(artifact).deployed == "ORT_ENABLE_ALL"
        outputs = onnx.run_onnx_model(artifact, onnx.onnx_model(artifact), (torch.randn(2, 8),), {})
        assert [tuple(v.shape) for v in outputs.values()] == [(2, 3)]


def test_a_third_party_backend_answers_for_its_onnx_model_by_defining_the_methods():
    # No base class to inherit: a backend written when these were Backend's optional methods still answers.
    class Mine(Backend):
        name = "mine"

        def onnx_model(self, artifact):
            return b"model"

        def run_onnx_model(self, artifact, model, args, kwargs):
            return {}

    assert isinstance(Mine(), OnnxModelSource) and not isinstance(Mine(), GraphLevels)


def _ctx(module):
    return ExportContext(device="cpu", plan=plan_inputs(module, (torch.randn(3, 8),), None), module=module)


def test_a_cpu_only_runtime_says_the_inputs_ran_on_cpu():
    # executorch, openvino and litert run on CPU whatever device was asked: their
    # device_fallback names the device, and says nothing on cpu.
    from pytest_torchexport.backends.base import cpu_fallback, to_cpu

    assert cpu_fallback("cpu", "runs on CPU") is None
    assert cpu_fallback("cuda", "runs on CPU") == "runs on CPU: the cuda inputs ran on cpu"
    moved = to_cpu(((torch.ones(2),), {"mask": torch.zeros(1), "n": 3}))
    assert moved[1]["n"] == 3 and all(t.device.type == "cpu" for t in (moved[0][0], moved[1]["mask"]))
