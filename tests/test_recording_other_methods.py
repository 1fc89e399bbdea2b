"""[Another Method] A test that calls ``model.forward_features(x)`` or ``model.encode(x)``
checks that method (docs/howto-module.md).

Before, such a test was checked on whatever module call came first inside the method (a
timm model's stem ``Sequential``, 1.6% of its parameters), and ``module="ResNet"`` was a
usage error. Now the method is exported on every backend (``torch.jit.trace_module`` with
its inputs, the scripted model's own method, a wrapper for the rest), the row's
``method`` names it, ``module="Class.method"`` picks it, and ``other_modules`` never
suggests a ``Dropout``.
"""

import importlib.util

import pytest
from helpers import report_rows, run_with_report

MODELS = """
import pytest
import torch
from torch import nn

# The script backend's own torch.jit calls are the plugin's; the body calls none.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8, 3)

    def forward_features(self, x):
        return self.stem(x) * 2

    def forward(self, x):
        return self.head(self.drop(self.forward_features(x)))

    def encode(self, x):  # not reached from forward: TorchScript does not compile it
        return self.stem(x) - 1

    @torch.no_grad()
    def predict(self, x):  # called through torch's decorator: still the test's call
        return self(x).softmax(-1)


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx"], dims={"batch": (1, 8)})
def test_features():
    model = Net().eval()
    assert model.forward_features(torch.randn(2, 4)).shape == (2, 8)


@pytest.mark.torchexport(backends=["script", "export"])
def test_encode():
    model = Net().eval()
    model.encode(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["export"], module="Net.encode")
def test_pick():
    model = Net().eval()
    features = model.forward_features(torch.randn(2, 4))
    model.encode(torch.randn(2, 4))
    nn.Dropout()(features)  # a parameterless leaf: never suggested in module=


@pytest.mark.torchexport(backends=["export"], module="Net")
def test_by_class():
    Net().eval().forward_features(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["export"])
def test_decorated():
    Net().eval().predict(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["export"])
def test_forward():
    model = Net().eval()
    model.drop.p = 0.2  # set, not called
    model(torch.randn(2, 4))
"""


def test_the_method_is_what_is_checked(tester):
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(tester, "-k", "features", key=lambda r: r["backend"])
    outcomes = result.parseoutcomes()
    for backend in ("trace", "script", "export", "onnx"):
        row = rows[backend]
        assert row["status"] == "pass", (backend, row["message"])
        # Net, not the stem Sequential its first line calls (what was checked before)
        assert (row["module"], row["method"]) == ("Net", "forward_features")
        assert "(Net.forward_features)" in row["message"]
    assert outcomes["passed"] == 4 and "failed" not in outcomes


def test_a_method_torchscript_does_not_reach_is_an_export_error_naming_it(tester):
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(tester, "-k", "encode and not pick", key=lambda r: r["backend"])
    assert rows["export"]["status"] == "pass", rows["export"]["message"]
    script = rows["script"]
    assert script["status"] == "export_error"
    assert script["method"] == "encode"
    assert "torch.jit.script(Net) does not reach Net.encode, the method the test called" in script["message"]
    assert "Mark it @torch.jit.export" in script["message"]
    result.assert_outcomes(passed=1, failed=1)


def test_module_names_a_method_and_trivia_is_never_suggested(tester):
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(tester, "-k", "pick or by_class", key=lambda r: r["test"].split("::")[-1])
    result.assert_outcomes(passed=2)
    pick = rows["test_pick"]
    assert pick["method"] == "encode"
    (other,) = [f for f in pick["findings"] if f["kind"] == "other_modules"]
    assert 'module="Net.forward_features"' in other["detail"]
    assert "Dropout" not in other["detail"]
    assert rows["test_by_class"]["method"] == "forward_features"


def test_forward_rows_have_no_method_key(tester):
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(tester, "-k", "test_forward")
    result.assert_outcomes(passed=1)
    assert "method" not in rows["export"]


TIMM = """
import pytest
import timm
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


@pytest.mark.torchexport(backends=["trace", "export"], dims={"batch": (1, 2)})
def test_resnet_features():
    model = timm.create_model("resnet18", pretrained=False).eval()
    features = model.forward_features(torch.randn(1, 3, 64, 64))
    assert features.shape == (1, 512, 2, 2)
"""


@pytest.mark.model_libs
@pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="timm is not installed (the torch 2.14.1 venv has it)"
)
def test_timm_resnet_forward_features_is_checked_whole(tester):
    tester.makepyfile(test_timm=TIMM)
    result = tester.runpytest_subprocess("--torchexport-report=out.json", "-p", "no:cacheprovider")
    rows = report_rows(tester)
    for backend in ("trace", "export"):
        row = rows[backend]
        assert row["status"] == "pass", (backend, row["message"])
        assert (row["module"], row["method"]) == ("ResNet", "forward_features")
    result.assert_outcomes(passed=2)


def test_a_decorated_method_is_the_test_call(tester):
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(tester, "-k", "decorated")
    result.assert_outcomes(passed=1)
    assert (rows["export"]["module"], rows["export"]["method"]) == ("Net", "predict")
