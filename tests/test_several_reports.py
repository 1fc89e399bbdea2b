"""Several reports from one run: ``--torchexport-report`` and ``check --report`` are repeatable, and
``merge`` without ``--baseline`` converts (exit 0, no FAILED) rather than gating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import mlp_test

from pytest_torchexport.results.merge import Exit

ROOT = Path(__file__).resolve().parents[1]

GATE_TEST = '\n@pytest.mark.torchexport(backends=["trace"])\ndef test_gate():\n    Gate()(torch.ones(3, 4))\n'


def test_one_run_writes_a_json_a_markdown_and_an_html_report_and_merge_converts_without_gating(tester):
    tester.makepyfile(test_models=mlp_test("trace") + GATE_TEST)
    result = tester.runpytest(
        "--torchexport-examples=3",
        "--torchexport-seed=0",
        "--torchexport-report=out.json",
        "--torchexport-report=out.md",
        "--torchexport-report=out.html",
    )
    result.assert_outcomes(passed=1, failed=1)  # Gate's branch is frozen by trace
    result.stdout.fnmatch_lines(
        [
            "torchexport report written to out.json",
            "torchexport report written to out.md",
            "torchexport report written to out.html",
        ]
    )
    rows = json.loads((tester.path / "out.json").read_text())["results"]
    assert [r["status"] for r in rows] == ["pass", "mismatch"]
    assert "test_gate" in (tester.path / "out.md").read_text()
    assert (tester.path / "out.html").read_text().lstrip().lower().startswith("<!doctype html")

    # Converting that JSON to a page is no gate: exit 0, the failing row listed by its status.
    merge = subprocess.run(
        [sys.executable, "-m", "pytest_torchexport", "merge", "out.json", "-o", "page.html"],
        cwd=tester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merge.returncode == Exit.OK, merge.stdout + merge.stderr
    assert "FAILED" not in merge.stdout
    assert "mismatch     test_models.py::test_gate[torchexport-trace] [trace]" in merge.stdout
    assert "1 failing row, not gated (no --baseline)" in merge.stdout
    assert (tester.path / "page.html").is_file()


def test_check_writes_every_report_it_is_given(tmp_path):
    (tmp_path / "zoo.py").write_text(
        "import torch\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_torchexport",
            "check",
            "zoo.py:make",
            "--backends",
            "trace",
            "--examples",
            "2",
            "--inputs",
            "input: float32[batch=1..4, 4]",
            "--report",
            "a.json",
            "--report",
            "a.md",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "torchexport report written to a.json" in proc.stdout
    assert "torchexport report written to a.md" in proc.stdout
    assert json.loads((tmp_path / "a.json").read_text())["results"][0]["status"] == "pass"
    assert "zoo.py:make" in (tmp_path / "a.md").read_text()
