"""Every way of marking a test, the module each item checks, and a report row for every item.

One small suite built from patterns seen in real model libraries' tests (a constructor
that calls a module, a body that scripts or changes its model after calling it, a conftest
that marks in ``pytest_collection_modifyitems`` or ``pytest_generate_tests``, a
``unittest.TestCase``, a model only handed to ``torch.jit.trace``, a test that calls
nothing), run with markers and with ``--torchexport-auto``.
"""

import pytest
from helpers import by_test_and_backend, report_rows

BACKENDS = '["trace", "export"]'

MODELS = """
import unittest

import pytest
import torch
from torch import nn

# The bodies call torch.jit themselves, which torch 2.13 deprecates: the user's own warning.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def ran(name):
    # The body writes a line each time it runs: the suite counts them.
    with open("ran.txt", "a") as f:
        f.write(name + "\\n")


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        # weight_norm: reading the weight calls a ParametrizationList module, here in the
        # constructor and again in forward; neither is the test's call.
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3, padding=1))
        self.conv.weight.data.mul_(1.0)
        self.grid = nn.Linear(4, 4)(torch.ones(1, 4))  # a module called while constructing

    def forward(self, x):
        return torch.relu(self.conv(x))


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # trace freezes this branch
            return x * 2
        return -x


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.lin(x))


class NeedsTargetInEval(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, target=None):
        out = self.lin(x)
        if not self.training and target is None:
            raise ValueError("in eval mode, pass target=")
        return out if target is None else out - target


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, data):
        return self.lin(data["x"]) + data["y"]
"""

TESTS = """

def test_constructor_calls_a_module():
    ran("constructor")
    model = Encoder().eval()
    assert model(torch.randn(2, 4, 8)).shape == (2, 4, 8)


def test_changes_model_after_calling():
    ran("changed")
    model = Head().eval()
    model(torch.randn(3, 4))
    model.act = Branchy()  # the body changes the model after calling it
    model.lin = torch.jit.script(model.lin)


def test_only_traces():
    ran("traced")
    model = Head().eval()
    torch.jit.trace(model, (torch.randn(3, 4),))


def test_calls_nothing():
    ran("nothing")
    assert torch.ones(2).sum() == 2


def test_training_call_then_eval_call():
    ran("eval_call")
    model = NeedsTargetInEval()
    model(torch.randn(3, 4))  # training mode: fine without target
    model.eval()
    model(torch.randn(3, 4), target=torch.zeros(3, 4))


def test_two_models():
    ran("two")
    Head().eval()(torch.randn(2, 4))
    Encoder().eval()(torch.randn(2, 4, 8))


def test_dict_argument():
    ran("dict")
    DictModel().eval()({"x": torch.randn(3, 4), "y": torch.randn(3, 4)})


def test_body_fails():
    ran("fails")
    Head().eval()(torch.randn(2, 4))
    assert False, "the body's own assertion"


class TestUnit(unittest.TestCase):
    def test_head(self):
        ran("unittest")
        Head().eval()(torch.randn(2, 4))
"""


def write_suite(tester, marker, conftest=""):
    body = TESTS
    if marker:
        body = body.replace("\ndef test_", f"\n{marker}\ndef test_").replace(
            "class TestUnit(unittest.TestCase):", f"{marker}\nclass TestUnit(unittest.TestCase):"
        )
    tester.makepyfile(test_suite=MODELS + body)
    if conftest:
        tester.makeconftest(conftest)


EXPECTED_MODULE = {
    "test_constructor_calls_a_module": "Encoder",
    "test_changes_model_after_calling": "Head",
    "test_only_traces": "Head",
    "test_training_call_then_eval_call": "NeedsTargetInEval",
    "test_two_models": "Head",
    "test_dict_argument": "DictModel",
    "TestUnit::test_head": "Head",
}


def check_suite(tester, result, nothing_status):
    got = report_rows(tester, key=by_test_and_backend)
    items = {key for key in got}
    tests = {*EXPECTED_MODULE, "test_calls_nothing", "test_body_fails"}
    # Every item of every test has a row: two backends each.
    assert items == {(t, b) for t in tests for b in ("trace", "export")}, sorted(items)
    for (test, backend), row in got.items():
        if test in EXPECTED_MODULE:
            assert row["module"] == EXPECTED_MODULE[test], (test, backend, row["module"], row["message"])
            assert row["status"] == "pass", (test, backend, row["message"])
    # The body ran once per test, though each test has two items.
    ran = (tester.path / "ran.txt").read_text().split()
    assert sorted(ran) == sorted(set(ran)) and len(ran) == len(tests), ran
    nothing = got[("test_calls_nothing", "trace")]
    assert nothing["status"] == nothing_status
    fails = got[("test_body_fails", "export")]
    assert fails["status"] == "usage_error" and "the body's own assertion" in fails["message"]
    result.stdout.re_match_lines([r".*AssertionError: the body's own assertion"])
    # What the rows say about the call.
    kinds = {key: {f["kind"]: f["detail"] for f in row["findings"]} for key, row in got.items()}
    assert "Encoder" in kinds[("test_two_models", "trace")]["other_modules"]
    assert 'module="Encoder"' in kinds[("test_two_models", "trace")]["other_modules"]
    assert "torch.jit.trace" in kinds[("test_only_traces", "export")]["recorded_call"]
    assert "call #2 of 2" in kinds[("test_training_call_then_eval_call", "trace")]["recorded_call"]
    assert not any("training_mode" in k for k in kinds.values())  # every call here is in eval, or equal in both


def test_every_marking_style_checks_the_intended_module(tester):
    write_suite(tester, f"@pytest.mark.torchexport(backends={BACKENDS}, examples=3)")
    result = tester.runpytest("--torchexport-report=out.json", "-p", "no:randomly")
    check_suite(tester, result, "usage_error")
    # 4 failed: the failing body's two items and the no-module test's two (usage_error rows).
    result.assert_outcomes(passed=14, failed=4)
    nothing = report_rows(tester, key=by_test_and_backend)[("test_calls_nothing", "export")]["message"]
    assert nothing.startswith("Nothing to check [backend=export, device=cpu]")
    assert "called no nn.Module" in nothing and "torchexport(Model()" in nothing


def test_auto_checks_every_test_without_markers(tester):
    write_suite(tester, "")
    result = tester.runpytest(
        "--torchexport-auto",
        f"--torchexport-backends={BACKENDS[2:-2].replace(chr(34), '')}",
        "--torchexport-examples=3",
        "--torchexport-report=out.json",
        "-p",
        "no:randomly",
    )
    check_suite(tester, result, "skipped")
    result.assert_outcomes(passed=14, failed=2, skipped=2)


CONFTEST_MODIFYITEMS = f"""
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.torchexport(backends={BACKENDS}, examples=3))
"""


def test_a_conftest_marks_in_collection_modifyitems(tester):
    write_suite(tester, "", conftest=CONFTEST_MODIFYITEMS)
    result = tester.runpytest("--torchexport-report=out.json", "-p", "no:randomly", "-k", "not onnx")
    check_suite(tester, result, "usage_error")
    result.assert_outcomes(passed=14, failed=4)


def test_a_conftest_marks_in_generate_tests_and_options_are_kept(tester):
    tester.makeconftest(
        f"""
import pytest

def pytest_generate_tests(metafunc):
    metafunc.definition.add_marker(pytest.mark.torchexport(backends={BACKENDS}, examples=2))
"""
    )
    tester.makepyfile(test_g=MODELS + "\ndef test_head():\n    Head().eval()(torch.randn(2, 4))\n")
    result = tester.runpytest("--torchexport-report=out.json", "-v")
    result.assert_outcomes(passed=2)
    got = report_rows(tester, key=by_test_and_backend)
    assert set(got) == {("test_head", "trace"), ("test_head", "export")}
    # examples=2 was kept: the search ran 2 draws (plus the fixed probes), not the ini's 8.
    assert got[("test_head", "trace")]["examples"] < 12


def test_k_selects_a_backend_of_a_unittest_method(tester):
    write_suite(tester, f"@pytest.mark.torchexport(backends={BACKENDS}, examples=3)")
    # (-k export would match every item: the marker's own name, torchexport, contains it.)
    result = tester.runpytest("-v", "-k", "TestUnit and trace")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r".*test_suite.py::TestUnit::test_head\[torchexport-trace\] PASSED.*"])


@pytest.mark.parametrize("where", ["a doctest"])
def test_a_marker_that_cannot_be_honoured_warns(tester, where):
    tester.makeconftest(
        """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.torchexport)
"""
    )
    tester.makepyfile(
        test_d='''
def add(a, b):
    """
    >>> add(1, 2)
    3
    """
    return a + b
'''
    )
    result = tester.runpytest("--doctest-modules", "-W", "default")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.re_match_lines([r".*test_d.add is marked torchexport but will not be checked: it is a DoctestItem.*"])


SKIPPED_BEFORE_THE_BODY = """
import unittest

import pytest
import torch


def call():
    torch.nn.Linear(2, 2)(torch.randn(1, 2))


@pytest.mark.skip(reason="marker skip")
def test_marker_skip():
    call()


@pytest.mark.xfail(run=False, reason="known broken")
def test_xfail_not_run():
    call()


@unittest.skip("needs sentencepiece")
class Integration(unittest.TestCase):
    def test_class_skipped_whole(self):
        call()


class Slow(unittest.TestCase):
    @unittest.skip("slow")
    def test_method_skipped(self):
        call()
"""


def test_an_item_skipped_before_its_body_ran_has_its_row(tester):
    # transformers' own T5 tests: a unittest class skipped whole (require_sentencepiece) skips its
    # items at setup, where no body runs; each still gets its row, with the reason
    tester.makepyfile(test_skips=SKIPPED_BEFORE_THE_BODY)
    result = tester.runpytest(
        "-p",
        "no:cacheprovider",
        "--torchexport-auto",
        "--torchexport-backends=trace,export",
        "--torchexport-report=out.json",
    )
    result.assert_outcomes(skipped=6, xfailed=2)
    rows = report_rows(tester, key=lambda r: (r["test"].rsplit("::", 1)[-1], r["backend"]))
    assert len(rows) == 8, sorted(rows)
    for (test, _backend), row in rows.items():
        assert row["cause_kind"] == "test_body", row
        if test == "test_method_skipped":  # raised by the body's own call
            assert row["status"] == "skipped" and row["message"] == "the test body skipped: slow", row
        elif test == "test_xfail_not_run":
            assert row["status"] == "xfail" and row["message"].startswith("the test was xfailed before"), row
        else:
            assert row["status"] == "skipped", row
            reason = "marker skip" if test == "test_marker_skip" else "needs sentencepiece"
            assert row["message"] == f"the test was skipped before its body ran: {reason}", row
