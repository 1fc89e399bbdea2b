"""Kept artifacts (--torchexport-keep-artifacts) load back and read; latency on every passing row."""

import pytest
import torch
from helpers import run_with_report
from models import mlp_and_gate_source

MODELS = (
    mlp_and_gate_source()
    + """

@pytest.mark.torchexport(backends=["trace", "script", "onnx", "export", "onnx-legacy"])
def test_mlp():
    torch.manual_seed(0)
    model = MLP().eval()
    model(torch.randn(4, 8))


@pytest.mark.torchexport(backends=["trace"])
def test_gate():
    Gate()(torch.randn(3, 4))
"""
)


@pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.load` is deprecated"
)  # as users still call it (2.13: Deprecation-, 2.14: FutureWarning)
def test_kept_artifacts_load_back_and_every_passing_row_has_latency(tester, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # wide enough for the latency column beside the causes
    tester.makepyfile(test_m=MODELS)
    result, rows = run_with_report(
        tester,
        "--torchexport-keep-artifacts=kept",
        "--torchexport-repro-dir=repro",
        key=lambda r: (r["test"], r["backend"]),
    )
    result.assert_outcomes(passed=5, failed=1)

    # Latency at the recorded input, on every row that got a runnable artifact.
    for (test, backend), row in rows.items():
        latency = row["latency_ms"]
        assert latency["eager"] > 0 and latency["artifact"] > 0, (backend, latency)
        assert latency["input"] == ("x: float32[4, 8]" if test.endswith("mlp") else "x: float32[3, 4]")
    result.stdout.re_match_lines(
        [
            r"test\s+module\s+backend\s+status\s+max err\s+ex\s+ms e/a\s+cause",
            r"test_mlp\s+MLP\s+trace\s+pass\s+0\s+\d+\s+[\d.e-]+/[\d.e-]+$",
        ]
    )

    # Kept as saved, under DIR/<test>/<backend>/, named in the report.
    base = tester.path / "kept" / "test_m.py__test_mlp"
    for backend in ("trace", "script", "onnx", "export", "onnx-legacy"):
        assert rows[("test_m.py::test_mlp", backend)]["artifact_dir"] == f"kept/test_m.py__test_mlp/{backend}"
    torch.manual_seed(0)
    from torch import nn

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = model(x)
        for backend in ("trace", "script"):
            loaded = torch.jit.load(str(base / backend / "model.pt"))
            torch.testing.assert_close(loaded(x), expected)
            code = (base / backend / "code.py").read_text()
            assert "# ---- net (Sequential) ----" in code and "def forward" in code
        program = torch.export.load(str(base / "export" / "model.pt2"))
        torch.testing.assert_close(program.module()(x), expected)
        assert "aten.linear" in (base / "export" / "graph.txt").read_text()
    import onnxruntime

    for backend in ("onnx", "onnx-legacy"):
        session = onnxruntime.InferenceSession(str(base / backend / "model.onnx"))
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)
        assert (
            "Gemm" in (base / backend / "graph.txt").read_text()
            or "MatMul" in (base / backend / "graph.txt").read_text()
        )

    # A failure: the replay file and the kept artifact point at each other.
    gate = rows[("test_m.py::test_gate", "trace")]
    assert gate["status"] == "mismatch"
    assert "Artifact kept in kept/test_m.py__test_gate/trace" in gate["message"]
    repro = gate["failing_example"]["repro"]
    assert repro in (tester.path / "kept" / "test_m.py__test_gate" / "trace" / "REPLAY.txt").read_text()
    assert torch.load(tester.path / repro, weights_only=False)["artifact_dir"] == "kept/test_m.py__test_gate/trace"
