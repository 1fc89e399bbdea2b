"""Bundles (``--torchexport-bundle``, docs/howto-verify.md) and ``python -m pytest_torchexport verify``:
one run writes each check's artifact with its inputs and eager's outputs as plain files; verify
checks them again, with the same rows and pytest's exit codes."""

import json
import subprocess
import sys

import pytest
import torch
from helpers import run_with_models

from pytest_torchexport import verify
from pytest_torchexport.results import bundle_files as files

TESTS = """
@pytest.mark.torchexport(backends=["trace", "export"], examples=4)
def test_mlp():
    MLP().eval()(torch.randn(2, 8))


@pytest.mark.torchexport(backends=["trace"], examples=6)
def test_gate():
    Gate().eval()(torch.randn(2, 4).abs())
"""


@pytest.fixture
def bundles(tester):
    """One session writing bundles (the C++ stage off: not what these tests are about)."""
    result = run_with_models(
        tester, TESTS, "--torchexport-bundle=bundles", "--torchexport-cpp=off", "--torchexport-report=out.json"
    )
    result.assert_outcomes(passed=2, failed=1)
    rows = {
        (r["test"].rsplit("::", 1)[-1], r["backend"]): r
        for r in json.loads((tester.path / "out.json").read_text())["results"]
    }
    return tester.path / "bundles", rows


def test_a_bundle_per_check_is_written_and_verified_with_the_same_rows(bundles, tmp_path, capsys):
    root, rows = bundles
    folders = files.find(root)
    assert [f.relative_to(root).as_posix() for f in folders] == [
        "test_m.py_test_gate/trace",
        "test_m.py_test_mlp/export",
        "test_m.py_test_mlp/trace",
    ]
    mlp = rows[("test_mlp", "export")]
    assert mlp["bundle"]["path"].endswith("test_m.py_test_mlp/export") and mlp["bundle"]["cases"] >= 2
    manifest = json.loads((root / "test_m.py_test_mlp/export" / files.MANIFEST).read_text())
    assert manifest["written_by"]["torch"] == torch.__version__ and manifest["artifact_files"] == ["model.pt2"]
    assert [c["kind"] for c in manifest["cases"]][0] == "recorded"
    # The failing check keeps its shrunk failing input, with eager's outputs on it.
    gate = json.loads((root / "test_m.py_test_gate/trace" / files.MANIFEST).read_text())
    assert gate["status"] == "mismatch" and gate["cases"][-1]["kind"] == "failing"
    assert not list(root.rglob("*.pkl")) and not list(root.rglob("*inputs*.pt"))  # nothing pickled of ours

    code = verify.main([str(root / "test_m.py_test_mlp"), "-o", str(tmp_path / "v.json"), "-o", str(tmp_path / "v.md")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"torchexport verify: 2 bundles with torch {torch.__version__}" in out and out.rstrip().endswith(
        "no failure"
    )
    report = json.loads((tmp_path / "v.json").read_text())
    assert sorted((r["backend"], r["status"]) for r in report["results"]) == [("export", "pass"), ("trace", "pass")]
    assert all(r["examples"] == len(manifest["cases"]) for r in report["results"] if r["backend"] == "export")
    assert "| `test_m.py::test_mlp` | export | cpu | ✅ pass |" in (tmp_path / "v.md").read_text()
    # The failing check fails again, as pytest does: exit 1.
    assert verify.main([str(root), "--backend", "trace"]) == 1
    assert "MISMATCH           test_m.py::test_gate[torchexport-trace] [trace]" in capsys.readouterr().out


def test_a_tampered_stored_output_is_a_mismatch(bundles, capsys):
    root, _ = bundles
    folder = root / "test_m.py_test_mlp/trace"
    manifest = json.loads((folder / files.MANIFEST).read_text())
    key = manifest["cases"][0]["expected"]["list"][0]["tensor"]
    tensors = files.load_tensors(folder / files.TENSORS)
    tensors[key] = tensors[key] + 0.5
    files.save_tensors(folder / files.TENSORS, tensors)
    assert verify.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "Bundled trace artifact differs from eager [backend=trace, device=cpu] (MLP) on the recorded input" in out
    assert f"written by torch {torch.__version__}, run with torch {torch.__version__}" in out


def test_an_artifact_that_does_not_load_names_the_torch_that_wrote_it(bundles, tmp_path):
    root, _ = bundles
    folder = root / "test_m.py_test_mlp/export"
    manifest = json.loads((folder / files.MANIFEST).read_text())
    manifest["written_by"]["torch"] = "2.99.0"
    (folder / files.MANIFEST).write_text(json.dumps(manifest))
    (folder / "artifact" / "model.pt2").write_bytes(b"PK\x03\x04 not a zip")
    row = verify.verify_bundle(folder)
    assert row.status == "load_error"
    assert row.message.splitlines()[1] == f"written by torch 2.99.0, read by torch {torch.__version__}"
    (finding,) = row.findings
    assert finding.kind == "standalone_load" and "written by torch 2.99.0" in finding.detail
    assert "this torch" in row.likely_cause


def test_verify_from_the_command_line_exits_as_pytest(bundles, tmp_path):
    root, _ = bundles
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_torchexport",
            "verify",
            str(root / "test_m.py_test_mlp"),
            "-o",
            str(tmp_path / "v.html"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "v.html").read_text().startswith("<!DOCTYPE html>")
    missing = subprocess.run(
        [sys.executable, "-m", "pytest_torchexport", "verify", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 4 and "no such folder" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    # a folder holding no bundle is a usage error (4), not "no failure"
    assert subprocess.run([sys.executable, "-m", "pytest_torchexport", "verify", str(empty)]).returncode == 4


def test_the_tree_encoding_keeps_containers_scalars_and_tensors(tmp_path):
    tree = {"x": torch.arange(4.0), "pair": (1, float("nan")), "items": [None, True, "s"], "empty": torch.zeros(0, 3)}
    tensors = {}
    node = files.encode(tree, tensors, "t.")
    files.save_tensors(tmp_path / "t.safetensors", tensors)
    back = files.decode(json.loads(json.dumps(node)), files.load_tensors(tmp_path / "t.safetensors"))
    assert torch.equal(back["x"], tree["x"]) and back["empty"].shape == (0, 3)
    assert back["pair"][0] == 1 and back["pair"][1] != back["pair"][1] and back["items"] == [None, True, "s"]
    safetensors = pytest.importorskip("safetensors.torch")  # a standard safetensors file
    assert torch.equal(safetensors.load_file(tmp_path / "t.safetensors")["t.0"], tree["x"])
    with pytest.raises(files.UnsupportedValue, match="a object value"):
        files.encode(object(), {}, "")
