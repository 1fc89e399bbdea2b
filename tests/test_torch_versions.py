"""What torch's deprecation of TorchScript does to the plugin (contract 4 and 5).

torch 2.13 warns ``DeprecationWarning`` on every ``torch.jit`` call and torch 2.14 warns
``FutureWarning``; a later torch may drop TorchScript, keeping ``torch.jit.trace`` and
``torch.jit.script`` only to raise. The suite runs on 2.13 and 2.14 (tox -e torch214,
.ci/run); the torch without TorchScript is simulated with a monkeypatch.
"""

import pytest
import torch
from helpers import by_test_and_backend, mlp_test, run_with_report
from models import MLP

from pytest_torchexport._compat import torchscript_unavailable
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options


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
    assert "deprecated" not in result.stdout.str() + result.stderr.str()
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
