"""Standalone load (docs/howto-standalone.md): each saved artifact also loads and runs in a process
that never imported the test's code, as a deployment loads it."""

import pytest
import torch
from helpers import shared_run
from models import fresh_process_lacks

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.isolation import loader
from pytest_torchexport.options import Options

# What a fresh process says when a load reaches for what it lacks is torch's wording (2.15.0 reworded one).
pytestmark = pytest.mark.torch_compat

# Registered by this file only: the loader process never imports it.
MODELS = (
    fresh_process_lacks("standalone_tests")
    + """

class Clean(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x).relu()


@pytest.mark.torchexport(backends=["trace", "export"], examples=3)
def test_op():
    WithOp().eval()(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["trace", "script", "onnx", "export"], examples=3)
def test_clean():
    Clean().eval()(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["export"], examples=3)
def test_tree():
    Tree().eval()(torch.randn(2, 4))


class TakesPair(torch.nn.Module):
    def forward(self, p):
        return p.a * 2 + p.b


@pytest.mark.torchexport(backends=["onnx"], examples=3)
def test_pair_input():
    TakesPair().eval()(Pair(torch.randn(2, 4), torch.randn(2, 4)))


@pytest.mark.torchexport(backends=["trace"], examples=3, standalone=False)
def test_off():
    WithOp().eval()(torch.randn(2, 4))
"""
)


@pytest.fixture
def rows(tester):
    """One session of real exports, shared by the tests below."""
    return shared_run(tester, MODELS, passed=8, failed=1)


def _standalone(row):
    return [f for f in row["findings"] if f["kind"] == "standalone_load"]


def test_torchscript_with_a_test_file_custom_op_is_a_load_error(rows):
    row = rows[("test_op", "trace")]
    assert row["status"] == "load_error", row["message"]
    (finding,) = _standalone(row)
    assert "the custom op standalone_tests::twice" in finding["detail"]
    first, *rest = row["message"].splitlines()
    assert first.startswith("trace artifact does not work outside the test's process [backend=trace, device=cpu]")
    assert any(line.startswith("Likely cause:") and "standalone_tests::twice" in line for line in rest)
    assert "Example inputs: x: float32[" in row["message"]
    assert rest[-1].startswith("Register the custom op standalone_tests::twice")  # the remedy last


def test_a_clean_model_passes_standalone_on_every_default_backend(rows):
    for backend in ("trace", "script", "onnx", "export"):
        row = rows[("test_clean", backend)]
        assert row["status"] == "pass", (backend, row["message"])
        assert not _standalone(row), backend
        assert row["standalone"].startswith("loaded and ran in a fresh process"), (backend, row["standalone"])


def test_a_pt2_needing_a_custom_op_gets_the_finding_only(rows):
    row = rows[("test_op", "export")]
    assert row["status"] == "pass", row["message"]
    (finding,) = _standalone(row)
    assert "the custom op standalone_tests::twice" in finding["detail"]


def test_a_pt2_needing_a_registered_pytree_type_gets_the_finding_only(rows):
    row = rows[("test_tree", "export")]
    assert row["status"] == "pass", row["message"]
    (finding,) = _standalone(row)
    assert "the registered pytree type standalone_tests.Pair" in finding["detail"]


def test_onnx_is_fed_a_registered_pytree_input_flat_as_a_deployment_feeds_it(rows):
    """onnxruntime takes tensors by position: the fresh process gets the call's tensors flat, in the
    test's pytree order (it has never heard of the test file's Pair, as a transformers cache)."""
    row = rows[("test_pair_input", "onnx")]
    assert row["status"] == "pass", row["message"]
    assert not _standalone(row)
    assert row["standalone"].startswith("loaded and ran in a fresh process"), row["standalone"]


def test_standalone_false_turns_the_step_off(rows):
    row = rows[("test_off", "trace")]
    assert row["status"] == "pass", row["message"]
    assert row["standalone"] == "off (standalone=False)"


@pytest.mark.parametrize(
    ("text", "reached"),
    [
        ("Unknown builtin op: my_ops::foo.\nCould not find", "the custom op my_ops::foo"),
        ("We failed to resolve torch.ops.my_ops.foo.default to an operator", "the custom op my_ops::foo"),
        (
            "NotImplementedError: Deserializing mod.Pair in pytree is not registered.",
            "the registered pytree type mod.Pair",
        ),
        ("AttributeError: Can't get attribute 'Block' on <module 'test_x'>", "the Python class test_x.Block"),
        ("ModuleNotFoundError: No module named 'test_models'", "the Python module test_models"),
        ("something else entirely", None),
    ],
)
def test_classifies_what_a_failed_load_reached_for(text, reached):
    assert loader.reached_for(text) == reached


def test_a_dead_loader_is_restarted_and_the_check_goes_on():
    model = torch.nn.Linear(4, 2).eval()
    options = Options.build(backends=["trace"], examples=2, isolation="inline")
    first = loader.start()
    pid = first.proc.pid
    first.kill()
    first.proc.wait()
    report = run(model, (torch.randn(2, 4),), None, options, Session())
    (result,) = report.results
    assert result.status == "pass", result.message
    assert result.extra["standalone"].startswith("loaded and ran in a fresh process")
    assert loader.start().proc.pid != pid


def test_a_loader_that_stops_answering_is_a_finding_not_a_hang(monkeypatch):
    model = torch.nn.Linear(4, 2).eval()
    options = Options.build(backends=["trace"], examples=2, isolation="inline")
    handle = loader.start()

    def silent(message, timeout=loader.TIMEOUT_S):
        handle.kill()
        raise loader.LoaderUnavailable("the standalone loader did not answer within 0.1 s; it was restarted")

    monkeypatch.setattr(handle, "request", silent)
    report = run(model, (torch.randn(2, 4),), None, options, Session())
    (result,) = report.results
    assert result.status == "pass", result.message
    assert [f.detail for f in result.findings if f.kind == "standalone_load"] == [
        "not checked: the standalone loader did not answer within 0.1 s; it was restarted"
    ]
