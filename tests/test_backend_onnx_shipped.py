"""ONNX as shipped: onnx_optimize, onnx_fp16 and onnx_quantize check the
post-processed file on the onnx row, each against a budget that fits the step, and each
catches a defect that converts but computes something else on some input.

Everything runs for real: onnxruntime's optimizer and quantizer, onnxconverter-common's
float16 conversion. The one stand-in is a missing onnxconverter-common (it is installed
here), for the skip that names the install line.
"""

from __future__ import annotations

import math
import sys

import onnxruntime as ort
import pytest
import torch
from helpers import report_rows
from models import ManualLayerNorm
from torch import nn

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends import onnx_shipped
from pytest_torchexport.backends.onnx import FILENAME, OnnxSession
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.errors import InvalidArgument
from pytest_torchexport.options import Options

pytest.importorskip("onnxconverter_common")


class PriceModel(nn.Module):
    """Predicts log(price) and returns the price in dollars: above 65504 it is inf in float16."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 1)
        with torch.no_grad():
            self.fc.bias.fill_(10.5)  # about 36,000 dollars at the recorded input

    def forward(self, x):
        return torch.exp(self.fc(x)).squeeze(-1)


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class BagOfWords(nn.Module):
    """Token features summed over the sequence: the sum's range grows with the length."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.embed(x)).sum(1))


def one(module, args, **options):
    torch.manual_seed(0)
    opts = Options.build(backends=["onnx"], **{"examples": 8, "seed": 0, "isolation": "inline", **options})
    return run(module.eval(), args, None, opts, Session()).results[0]


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"onnx_optimize": "fast"}, "onnx_optimize= takes one of 'basic', 'extended', 'layout', 'all'"),
        ({"onnx_fp16": "yes"}, "onnx_fp16= takes True or a dict with the keys keep_io_types, op_block_list, max_error"),
        ({"onnx_fp16": {"keep": True}}, "(unknown: 'keep')"),
        ({"onnx_quantize": "int4"}, "onnx_quantize= takes 'dynamic' or 'static'"),
        (
            {"onnx_quantize": {"mode": "static", "weight_type": "int8"}},
            'weight_type=/activation_type= ("QInt8" or "QUInt8")',
        ),
        ({"onnx_quantize": {"mode": "dynamic", "max_error": 0}}, "onnx_quantize max_error= takes a number > 0"),
        ({"onnx_quantize": {"mode": "dynamic", "budget": 0}}, "onnx_quantize max_error= takes a number > 0"),
        ({"onnx_fp16": {"max_error": 0.1, "budget": 0.1}}, "takes max_error (budget is its earlier name), not both"),
        ({"onnx_fp16": True, "onnx_quantize": "dynamic"}, "onnx_fp16= and onnx_quantize= exclude each other"),
        ({"onnx_fp16": {"budget": 0.01}, "atol": {"onnx": 1e-3}}, "both set the onnx tolerance"),
    ],
)
def test_bad_values_name_the_option_and_the_valid_ones(given, message):
    with pytest.raises(InvalidArgument, match=None) as info:
        Options.build(**given)
    assert message in str(info.value)


def test_option_spellings_normalize():
    o = Options.build(onnx_optimize="ORT_ENABLE_EXTENDED", onnx_quantize="static", atol={"trace": 1e-3})
    assert o.onnx_shipped.optimize == "extended"
    assert (o.onnx_quantize.mode, o.onnx_quantize.weight_type, o.onnx_quantize.budget) == ("static", "QInt8", None)
    assert Options.build(onnx_optimize=True).onnx_optimize == "all"
    assert Options.build(onnx_fp16=False).onnx_shipped is None


def test_an_unknown_value_in_a_marker_fails_the_tests_item_as_a_usage_error(tester):
    tester.makepyfile(
        """
        import pytest, torch

        @pytest.mark.torchexport(onnx_quantize="int4")
        def test_m():
            torch.nn.Linear(2, 2)(torch.randn(1, 2))
        """
    )
    result = tester.runpytest("-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*::test_m: *onnx_quantize= takes 'dynamic' or 'static'*", "FAILED *test_m[[]torchexport-marker[]]*"]
    )


# -- budgets ------------------------------------------------------------------------------


def test_default_budgets_follow_the_unit_and_the_op_depth():
    fp16 = onnx_shipped.default_budget("fp16", 16)
    assert fp16 == pytest.approx(8 * 2**-11 * 4)
    assert onnx_shipped.default_budget("int8", 16) == pytest.approx(8 / 510 * 4)
    shipped = Options.build(onnx_quantize={"mode": "dynamic", "budget": 0.2}).onnx_shipped
    assert onnx_shipped.budget(shipped, 16) == (0.2, "onnx_quantize's max_error")
    assert onnx_shipped.budget(Options.build(onnx_optimize="all").onnx_shipped, 16) is None


def test_op_depth_is_the_longest_path():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    assert onnx_shipped.op_depth(model.SerializeToString()) == 3
    assert onnx.checker.check_model(model) is None


# -- each step: a clean model passes, a real defect is caught -----------------------------


def test_fp16_passes_within_its_budget_and_reports_the_steps():
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16=True, onnx_optimize="all")
    assert row.status == "pass", row.message
    shipped = row.extra["shipped"]
    assert shipped["steps"] == ["fp16", "optimize=all"]
    assert shipped["budget"] == pytest.approx(onnx_shipped.default_budget("fp16", shipped["op_depth"]))
    assert 0 < shipped["worst_of_scale"] < shipped["budget"]
    assert "checked the file as shipped (fp16, optimize=all)" in row.message


def test_fp16_overflow_is_caught_and_blamed_on_the_conversion():
    row = one(PriceModel(), (torch.randn(4, 16),), onnx_fp16=True)
    assert row.status == "mismatch", row.message
    assert "Likely cause: the fp16 step: on this input the exported model is within the allowed error" in row.message
    assert "overflows past 65504" in row.message
    assert "No allowed error covers a value that is inf or NaN on one side only" in row.message
    assert row.extra["shipped"]["blamed"] == "fp16"
    assert "shipped_step" in [f.kind for f in row.findings]


def test_fp16_with_float16_inputs_and_outputs_is_fed_and_compared_in_float32():
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16={"keep_io_types": False})
    assert row.status == "pass", row.message
    assert row.extra["shipped"]["steps"] == ["fp16 (float16 inputs and outputs)"]


def test_dynamic_quantization_passes_the_default_budget():
    row = one(Classifier(), (torch.randn(4, 16),), onnx_quantize={"mode": "dynamic", "weight_type": "QUInt8"})
    assert row.status == "pass", row.message
    shipped = row.extra["shipped"]
    assert shipped["budget_from"].startswith("int8 default: 8 x half an int8 step")
    assert shipped["worst_of_scale"] < shipped["budget"]


def test_static_quantization_calibrated_at_one_length_is_caught_at_another():
    row = one(
        BagOfWords(),
        (torch.randn(2, 8, 16),),
        dims={"batch": (1, 4), "seq": (1, 64)},
        dynamic={0: {0: "batch", 1: "seq"}},
        examples=15,
        onnx_quantize={"mode": "static", "weight_type": "QUInt8", "activation_type": "QUInt8"},
    )
    assert row.status == "mismatch", row.message
    assert "Likely cause: the quantize=static step" in row.message
    assert "are not among those static quantization was calibrated on" in row.message
    assert "of the output's scale" in row.message and "the allowed error is" in row.message
    assert 'onnx_quantize={"mode": "static", "max_error": ' in row.message


def test_a_budget_the_user_sets_is_honoured():
    row = one(
        BagOfWords(),
        (torch.randn(2, 8, 16),),
        dims={"batch": (1, 4), "seq": (1, 64)},
        dynamic={0: {0: "batch", 1: "seq"}},
        onnx_quantize={"mode": "static", "weight_type": "QUInt8", "activation_type": "QUInt8", "budget": 5.0},
    )
    assert row.status == "pass", row.message
    assert row.extra["shipped"]["budget"] == 5.0
    assert "(onnx_quantize's max_error)" in row.message


def test_explicit_tolerances_replace_the_budget():
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16=True, atol={"onnx": 1e-7}, rtol={"onnx": 0.0})
    assert row.status == "mismatch", row.message
    assert row.extra["shipped"]["budget"] is None
    assert row.extra["shipped"]["budget_from"] == "explicit rtol/atol"


def test_an_offline_optimization_that_changes_the_result_is_blamed_on_that_step():
    row = one(ManualLayerNorm(), (torch.randn(3, 8),), onnx_optimize="basic", special_values=True)
    assert row.status == "mismatch", row.message
    assert "Likely cause: the optimize=basic step" in row.message
    assert "offline optimization at basic rewrote the graph" in row.message
    assert row.extra["shipped"]["budget"] is None  # judged as the plain export is


def test_the_optimized_file_is_served_with_the_optimizations_off(tmp_path):
    model = Classifier().eval()
    with quiet_torch():
        program = torch.onnx.export(model, (torch.randn(2, 16),), dynamo=True, verbose=False)
    stages = onnx_shipped.process(
        program.model_proto.SerializeToString(), Options.build(onnx_optimize="all").onnx_shipped, tmp_path, None
    )
    (tmp_path / FILENAME).write_bytes(stages[-1].data)
    session = OnnxSession(str(tmp_path / FILENAME), "cpu")
    assert session.level == "ORT_DISABLE_ALL"
    x = torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(session((x,), {})[0], model(x), rtol=1e-4, atol=1e-5)
    assert ort.InferenceSession(stages[-1].data).get_modelmeta().custom_metadata_map[onnx_shipped.SERVE_LEVEL_KEY]


def test_a_step_that_fails_is_an_export_error_naming_the_step(monkeypatch):
    from onnxconverter_common import float16

    def refuse(model, **kwargs):
        raise ValueError("unsupported op")

    monkeypatch.setattr(float16, "convert_float_to_float16", refuse)
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16=True)
    assert row.status == "export_error"
    assert (
        "the post-processing step fp16 (onnxconverter-common's float16.convert_float_to_float16) failed" in row.message
    )


def test_without_onnxconverter_common_the_fp16_check_is_skipped_with_the_install_line(monkeypatch):
    # Stand-in: onnxconverter-common is installed here, so its absence is simulated.
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16=True)
    assert row.status == "skipped"
    assert "pip install onnxconverter-common" in row.message


# -- as users meet it ---------------------------------------------------------------------


def test_the_onnx_item_keeps_its_id_and_reports_the_shipped_file(tester):
    tester.makepyfile(
        test_shipped="""
        import pytest, torch
        from torch import nn

        @pytest.mark.torchexport(backends=["trace", "onnx"], onnx_fp16=True, seed=0)
        def test_classifier():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
            model(torch.randn(4, 16))
        """
    )
    result = tester.runpytest("-v", "-k", "onnx", "--torchexport-report=out.json")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.re_match_lines([r".*test_classifier\[torchexport-onnx\] PASSED.*"])
    (row,) = report_rows(tester, key=None)
    assert row["backend"] == "onnx" and row["status"] == "pass"
    assert row["shipped"]["steps"] == ["fp16"] and math.isfinite(row["shipped"]["worst_of_scale"])


def test_float16_outputs_despite_keep_io_types_are_a_finding():
    # onnxconverter-common 1.16 casts a blocked last op's result back to float16 at the output.
    row = one(Classifier(), (torch.randn(4, 16),), onnx_fp16={"op_block_list": ["Gemm"]})
    notes = [f.detail for f in row.findings if f.kind == "backend_note"]
    assert any("are float16, though keep_io_types=True keeps float32 outputs" in n for n in notes), notes
