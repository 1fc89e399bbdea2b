"""What torch's deprecation of TorchScript does to the plugin (docs/backends.md, docs/reference.md).

torch 2.13 warns ``DeprecationWarning`` on every ``torch.jit`` call and torch 2.14 warns
``FutureWarning``; a later torch may drop TorchScript, keeping ``torch.jit.trace`` and
``torch.jit.script`` only to raise. The suite runs on 2.13 and 2.14 (tox -e torch214,
.ci/run); the torch without TorchScript is simulated with a monkeypatch.
"""

import pytest
import torch
from helpers import by_test_and_backend, mlp_test, run_with_report
from models import MLP, mlp_and_gate_source

from pytest_torchexport._compat import torchscript_unavailable
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options

pytestmark = pytest.mark.torch_compat


def test_warnings_as_errors_suite_runs_and_tracer_warnings_stay_findings(tester):
    # Every torch.jit call the plugin makes warns that TorchScript is deprecated: none of
    # it may reach a `-W error` suite. The TracerWarning on Gate's data-dependent `if` is
    # not noise: it must come back as a finding, not as an error or nothing.
    tester.makepyfile(
        test_w=mlp_test("trace", "script")
        + """

@pytest.mark.torchexport(backends=["trace"], xfail={"trace": "frozen branch"})
def test_gate():
    Gate()(torch.ones(3, 4))
"""
    )
    result, rows = run_with_report(tester, "-W", "error", "-rA", key=by_test_and_backend)
    result.assert_outcomes(passed=2, xfailed=1)
    # torch's own deprecation warnings stay out; the summary says it once, in its own words.
    said = [line for line in (result.stdout.str() + result.stderr.str()).splitlines() if "deprecated" in line]
    assert len(said) == 1 and said[0].startswith("torchexport: torch "), said
    assert rows[("test_mlp", "trace")]["status"] == rows[("test_mlp", "script")]["status"] == "pass"
    gate = rows[("test_gate", "trace")]
    assert gate["status"] == "xfail"
    assert {"frozen_branch", "tracer_warning"} <= {f["kind"] for f in gate["findings"]}


def test_torchscript_is_available_on_this_torch():
    # The probe behind the skip must not skip TorchScript on a torch that has it.
    assert torchscript_unavailable("trace") is None
    assert torchscript_unavailable("script") is None


@pytest.fixture
def torchscript_removed(monkeypatch):
    # No torch without TorchScript can be installed here, so make its entry points raise
    # as such a torch would (the legacy ONNX exporter is built on the same tracer).
    def removed(*args, **kwargs):
        raise RuntimeError("TorchScript is no longer supported")

    monkeypatch.setattr(torch.jit, "trace", removed)
    monkeypatch.setattr(torch.jit, "script", removed)
    monkeypatch.setattr(torch.jit, "_get_trace_graph", removed, raising=False)


@pytest.mark.parametrize(
    "backend",
    [
        "trace",
        "script",
        "onnx-legacy",
    ],
)
def test_torch_without_torchscript_skips_with_the_reason(torchscript_removed, backend):
    # Inline: the check runs in this process, where the monkeypatch is.
    opts = Options.build(backends=[backend], examples=2, isolation="inline")
    r = run(MLP().eval(), (torch.randn(2, 8),), None, opts, Session()).by_backend()[backend]
    assert r.status == "skipped", r.message
    assert r.message.startswith(f"{backend} skipped: TorchScript is not available in torch {torch.__version__}")
    assert "no longer supported" in r.message


# [TorchScript deprecation] torch 2.13.0 (DeprecationWarning), 2.14.1 and 2.15.0 (FutureWarning)
# warn on every torch.jit call; quiet_torch keeps it out of the user's warnings, so the
# session summary says it once, with how far those modules already are on `export`.
DEPRECATED_FILE = (
    mlp_test("trace", "script", "export")
    + """

@pytest.mark.torchexport(backends=["trace"])
def test_traced_only():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))
"""
)

SAID = [
    r"torchexport: torch \S+ deprecates TorchScript \(`torch\.jit\.(trace|script)` is deprecated\. Please switch to "
    r"`torch\.compile` or `torch\.export`\.\)$",
    r"torchexport: of the 2 modules checked on trace or script, 1 pass on export, "
    r'1 not checked on export \(add "export" to their backends=\)$',
]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_summary_says_once_that_this_torch_deprecates_torchscript(tester, workers):
    # Real on every torch CI runs: each of them deprecates TorchScript (tests/test_torch_message_patterns.py).
    tester.makepyfile(test_d=DEPRECATED_FILE)
    result, rows = run_with_report(tester, *workers, key=by_test_and_backend)
    result.assert_outcomes(passed=4)
    result.stdout.re_match_lines(SAID)
    assert len([line for line in result.stdout.lines if "deprecates TorchScript" in line]) == 1
    assert max(len(line) for line in result.stdout.lines if line.startswith("torchexport")) <= 200
    said = rows[("test_mlp", "trace")]["torchscript_deprecated"]
    assert said.startswith(f"torch {torch.__version__}: `torch.jit.trace` is deprecated")
    assert "torchscript_deprecated" not in rows[("test_mlp", "export")]


def test_a_failing_export_is_not_counted_as_passing(tester):
    # Gate's data-dependent `if` is kept by script and refused by torch.export: 0 of 1 pass there.
    tester.makepyfile(
        test_g=mlp_and_gate_source()
        + """

@pytest.mark.torchexport(backends=["script", "export"], xfail={"export": "data-dependent branch"})
def test_gate():
    Gate()(torch.ones(3, 4))
"""
    )
    result = tester.runpytest()
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.re_match_lines(
        [
            r"torchexport: torch \S+ deprecates TorchScript .*\)$",
            r"torchexport: of the 1 module checked on trace or script, 0 pass on export, 1 does not "
            r"\(failed or xfailed there\)$",
        ]
    )


def test_a_torch_that_does_not_deprecate_torchscript_says_nothing(tester, monkeypatch):
    # The flag is _compat's: stand in for a torch without the warning (the checks fork from here).
    from pytest_torchexport import _compat

    monkeypatch.setattr(_compat, "torchscript_deprecation", lambda caught: None)
    tester.makepyfile(test_d=DEPRECATED_FILE)
    result = tester.runpytest()
    result.assert_outcomes(passed=4)
    assert "deprecates TorchScript" not in result.stdout.str()


def test_no_count_of_torchscript_modules_where_none_was_checked_on_trace_or_script(tester):
    # openvino converts through torch.jit.trace, so torch's deprecation is said; no trace or script
    # row means there is nothing to count.
    pytest.importorskip("openvino")
    tester.makepyfile(
        test_o=mlp_and_gate_source() + "\n\n@pytest.mark.torchexport\ndef test_mlp():\n    MLP()(torch.randn(3, 8))\n"
    )
    result = tester.runpytest("--torchexport-backends=openvino")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.stdout.lines if "modules checked on trace or script" in line]
