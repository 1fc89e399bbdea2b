"""The marker, the fixture and the session report, run through real pytest sessions."""

import json

import pytest
from helpers import mlp_test, run_with_models, run_with_report
from models import mlp_and_gate_source

MODELS = mlp_and_gate_source()
# Where the data-dependent `if` lands in the written test file (pytester strips the source).
GATE_LINE = MODELS.strip().splitlines().index("        if x.sum() > 0:") + 1


def test_bare_marker_validates_the_called_module_on_every_default_backend(tester):
    result = run_with_models(
        tester,
        """
@pytest.mark.torchexport
def test_classifier():
    model = MLP().eval()
    out = model(torch.randn(4, 8))
    assert out.shape == (4, 3)
""",
        "-v",
        "--torchexport-report=out.json",
        name="test_m",
        passed=4,
    )
    result.stdout.re_match_lines(
        [
            r".*test_m.py::test_classifier\[torchexport-trace\] PASSED.*",
            r".*test_m.py::test_classifier\[torchexport-script\] PASSED.*",
            r".*test_m.py::test_classifier\[torchexport-onnx\] PASSED.*",
            r".*test_m.py::test_classifier\[torchexport-export\] PASSED.*",
        ]
    )
    report = json.loads((tester.path / "out.json").read_text())
    assert report["version"] == 1
    assert report["environment"]["torch"].startswith("2.")
    assert report["environment"]["devices"] == ["cpu"]
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"trace", "script", "onnx", "export"}
    row = rows["onnx"]
    assert row["nodeid"] == "test_m.py::test_classifier[torchexport-onnx]"
    assert row["test"] == "test_m.py::test_classifier"
    assert row["module"] == "MLP"
    assert row["status"] == "pass" and row["device"] == "cpu"
    assert row["examples"] >= 8
    assert 0 < row["max_abs_err"] < row["atol"]
    assert set(row["timings"]) >= {"export_s", "load_s", "run_s"}
    # The search's parts: the artifact's and eager's forwards and the comparisons lie within it.
    t = row["timings"]
    assert 0 < t["run_s"] + t["reference_s"] + t["compare_s"] <= t["search_s"], t
    for key in ("max_rel_err", "rtol", "failing_example", "message", "findings"):
        assert key in row


def test_failure_names_backend_input_error_and_line(tester):
    result = run_with_models(
        tester,
        """
@pytest.mark.torchexport(backends=["trace", "script"])
def test_gate():
    Gate()(torch.ones(3, 4))
""",
        "-rA",
        name="test_g",
        passed=1,
        failed=1,
    )
    # Only the message: the plugin's own frames are hidden from the traceback.
    assert "plugin.py" not in result.stdout.str()
    result.stdout.re_match_lines(
        [
            r"E\s+pytest_torchexport.errors.ExportMismatch: Exported outputs differ from eager \[backend=trace, device=cpu\]",
            r"\s+x: float32\[1, 4\].*",
            r"\s+.*Greatest absolute difference: .*",
            rf"\s+Likely cause: trace froze the branch at test_g.py:{GATE_LINE} \(`if x.sum\(\) > 0:`\).*",
        ]
    )
    # The summary table: one row per backend, the module checked, status, error, examples, cause. At pytest's
    # 80 columns the latency column is left out so each cause keeps its own column
    # (test_report_summary.py shows it on a wide terminal; the report always has it).
    result.stdout.re_match_lines(
        [
            r"=+ torchexport summary =+",
            r"test\s+module\s+backend\s+status\s+max err\s+ex\s+cause",
            # At 80 columns the module column leaves the cause too narrow a column: it goes under the row.
            r"test_gate\s+Gate\s+trace\s+mismatch\s+\S+\s+\d+",
            rf"\s+frozen_branch test_g.py:{GATE_LINE}",
            r"test_gate\s+Gate\s+script\s+pass\s+0\s+\d+",
        ]
    )
    assert "ms e/a" not in result.stdout.str()


def test_k_selects_a_backend_and_parametrization_stays_in_the_id(tester):
    result = run_with_models(
        tester,
        """
@pytest.mark.parametrize("width", [8])
@pytest.mark.torchexport(backends=["trace", "onnx-legacy"])
def test_param(width):
    MLP().eval()(torch.randn(2, width))
""",
        "-v",
        "-k",
        "onnx",
        name="test_p",
        passed=1,
        deselected=1,
    )
    result.stdout.re_match_lines([r".*test_p.py::test_param\[8-torchexport-onnx-legacy\] PASSED.*"])


def test_xfail_is_strict(tester):
    result = run_with_models(
        tester,
        """
@pytest.mark.torchexport(backends=["trace", "script"], xfail={"trace": "frozen branch", "script": "wrongly marked"})
def test_gate():
    Gate()(torch.ones(3, 4))
""",
        "-rxXf",
        name="test_x",
        xfailed=1,
        failed=1,
    )
    result.stdout.re_match_lines([r".*script passed but is marked xfail \('wrongly marked'\).*"])


@pytest.mark.parametrize(
    ("marker", "headline"),
    [
        (
            "torchexport(backend=['trace'])",
            r".*unknown torchexport option\(s\) 'backend' \(did you mean 'backends'\?\); valid options: backends, devices.*",
        ),
        (
            "torchexport(backends=['tvm'])",
            r".*unknown torchexport backend\(s\) 'tvm'; valid backends: trace, script, onnx.*",
        ),
        ("torchexport(devices=['tpu'])", r".*unknown torchexport device\(s\) 'tpu'; valid devices: cpu, cuda, auto.*"),
        ("torchexport(xfail={'onnx2': 'x'})", r".*xfail= names unknown backend\(s\) 'onnx2'.*"),
        ("torchexport(examples=0)", r".*examples= takes an integer >= 1, got 0.*"),
    ],
)
def test_bad_marker_options_fail_the_tests_own_item(tester, marker, headline):
    result = run_with_models(
        tester,
        f"""
@pytest.mark.{marker}
def test_model():
    MLP()(torch.randn(2, 8))
""",
        name="test_u",
    )
    # The session goes on; the test's one item fails with the usage error (a usage_error row).
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"test_u.py::test_model: " + headline])
    result.stdout.re_match_lines([r"FAILED test_u.py::test_model\[torchexport-marker\].*"])


def test_bad_command_line_backend_is_a_usage_error(tester):
    tester.makepyfile(test_c="def test_nothing():\n    pass\n")
    result = tester.runpytest("--torchexport-backends=trace,nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.re_match_lines([r".*unknown torchexport backend\(s\) 'nope'.*"])


def test_a_marked_test_that_calls_no_module_says_so(tester):
    tester.makepyfile(
        test_n="""
import pytest, torch

@pytest.mark.torchexport(backends=["trace"])
def test_no_model():
    torch.randn(3)
"""
    )
    result = tester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*is marked torchexport but called no nn.Module.*",
            r".*torchexport\(Model\(\), \(torch.randn\(2, 8\),\)\).*",
        ]
    )


def test_the_test_body_runs_and_its_own_assertions_count(tester):
    result = run_with_models(
        tester,
        """
@pytest.mark.torchexport(backends=["trace"])
def test_wrong_shape():
    out = MLP().eval()(torch.randn(4, 8))
    assert out.shape == (4, 2)
""",
        name="test_b",
        failed=1,
    )
    result.stdout.re_match_lines([r"E\s+assert torch.Size\(\[4, 3\]\) == \(4, 2\)"])


def test_module_option_picks_among_several_calls_and_outermost_only(tester):
    tester.makepyfile(
        test_s=MODELS
        + """
@pytest.mark.torchexport(backends=["trace", "script"], module="Gate")
def test_two_models():
    MLP().eval()(torch.randn(2, 8))   # recorded, not selected
    Gate()(torch.ones(2, 4))          # selected by class name
"""
    )
    result, rows = run_with_report(tester, name="r.json", key=None)
    result.assert_outcomes(passed=1, failed=1)
    assert {r["module"] for r in rows} == {"Gate"}


def test_class_and_module_level_markers(tester):
    result = run_with_models(
        tester,
        """
pytestmark = pytest.mark.torchexport(backends=["script"])

class TestModels:
    def test_mlp(self):
        MLP().eval()(torch.randn(2, 8))

    @pytest.mark.torchexport(backends=["trace"])
    def test_closest_marker_wins(self):
        MLP().eval()(torch.randn(2, 8))
""",
        "-v",
        name="test_c",
        passed=2,
    )
    result.stdout.re_match_lines(
        [r".*test_mlp\[torchexport-script\] PASSED.*", r".*test_closest_marker_wins\[torchexport-trace\] PASSED.*"]
    )


def test_fixture_returns_the_report_and_reaches_the_session_report(tester):
    run_with_models(
        tester,
        """
def test_gate(torchexport):
    report = torchexport(MLP().eval(), (torch.randn(3, 8),), dims={"batch": (1, 16)}, backends=["trace", "export"])
    assert report.ok
    assert [r.status for r in report.results] == ["pass", "pass"]

def test_failing(torchexport):
    from pytest_torchexport import ExportMismatch
    with pytest.raises(ExportMismatch) as info:
        torchexport(Gate(), (torch.ones(3, 4),), backends=["trace"])
    assert info.value.report.results[0].status == "mismatch"
""",
        "--torchexport-report=r.md",
        name="test_f",
        passed=2,
    )
    md = (tester.path / "r.md").read_text()
    assert md.startswith("# torchexport parity report")
    assert "| `test_f.py::test_gate` | trace | cpu | ✅ pass |" in md
    assert "| `test_f.py::test_failing` | trace | cpu | ❌ mismatch |" in md
    assert "## Failures" in md


def test_user_properties_reach_junit_xml(tester):
    tester.makepyfile(test_j=mlp_test("trace"))
    tester.runpytest("--junitxml=j.xml").assert_outcomes(passed=1)
    xml = (tester.path / "j.xml").read_text()
    assert '<property name="torchexport.backend" value="trace"' in xml
    assert '<property name="torchexport.status" value="pass"' in xml


def test_cuda_items_are_skipped_with_a_reason_without_a_gpu(tester):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tester.makepyfile(test_d=mlp_test("trace"))
    result = tester.runpytest("-v", "-rs", "--torchexport-devices=cpu,cuda")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.re_match_lines(
        [
            r".*test_mlp\[torchexport-trace-cpu\] PASSED.*",
            r".*test_mlp\[torchexport-trace-cuda\] SKIPPED.*",
            r".*CUDA is not available on this machine.*",
        ]
    )


def test_third_party_backend_through_the_hook(tester):
    tester.makeconftest(
        """
from helpers import Pickled

def pytest_torchexport_backends(config):
    return {"pickled": Pickled}
"""
    )
    tester.makepyfile(test_t=mlp_test("pickled"))
    result = tester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([r".*test_mlp\[torchexport-pickled\] PASSED.*"])


def test_warnings_as_errors_suite_still_runs(tester):
    # tester's ini has filterwarnings=error: torch.jit's DeprecationWarnings and the
    # TracerWarning must not escape the plugin's calls.
    tester.makepyfile(test_w=mlp_test("trace", "script", "onnx-legacy"))
    tester.runpytest("-W", "error").assert_outcomes(passed=3)


def test_under_inference_mode_and_no_grad(tester):
    run_with_models(
        tester,
        """
@pytest.mark.torchexport(backends=["trace"])
def test_inference():
    with torch.inference_mode():
        MLP().eval()(torch.randn(2, 8))

@pytest.mark.torchexport(backends=["trace"])
def test_no_grad():
    with torch.no_grad():
        MLP().eval()(torch.randn(2, 8))
""",
        name="test_i",
        passed=2,
    )
