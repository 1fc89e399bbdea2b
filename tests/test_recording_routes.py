"""Every route by which a test hands its model over: ``model.forward(x)`` called directly,
``torch.jit.trace_module`` (also under a name a library imported), ``torch.jit.trace``,
``torch.export.export``, ``torch.onnx.export``, ``torch.compile(model)(x)``.

Each records the module the test is about, with the arguments as given, and checks it
for real; none records a child the model calls inside (the stem ``Linear`` a direct
``forward`` call used to leave in the model's place).
"""

import contextlib
import sys

import pytest
import torch
from helpers import by_test, by_test_and_backend, run_with_report
from torch import nn

MODELS = """
import unittest

import pytest
import torch
from torch import nn

# The bodies call torch.jit and torch.onnx themselves, which torch deprecates: the user's own warnings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x, scale: float = 1.0):
        return self.head(torch.relu(self.stem(x))) * scale

    def encode(self, x):
        return self.stem(x)


class Pair(nn.Module):
    # Three tensor arguments, one by keyword: recorded whole or the replay raises.
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, y, mask=None):
        out = self.lin(x) + y
        return out if mask is None else out * mask


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(3, 2)

    def forward(self, z):
        return self.out(z)


class Unscriptable(nn.Module):
    # Fine in eager and under trace; TorchScript cannot compile a call through **kwargs.
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)

    def forward(self, x):
        options = {"dim": -1}
        return torch.softmax(self.stem(x), **options)
"""

TESTS = """

def test_forward():
    out = Net().eval().forward(torch.randn(3, 4))
    assert out.shape == (3, 3)


def test_forward_then_a_child():
    net = Net().eval()
    net.forward(torch.randn(3, 4))
    net.stem(torch.randn(3, 4))  # a submodule the test also calls: not a module of its own


def test_siblings():
    net, dec = Net().eval(), Decoder().eval()
    dec.forward(net.forward(torch.randn(3, 4)))


@pytest.mark.torchexport(module="Decoder")
def test_module_picks_a_forward_call():
    Decoder().eval().forward(Net().eval()(torch.randn(3, 4)))


def test_forward_hides_nothing():
    Unscriptable().eval().forward(torch.randn(3, 4))


def test_trace_module_names_other_methods():
    net = Pair().eval()
    torch.jit.trace_module(net, {"forward": (torch.randn(3, 4), torch.randn(3, 4))})
    torch.jit.trace_module(Net().eval(), {"forward": torch.randn(3, 4), "encode": torch.randn(3, 4)})


def test_library_helper():
    from mylib import compile_model

    compile_model(Pair().eval(), torch.randn(3, 4), torch.randn(3, 4), torch.ones(3, 4))


def test_export_keyword_arguments():
    torch.export.export(Pair().eval(), (torch.randn(3, 4), torch.randn(3, 4)), {"mask": torch.ones(3, 4)})


def test_onnx_export_arguments():
    torch.onnx.export(Pair().eval(), (torch.randn(3, 4), torch.randn(3, 4)), kwargs={"mask": torch.ones(3, 4)}, dynamo=True)


class TestUnit(unittest.TestCase):
    def test_forward(self):
        Net().eval().forward(torch.randn(3, 4))
"""

# A model library's helper, imported before the test ran: it holds torch's own function.
MYLIB = """
from torch.jit import trace_module


def compile_model(module, *inputs):
    return trace_module(module, {"forward": inputs[:2] + (inputs[2],)})
"""

MARKED = "@pytest.mark.torchexport(backends=['trace', 'export'], examples=3)"


def run_suite(tester, backends="trace,export"):
    tester.makepyfile(test_routes=MODELS + TESTS, mylib=MYLIB)
    tester.makeconftest(
        f"""
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("torchexport") is None:
            item.add_marker(pytest.mark.torchexport(backends={backends.split(",")!r}, examples=3))
"""
    )
    return run_with_report(tester, "-p", "no:randomly", key=by_test_and_backend)


def findings(row, kind):
    return [f["detail"] for f in row["findings"] if f["kind"] == kind]


def test_each_route_checks_the_module_the_test_handed_over(tester):
    tester.syspathinsert()
    result, rows = run_suite(tester)
    expected = {
        "test_forward": "Net",
        "test_forward_then_a_child": "Net",
        "test_siblings": "Net",
        "test_module_picks_a_forward_call": "Decoder",
        "test_forward_hides_nothing": "Unscriptable",
        "test_trace_module_names_other_methods": "Pair",
        "test_library_helper": "Pair",
        "test_export_keyword_arguments": "Pair",
        "test_onnx_export_arguments": "Pair",
        "TestUnit::test_forward": "Net",
    }
    assert {test for test, _ in rows} == set(expected)
    for (test, backend), row in rows.items():
        assert row["module"] == expected[test], (test, backend, row["module"])
        assert row["status"] == "pass", (test, backend, row["message"])
    # The outermost modules only: a child the test also called is no "other module"...
    assert not findings(rows[("test_forward_then_a_child", "trace")], "other_modules")
    # ...a sibling is, and module= reaches the one called through forward().
    assert findings(rows[("test_siblings", "trace")], "other_modules") == [
        'the test also called Decoder; Net (its first call) was checked: pick another with module="Decoder"'
    ]
    # Recorded whole: the three arguments, the keyword one by name (a replay with fewer raises).
    for test in ("test_library_helper", "test_export_keyword_arguments", "test_onnx_export_arguments"):
        # The latency row names the recorded inputs: all three, mask among them.
        assert rows[(test, "export")]["latency_ms"]["input"].count("float32[3, 4]") == 3, (test, rows[(test, "export")])
    assert rows[("test_library_helper", "trace")]["recorded_via"] == "torch.jit.trace_module"
    assert rows[("test_export_keyword_arguments", "trace")]["recorded_via"] == "torch.export.export"
    assert rows[("test_onnx_export_arguments", "trace")]["recorded_via"] == "torch.onnx.export"
    handed = findings(rows[("test_trace_module_names_other_methods", "export")], "recorded_call")
    assert handed == ["Pair was handed to torch.jit.trace_module by the test; its example inputs were checked"]
    assert (
        "the test also called Net"
        in findings(rows[("test_trace_module_names_other_methods", "export")], "other_modules")[0]
    )


def test_trace_module_says_which_other_methods_it_was_handed(tester):
    tester.makepyfile(
        test_tm=MODELS
        + f"""
{MARKED}
def test_methods():
    torch.jit.trace_module(Net().eval(), {{"forward": torch.randn(3, 4), "encode": torch.randn(3, 4)}})
"""
    )
    result, (row, *_) = run_with_report(tester, key=None)
    result.assert_outcomes(passed=2)
    assert row["module"] == "Net"
    assert findings(row, "recorded_call") == [
        "Net was handed to torch.jit.trace_module by the test with inputs for forward and encode: "
        "forward was checked, encode is not"
    ]


def test_a_direct_forward_call_no_longer_hides_the_models_own_failure(tester):
    # Before: forward() skipped __call__, the stem Linear was recorded and passed script.
    tester.makepyfile(
        test_s=MODELS
        + """
@pytest.mark.torchexport(backends=["script"], examples=3)
def test_script():
    Unscriptable().eval().forward(torch.randn(3, 4))
"""
    )
    result, (row, *_) = run_with_report(tester, key=None)
    result.assert_outcomes(failed=1)
    assert (row["module"], row["status"]) == ("Unscriptable", "export_error"), row["message"]
    assert "test_s.py:" in row["message"]


def record(body):
    from pytest_torchexport.recording.recorder import Recorder

    with Recorder() as recorder:
        body()
    return [(c.name, c.args, c.kwargs, c.via) for c in recorder.recording.calls]


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, scale=1.0, *rest, bias=None, **extra):
        return self.lin(x) * scale


def test_a_direct_call_is_recorded_as_the_test_bound_it():
    x = torch.ones(1, 2)
    model = Scaled().eval()
    [(name, args, kwargs, via)] = record(lambda: model.forward(x))
    assert (name, len(args), kwargs, via) == ("Scaled", 1, {}, None)  # defaults left out, as the test left them
    [(_, args, kwargs, _)] = record(lambda: model.forward(x, 2.0, 3, bias=None, tag="t"))
    assert args[1:] == (2.0, 3) and kwargs == {"tag": "t"}
    [(_, args, kwargs, _)] = record(lambda: model.forward(x, bias=torch.zeros(2)))
    assert len(args) == 1 and set(kwargs) == {"bias"}
    # Inside a module call, forward() of a child is part of that call.
    outer = nn.Sequential(model)
    assert [c[0] for c in record(lambda: outer(x))] == ["Sequential"]


class CallsItselfWhileBuilt(nn.Module):
    """A constructor that calls its own forward, and one that raises half-way."""

    def __init__(self, fail=False):
        super().__init__()
        self.inner = Scaled()
        self.forward(torch.ones(1, 2))  # a warm-up call: building, not testing
        if fail:
            raise ValueError("refused")

    def forward(self, x):
        return self.inner.forward(x)


def test_a_direct_call_after_a_constructor_is_recorded_however_the_constructor_ended():
    # The recorder watches a constructor only for its end: after it, returned or raised, a
    # direct forward call is seen again.
    x = torch.ones(1, 2)

    def body():
        with contextlib.suppress(ValueError):
            CallsItselfWhileBuilt(fail=True)
        model = CallsItselfWhileBuilt()
        model.forward(x)
        Scaled().forward(x)

    assert [c[0] for c in record(body)] == ["CallsItselfWhileBuilt", "Scaled"]


def test_torch_compile_then_call_is_the_test_call():
    model = Scaled().eval()
    compiled = torch.compile(model, backend="eager")
    [(name, args, _, via)] = record(lambda: compiled(torch.ones(1, 2)))
    assert (name, via) == ("Scaled", "torch.compile")


COMPILES_ITSELF = """
import logging

import pytest
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)))


@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_compiled(caplog):
    torch._logging.set_logs(side_effects=True)  # dynamo logs each object a graph mutates
    try:
        with caplog.at_level(logging.DEBUG):
            torch.compile(Net().eval(), fullgraph=True, backend="eager")(torch.randn(3, 4))
    finally:
        torch._logging.set_logs()
    assert [r.getMessage()[:80] for r in caplog.records if "Mutating object" in r.getMessage()] == []
"""


def test_a_test_that_compiles_its_model_compiles_it_without_the_plugin(tester):
    # dynamo traces the plugin's Module.__call__ for each submodule call inside the test's own
    # torch.compile; the recorder's bookkeeping there was a mutation dynamo replayed after every
    # call of the compiled code.
    tester.makepyfile(test_compiles=COMPILES_ITSELF)
    result, rows = run_with_report(tester)
    result.assert_outcomes(passed=1)
    assert (rows["trace"]["status"], rows["trace"]["module"]) == ("pass", "Net")


def test_another_profiler_keeps_its_place():
    # cProfile's profiler is neither replaced nor removed; direct forward calls then go unseen
    # (the old way: the model's first child is recorded after it), module calls not.
    import cProfile

    model = Scaled().eval()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        calls = record(lambda: (model(torch.ones(1, 2)), model.forward(torch.ones(1, 2))))
        still_profiling = sys.getprofile() is not None
    finally:
        profiler.disable()
    assert [c[0] for c in calls] == ["Scaled", "Linear"] and still_profiling
    assert sys.getprofile() is None


COMPILED = """
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::torch.jit.TracerWarning")


class Body(nn.Module):
    def forward(self, x):
        return x * 2 - 1


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Body()

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:  # trace freezes this branch; torch.export refuses it
            return y
        return -y


def speed_up(model):
    # A library's compile(): scripts a part of the model in place.
    model.body = torch.jit.script(model.body)
    return model


@pytest.mark.torchexport(backends=["trace", "export"], examples=4)
def test_compiled_in_place():
    model = speed_up(Parent().eval())
    model(torch.randn(4, 3))
"""


def test_a_cause_names_the_parts_compiled_in_place_before_the_call(tester):
    # A failure of the module as called says what the test did to it first, whichever stage
    # wrote the cause: the export (torch.export's refusal) or the search (trace's frozen branch).
    tester.makepyfile(test_compiled=COMPILED)
    result, rows = run_with_report(tester)
    result.assert_outcomes(failed=2)
    assert (rows["trace"]["status"], rows["export"]["status"]) == ("mismatch", "export_error")
    for row in rows.values():
        assert row["module"] == "Parent"
        cause = next(line for line in row["message"].splitlines() if line.startswith("Likely cause: "))
        assert cause.startswith(
            "Likely cause: Parent held compiled submodules when the test called it: body (scripted by torch.jit.script); "
            "the exporter met that code, not the Python code of those parts: where the test or a helper compiled "
            "them in place, a fresh Parent may export differently; "
        ), cause
        assert "test_compiled.py:20" in cause  # and the model's own line after it
        assert [f["where"] for f in row["findings"] if f["kind"] == "compiled_parts"] == ["body"]


class Builds(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = torch.jit.trace(nn.Linear(2, 2), (torch.ones(1, 2),))  # building, not testing

    def forward(self, x):
        return self.cell(x)


@pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.trace"
)  # trace and trace_method deprecated (2.13: Deprecation-, 2.14: FutureWarning)
def test_a_module_handed_to_an_exporter_while_constructing_is_no_test_call():
    assert [c[0] for c in record(lambda: Builds().eval()(torch.ones(1, 2)))] == ["Builds"]


REFUSES = """
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, edges):
        return self.lin(x)[edges]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.torchexport(backends=["trace"])
def test_only_refuses():
    # A library helper's check that a scripted module refuses a bad call: its only call raises.
    conv = torch.jit.script(Conv())
    with pytest.raises(RuntimeError):
        conv(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["trace"])
def test_refuses_then_serves():
    conv = Conv().eval()
    with pytest.raises(TypeError):
        conv(torch.randn(3, 4))
    conv(torch.randn(3, 4), torch.tensor([0, 2]))


@pytest.mark.torchexport(backends=["trace"])
def test_refused_module_then_another():
    with pytest.raises(TypeError):
        Conv()(torch.randn(3, 4))
    Head().eval()(torch.randn(3, 4))
"""


def test_a_call_that_raised_in_the_test_is_no_example(tester):
    # [Raised In The Test] e3nn's assert_auto_jitable calls the scripted module with one bad
    # argument of six to see it refused: that call is no example of how the model is served.
    tester.makepyfile(test_refuses=REFUSES)
    result, rows = run_with_report(tester, key=by_test)
    result.assert_outcomes(passed=2, failed=1)
    only = rows["test_only_refuses"]
    assert (only["status"], only["module"], only["cause_kind"]) == ("usage_error", "Conv", "usage")
    assert only["likely_cause"].startswith(
        "every call the test made of Conv raised in the test itself (1 call; RuntimeError: forward() is missing value "
        "for argument 'edges'"
    ), only["likely_cause"]
    assert "Call Conv in the test with inputs it accepts" in only["message"]
    served = rows["test_refuses_then_serves"]
    assert (served["status"], served["module"]) == ("pass", "Conv")
    assert "x: float32[3, 4]" in served["latency_ms"]["input"] and "edges: int64[2]" in served["latency_ms"]["input"]
    assert (rows["test_refused_module_then_another"]["status"], rows["test_refused_module_then_another"]["module"]) == (
        "pass",
        "Head",
    )
    # Under --torchexport-auto a test whose calls all raised is skipped with the reason, as one that called none.
    (tester.path / "test_refuses.py").unlink()
    tester.makepyfile(test_unmarked=REFUSES.replace('@pytest.mark.torchexport(backends=["trace"])\n', ""))
    auto, (row,) = run_with_report(
        tester, "--torchexport-auto", "--torchexport-backends=trace", "-k", "only_refuses", name="auto.json", key=None
    )
    auto.assert_outcomes(skipped=1)
    assert row["status"] == "skipped" and "raised in the test itself" in row["message"]
