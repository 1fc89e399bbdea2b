"""[A Copy That Is Not The Module] The reference is the module as the test called it.

The plugin checks a private copy of the module taken at the test's call. A copy is the
reference only where it is the module: every submodule in the mode it had, the same fx
graph, and the test's own outputs on the recorded call. torchvision's feature extractor
(``DualGraphModule``) re-runs ``__init__`` in ``__deepcopy__``, which calls ``self.train()``
and selects the train graph: its copy of an ``.eval()`` ResNet ran BatchNorm on batch
statistics, and trace, script and export were reported as a 0.6 mismatch that was the
plugin's own. Here: the real torchvision case, and two hand-built ones that need no
torchvision (a GraphModule whose copy keeps the train graph, a module whose copy forgets
an attribute the test set).

CI: ``-m torchvision`` selects the torchvision test; with ``TORCHEXPORT_REQUIRE_TORCHVISION=1``
(the torch 2.14.1 stage) a missing torchvision fails it instead of skipping it.
"""

import importlib.util
import os

import pytest
import torch
from helpers import report_rows, run_with_report

HAND_BUILT = """
import copy

import pytest
import torch
from torch import fx, nn


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(x) * 2


class TrainGraphOnCopy(fx.GraphModule):
    # Its __init__ selects the train graph (a fresh module is in training mode), once: the
    # copy of an .eval() module runs the train graph, and train(False) does not swap it back.
    def __init__(self, root, train_graph, eval_graph):
        super().__init__(root, train_graph)
        self.train_graph, self.eval_graph = train_graph, eval_graph

    def __deepcopy__(self, memo):
        root = nn.Module()
        root.bn = copy.deepcopy(self.bn, memo)
        new = TrainGraphOnCopy(root, self.train_graph, self.eval_graph)
        new.train(self.training)
        return new


def two_graphs():
    root = Body()
    train_graph = fx.symbolic_trace(root).graph
    eval_graph = fx.Graph()
    x = eval_graph.placeholder("x")
    eval_graph.output(eval_graph.call_module("bn", (x,)))  # eval: no * 2
    model = TrainGraphOnCopy(root, train_graph, eval_graph)
    model.graph = eval_graph  # the test's module runs the eval graph
    model.recompile()
    return model.eval()


class Scaled(nn.Module):
    # Its __deepcopy__ builds a fresh module: the scale the test set is lost on the copy.
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = 1.0

    def forward(self, x):
        return self.lin(x) * self.scale

    def __deepcopy__(self, memo):
        new = Scaled()
        new.lin = copy.deepcopy(self.lin, memo)
        return new


class Unset(nn.Module):
    # Its __deepcopy__ builds a fresh module, whose scale is None: a copy raises on the call.
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = None

    def forward(self, x):
        return self.lin(x) * self.scale

    def __deepcopy__(self, memo):
        new = Unset()
        new.lin = copy.deepcopy(self.lin, memo)
        return new


@pytest.mark.torchexport(backends=["trace", "export"])
def test_unset():
    model = Unset().eval()
    model.scale = 3.0
    model(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["trace", "export"])
def test_graph():
    model = two_graphs()
    model.bn.running_mean.fill_(0.5)
    out = model(torch.randn(3, 4))
    assert out.shape == (3, 4)


@pytest.mark.torchexport(backends=["trace"])
def test_scaled():
    model = Scaled().eval()
    model.scale = 3.0
    model(torch.randn(2, 4))
    model.train()  # the body leaves it in training mode: the check puts the call's mode back
"""


def _reference_copy(tester, keyword, backends):
    """Each backend's ``reference_copy`` detail, HAND_BUILT's tests matching ``keyword`` run: every
    row passes, with no ``training_mode`` finding (the mode is read from the module as called, and
    a body that leaves it training has the call's mode put back)."""
    tester.makepyfile(test_m=HAND_BUILT)
    result, rows = run_with_report(tester, "-k", keyword, key=lambda r: r["backend"])
    result.assert_outcomes(passed=len(backends))
    details = {}
    for backend in backends:
        row = rows[backend]
        assert row["status"] == "pass", row["message"]
        assert "training_mode" not in [f["kind"] for f in row["findings"]]
        (copy_finding,) = [f for f in row["findings"] if f["kind"] == "reference_copy"]
        details[backend] = copy_finding["detail"]
    return details


def test_a_copy_on_the_train_graph_is_not_the_reference(tester):
    for detail in _reference_copy(tester, "graph", ("trace", "export")).values():
        assert "runs another graph than the module the test called" in detail
        assert "TrainGraphOnCopy" in detail


def test_a_copy_that_forgets_what_the_test_set_is_not_the_reference(tester):
    (detail,) = _reference_copy(tester, "scaled", ("trace",)).values()
    assert "outputs on the recorded call differ from the test's own" in detail
    assert "modes and state as at the call put back" in detail


def test_no_copy_of_a_module_whose_copy_is_not_it_is_used_anywhere(tester):
    # Eager's copy and each export's copy of Unset would raise (scale None): a pass means the
    # test's own module (scale 3.0) was the reference and what was exported, every time.
    for detail in _reference_copy(tester, "unset", ("trace", "export")).values():
        assert "its copy raises on the recorded call (TypeError" in detail


def test_a_faithful_copy_says_nothing(tester):
    tester.makepyfile(
        test_m="""
        import pytest
        import torch
        from torch import nn

        @pytest.mark.torchexport(backends=["trace"])
        def test_plain():
            model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
            model(torch.randn(3, 4))
            model.train()
    """
    )
    result, rows = run_with_report(tester)
    result.assert_outcomes(passed=1)
    assert [f["kind"] for f in rows["trace"]["findings"] if f["kind"] in ("reference_copy", "training_mode")] == []


FEATURE_EXTRACTOR = """
import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.feature_extraction import create_feature_extractor

# The body scripts the extractor itself, which torch deprecates: the user's own warnings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx"], dims={"batch": (1, 4)})
def test_feature_extractor():
    torch.manual_seed(0)
    extractor = create_feature_extractor(resnet18(), return_nodes={"layer2": "feat"}).eval()
    scripted = torch.jit.script(extractor)
    out = scripted(torch.randn(2, 3, 64, 64))
    assert out["feat"].shape == (2, 128, 8, 8)
"""


@pytest.mark.torchvision
@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None and not os.environ.get("TORCHEXPORT_REQUIRE_TORCHVISION"),
    reason="torchvision is not installed (the torch 2.14.1 CI stage has it and sets TORCHEXPORT_REQUIRE_TORCHVISION=1)",
)
def test_torchvision_feature_extractor_of_an_eval_resnet_passes(tester):
    """The real case: before, trace/script/export were a 0.6 mismatch with a false training_mode."""
    tester.makepyfile(test_fe=FEATURE_EXTRACTOR)
    # In a subprocess: torchvision imported in an inline run would be dropped afterwards and
    # re-registered by the next import (its ops), which torch refuses.
    result = tester.runpytest_subprocess("--torchexport-report=out.json", "-p", "no:cacheprovider")
    rows = report_rows(tester)
    for backend in ("trace", "script", "export", "onnx"):
        row = rows[backend]
        assert row["status"] == "pass", (backend, row["message"])
        assert row["module"] == "GraphModule"
        assert row["max_abs_err"] < 1e-3, (backend, row["max_abs_err"])
        kinds = [f["kind"] for f in row["findings"]]
        assert "training_mode" not in kinds, row["findings"]
    result.assert_outcomes(passed=4)


class _Refuses(torch.nn.Linear):
    """A module whose ``__deepcopy__`` raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(2, 2)
        self.error = error

    def __deepcopy__(self, memo):
        raise self.error


def test_a_refused_copy_is_said_and_any_other_error_surfaces():
    from pytest_torchexport.reference.eager import copy_as_called

    module = _Refuses(TypeError("cannot pickle 'Handle' object"))
    copied, why = copy_as_called(module)
    assert copied is module
    assert why == "its deep copy raised TypeError: cannot pickle 'Handle' object"
    # Not a refusal to be copied but a bug (a plugin's own, or the copy's): never the live module quietly.
    with pytest.raises(ZeroDivisionError, match="planted"):
        copy_as_called(_Refuses(ZeroDivisionError("planted")))
