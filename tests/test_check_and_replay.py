"""check() as a plain library call, and replaying saved failures."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import Pickled
from models import MLP, Gate

from pytest_torchexport import ExportMismatch, InvalidArgument, check


def test_check_takes_backend_objects_without_pytest():
    report = check(MLP().eval(), (torch.randn(2, 8),), backends=["trace", Pickled()], examples=3)
    assert [(r.backend, r.status) for r in report.results] == [("trace", "pass"), ("pickled", "pass")]


def test_check_rejects_module_option():
    with pytest.raises(InvalidArgument, match="check\\(\\) is given its module directly"):
        check(MLP(), (torch.randn(2, 8),), module="MLP")


def test_empty_outputs_compare():
    class Empty(torch.nn.Module):
        def forward(self, x):
            return x[:, :0]

    report = check(Empty().eval(), (torch.randn(2, 3),), backends=["trace"], examples=3)
    # They compare without error, and compare nothing: not a pass, not a failure (test_compare_coverage.py).
    assert report.ok and report.results[0].status == "skipped"
    assert report.results[0].extra["compared"]["elements"] == 0


def test_check_is_quiet_under_warnings_as_errors(capfd):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ExportMismatch):
            check(Gate().eval(), (torch.ones(2, 3),), backends=["trace", "onnx", "onnx-legacy"], examples=4)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no exporter progress, graph dumps or onnxruntime logs


def test_repro_file_replays_until_fixed(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Gate(torch.nn.Module):
                def forward(self, x):
                    if x.sum() > 0:
                        return x * 2
                    return x - 1
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, ".")
        from mymodels import Gate
        from pytest_torchexport import check, ExportMismatch
        try:
            check(Gate().eval(), (torch.ones(3, 4),), backends=["trace"], examples=4, repro_dir="repro")
        except ExportMismatch as exc:
            print(exc.report.results[0].failing_example["repro"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    repro = out.stdout.strip().splitlines()[-1]
    assert repro == "repro/check-trace.pt", out.stderr
    replay = [sys.executable, "-m", "pytest_torchexport.replay", repro]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    still = subprocess.run(replay, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert still.returncode == 1, still.stdout + still.stderr
    assert "still failing: outputs differ from eager" in still.stdout
    assert not list(scratch.iterdir()), "replay left its saved artifact behind"
    # Fix the model: the same file now replays clean.
    (tmp_path / "mymodels.py").write_text(
        "import torch\n\nclass Gate(torch.nn.Module):\n    def forward(self, x):\n        return torch.where(x.sum() > 0, x * 2, x - 1)\n"
    )
    fixed = subprocess.run(replay, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "fixed: the artifact now matches eager on the saved input" in fixed.stdout
    # replay is also a subcommand beside check and merge; the module form above is its earlier spelling
    sub = subprocess.run(
        [sys.executable, "-m", "pytest_torchexport", "replay", repro],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sub.returncode == 0 and "fixed: the artifact now matches eager" in sub.stdout, sub.stdout + sub.stderr
