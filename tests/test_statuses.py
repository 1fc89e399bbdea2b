"""Every status (docs/statuses.md), reached by a module built to reach it, through check()."""

import functools

import pytest
import torch
from helpers import GATE_BRANCH, checked, gate_branch_finding
from models import MLP, BakedReshape, Counter, Gate, MutatesInput, Noisy, WithDropout, Zeros

from pytest_torchexport import ExportMismatch, check
from pytest_torchexport.backends.base import Backend
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import BUILTIN_BACKENDS, Options

EX = 8


results = functools.partial(checked, examples=EX)


@pytest.fixture(scope="module")
def gate_results():
    return results(Gate().eval(), (torch.ones(3, 4),), ["trace", "script", "onnx", "export", "onnx-legacy"])


def test_gate_statuses_per_backend(gate_results):
    statuses = {name: r.status for name, r in gate_results.items()}
    assert statuses == {
        "trace": "mismatch",
        "onnx-legacy": "mismatch",
        "export": "export_error",
        "onnx": "export_error",
        "script": "pass",
    }


@pytest.mark.parametrize("backend", ["trace", "onnx-legacy"])
def test_frozen_branch_message_names_the_source_line(gate_results, backend):
    r = gate_results[backend]
    assert r.message.startswith(f"Exported outputs differ from eager [backend={backend}, device=cpu]")
    assert "froze the branch at" in r.message and GATE_BRANCH in r.message
    assert "`if x.sum() > 0:`" in r.message
    gate_branch_finding(r, "frozen_branch")
    assert "tracer_warning" in {f.kind for f in r.findings}
    # Shrunk: the smallest failing input is one row of negative numbers.
    shape = r.failing_example["inputs"]["x"]["shape"]
    assert shape == [1, 4]
    assert r.failing_example["inputs"]["x"]["max"] < 0 or r.failing_example["inputs"]["x"]["mean"] < 0
    assert r.max_abs_err > 0.1
    assert "a defect, not a tolerance question" in r.message


@pytest.mark.parametrize("backend", ["export", "onnx"])
def test_data_dependent_branch_is_an_export_error_at_the_line(gate_results, backend):
    r = gate_results[backend]
    assert r.message.startswith(f"{backend} could not export the module [backend={backend}, device=cpu]")
    # Torch's own error leads, in torch's words: never the torch.onnx wrapper's restatement of it
    # ("TorchExportError: <class '...GuardOnDataDependentSymNode'>: ...", which it raises from it).
    assert r.message.splitlines()[1].startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent")
    assert "TorchExportError" not in r.message and "<class '" not in r.message
    gate_branch_finding(r, "data_dependent_branch")
    # The exporter's reason is trimmed to what a person reads, not its whole essay.
    assert len(r.message.splitlines()) < 20


def test_script_keeps_the_branch_and_covers_both_paths(gate_results):
    r = gate_results["script"]
    assert r.status == "pass"
    assert r.examples >= EX
    assert r.extra["paths"] == 2


def test_run_error_for_a_baked_size():
    r = results(BakedReshape().eval(), (torch.randn(4, 3, 2),), ["trace"])["trace"]
    assert r.status == "run_error"
    assert r.message.startswith("The trace artifact raised on an input eager accepts [backend=trace, device=cpu]")
    assert "baked in a size" in r.message or "batch=" in r.message
    assert r.failing_example["inputs"]["x"]["shape"][0] != 4


def test_nondeterministic_is_never_a_mismatch():
    r = results(Noisy().eval(), (torch.randn(2, 3),), ["trace", "onnx-legacy"])
    assert {b: x.status for b, x in r.items()} == {"trace": "nondeterministic", "onnx-legacy": "nondeterministic"}
    assert "depends on the RNG" in r["trace"].message
    assert not any(x.failed for x in r.values())


def test_mutated_input_is_a_finding_and_onnx_dropping_it_fails():
    r = results(MutatesInput().eval(), (torch.randn(2, 3),), ["script", "onnx-legacy"])
    assert r["script"].status == "pass"
    assert "mutates_input" in {f.kind for f in r["script"].findings}
    bad = r["onnx-legacy"]
    assert bad.status == "mismatch"
    assert bad.message.startswith("Side effects differ from eager [backend=onnx-legacy, device=cpu]")
    assert "side_effects" in {f.kind for f in bad.findings}


def test_lost_buffer_update_fails_and_kept_one_passes():
    r = results(Counter().eval(), (torch.randn(2, 3),), ["export", "onnx-legacy"])
    assert "mutates_state" in {f.kind for f in r["export"].findings}
    assert r["export"].status == "pass"
    assert r["onnx-legacy"].status == "mismatch"
    lost = r["onnx-legacy"]
    assert lost.message.startswith("Side effects differ from eager [backend=onnx-legacy, device=cpu]")
    assert "forward updates calls on every call" in lost.message
    assert "side_effects" in {f.kind for f in lost.findings}


def test_training_mode_is_validated_in_eval_with_a_finding():
    r = results(WithDropout(), (torch.randn(2, 4),), ["trace"])["trace"]  # never .eval()'d
    assert r.status == "pass"
    assert "training_mode" in {f.kind for f in r.findings}
    assert r.extra["eager_mode"] == "eval, torch.no_grad()"


def test_the_training_mode_probe_leaves_no_state_behind():
    # The probe runs eager's module in train mode, which updates batch norm's running statistics;
    # they are put back, so the eval call is not said to update state and the artifacts match.
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))  # never .eval()'d
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = results(model, (torch.randn(5, 4) * 3 + 1,), ["trace", "export"])
    for row in r.values():
        assert row.status == "pass", row.message
        kinds = {f.kind for f in row.findings}
        assert "training_mode" in kinds and "mutates_state" not in kinds, row.findings
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_vacuous_output_is_said():
    r = results(Zeros().eval(), (torch.randn(2, 3),), ["trace"])["trace"]
    assert r.status == "pass"
    assert "vacuous_output" in {f.kind for f in r.findings}
    assert r.cause == "vacuous_output"


def test_cuda_without_a_gpu_is_skipped_with_the_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = results(MLP().eval(), (torch.randn(2, 8),), ["trace"], devices=["cuda"])["trace-cuda"]
    assert r.status == "skipped"
    assert "CUDA is not available" in r.message


def test_missing_library_is_skipped_not_a_crash(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    r = results(MLP().eval(), (torch.randn(2, 8),), ["onnx"])["onnx"]
    assert r.status == "skipped"
    assert "onnxscript is not installed" in r.message


def test_xfail_and_xpass():
    r = results(Gate().eval(), (torch.ones(3, 4),), ["trace", "script"], xfail={"trace": "frozen", "script": "flaky?"})
    assert r["trace"].status == "xfail"
    assert r["trace"].extra["xfail_of"] == "mismatch"
    assert r["script"].status == "xpass"
    assert r["script"].failed  # strict: an unexpected pass is reported
    assert "remove 'script' from xfail=" in r["script"].message


class _Corrupting(Backend):
    """A backend whose save step corrupts or perturbs the artifact (what a buggy plugin does)."""

    name = "perturbing"

    def __init__(self, mode="perturb"):
        self.mode = mode

    def export(self, module, args, kwargs, ctx):
        return torch.jit.trace(module, args)

    def save(self, artifact, directory):
        path = directory / "m.pt"
        if self.mode == "corrupt":
            path.write_bytes(b"not a torchscript archive")
        else:
            with torch.no_grad():
                for p in artifact.parameters():
                    p.add_(0.5)  # a save path that quantizes or drifts
            torch.jit.save(artifact, str(path))
            with torch.no_grad():
                for p in artifact.parameters():
                    p.sub_(0.5)
        return [path]

    def load(self, directory, ctx):
        return torch.jit.load(str(directory / "m.pt"))


def _custom(mode):
    return Session(backends={**BUILTIN_BACKENDS, "custom": _Corrupting(mode)})


def test_load_error_and_roundtrip_mismatch():
    opts = Options.build(backends=["custom"], examples=EX, valid_backends=("custom",))
    load = run(MLP().eval(), (torch.randn(2, 8),), None, opts, _custom("corrupt")).results[0]
    assert load.status == "load_error"
    assert load.message.startswith("custom could not load the module [backend=custom, device=cpu]")
    drift = run(MLP().eval(), (torch.randn(2, 8),), None, opts, _custom("perturb")).results[0]
    assert drift.status == "roundtrip_mismatch"
    assert "The loaded artifact differs from the one in memory" in drift.message


def test_an_onnx_save_that_drifts_is_blamed_on_the_round_trip_with_the_in_memory_model_set_aside():
    """After the load back the in-memory ONNX model drops its session and bytes; a loaded
    model that fails makes them again from the program, so the blame still finds the save."""
    import onnx
    from onnx import numpy_helper

    from pytest_torchexport.backends.onnx import DynamoOnnxBackend

    class Drifting(DynamoOnnxBackend):
        name = "custom"

        def save(self, artifact, directory):
            files = super().save(artifact, directory)
            model = onnx.load(str(files[0]))
            first = model.graph.initializer[0]
            first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) + 0.5, first.name))
            onnx.save(model, str(files[0]))
            return files

    opts = Options.build(backends=["custom"], examples=EX, valid_backends=("custom",))
    session = Session(backends={**BUILTIN_BACKENDS, "custom": Drifting()})
    drift = run(MLP().eval(), (torch.randn(2, 8),), None, opts, session).results[0]
    assert drift.status == "roundtrip_mismatch", drift.message
    assert "The loaded artifact differs from the one in memory" in drift.message


def test_check_raises_export_mismatch_carrying_the_report():
    with pytest.raises(ExportMismatch) as info:
        check(Gate().eval(), (torch.ones(3, 4),), backends=["trace", "script"], examples=EX)
    assert isinstance(info.value, AssertionError)
    assert {r.backend: r.status for r in info.value.report.results} == {"trace": "mismatch", "script": "pass"}
    assert str(info.value).startswith("Exported outputs differ from eager [backend=trace, device=cpu]")


def test_clean_mlp_passes_on_every_default_backend():
    report = check(MLP().eval(), (torch.randn(4, 8),), examples=EX)
    assert [r.status for r in report.results] == ["pass"] * 4
    onnx = report.by_backend()["onnx"]
    assert onnx.max_abs_err < onnx.atol  # onnxruntime's own numerics, inside the defaults
    assert onnx.timings["export_s"] > 0 and "load_s" in onnx.timings
