"""`python -m pytest_torchexport merge`: N shards' reports become one report and one gate."""

import json
import subprocess
import sys

import pytest
from helpers import mlp_test
from models import mlp_and_gate_source

from pytest_torchexport.results.merge import Exit, Shard, main, merge

ENV = {"python": "3.11.7", "torch": "2.13.0", "onnx": "1.19.0", "onnxruntime": "1.31.1", "devices": ["cpu"]}


def row(test, status="pass", backend="trace", **extra):
    return {
        "nodeid": f"tests/test_m.py::{test}[torchexport-{backend}]",
        "test": f"tests/test_m.py::{test}",
        "module": "MLP",
        "backend": backend,
        "device": "cpu",
        "status": status,
        "examples": 3,
        "max_abs_err": 0.0 if status == "pass" else 2.0,
        "atol": 1e-05,
        "message": "" if status == "pass" else "Exported outputs differ from eager [backend=trace, device=cpu]\nbad",
        "likely_cause": None if status == "pass" else "bad",
        "cause_kind": None if status == "pass" else "numeric",
        "findings": [],
        **extra,
    }


def report(path, *rows, **env):
    path.write_text(json.dumps({"version": 1, "environment": {**ENV, **env}, "results": list(rows)}))
    return str(path)


def merged_rows(path):
    return [(r["nodeid"].split("::")[1], r["status"]) for r in json.loads(path.read_text())["results"]]


def test_a_rerun_item_keeps_its_last_row_and_the_merge_says_so(tmp_path, capsys):
    a = report(tmp_path / "a.json", row("test_a", "mismatch"), row("test_b"))
    b = report(tmp_path / "b.json", row("test_a"), row("test_c"))
    assert main([a, b, "-o", str(tmp_path / "m.json")]) == Exit.OK
    # The kept row stands where the item first appeared: the report still reads in test order.
    assert merged_rows(tmp_path / "m.json") == [
        ("test_a[torchexport-trace]", "pass"),
        ("test_b[torchexport-trace]", "pass"),
        ("test_c[torchexport-trace]", "pass"),
    ]
    out = capsys.readouterr().out.splitlines()
    assert f"merged 2 rows from {a}" in out and f"merged 2 rows from {b}" in out
    assert (
        f"RERUN        tests/test_m.py::test_a[torchexport-trace] [trace]: kept the last row ({b}: pass), "
        f"dropped {a}: mismatch"
    ) in out
    assert "dropped 1 earlier row of 1 rerun item" in out
    assert out[-1] == f"torchexport merge: 3 results from 2 reports written to {tmp_path / 'm.json'}: no failure"


def test_rows_within_one_file_count_too_and_backend_and_device_are_part_of_the_item():
    shard = Shard("a.json", ENV, [row("test_a", "timeout"), row("test_a", backend="onnx"), row("test_a")])
    result = merge([shard])
    assert [(r["backend"], r["status"]) for r in result.results] == [("trace", "pass"), ("onnx", "pass")]
    [rerun] = result.reruns
    assert rerun.key == "tests/test_m.py::test_a[torchexport-trace]|trace|cpu"
    assert [r["status"] for _, r in rerun.dropped] == ["timeout"]


def test_reports_from_different_torch_versions_are_refused(tmp_path, capsys):
    a = report(tmp_path / "a.json", row("test_a"))
    b = report(tmp_path / "b.json", row("test_b"), torch="2.12.0")
    assert main([a, b, "-o", str(tmp_path / "m.md")]) == Exit.USAGE_ERROR
    err = capsys.readouterr().err
    assert f"ERROR: the reports come from different versions: torch 2.13.0 ({a}) vs 2.12.0 ({b})" in err
    assert "--allow-mixed" in err
    assert not (tmp_path / "m.md").exists()


def test_allow_mixed_merges_and_the_environment_lists_what_was_mixed(tmp_path, capsys):
    a = report(tmp_path / "a.json", row("test_a"))
    b = report(tmp_path / "b.json", row("test_b"), onnxruntime="1.30.0", devices=["cuda"])
    assert main([a, b, "-o", str(tmp_path / "m.json"), "--allow-mixed"]) == Exit.OK
    env = json.loads((tmp_path / "m.json").read_text())["environment"]
    assert env["mixed"] == {"onnxruntime": {"1.31.1": [a], "1.30.0": [b]}}
    assert env["onnxruntime"] == "1.31.1 / 1.30.0" and env["torch"] == "2.13.0"
    assert env["devices"] == ["cpu", "cuda"]
    assert "mixed environment: onnxruntime 1.31.1 / 1.30.0" in capsys.readouterr().out


def test_without_a_baseline_the_merge_converts_and_lists_failing_rows_by_status(tmp_path, capsys):
    # A verdict a shard wrote against its own baseline does not count here: no --baseline, no "known".
    a = report(tmp_path / "a.json", row("test_a"), row("test_b", "mismatch", baseline="known"))
    assert main([a, "-o", str(tmp_path / "m.json")]) == Exit.OK
    out = capsys.readouterr().out
    assert "mismatch     tests/test_m.py::test_b[torchexport-trace] [trace]: bad" in out
    assert "FAILED" not in out and "1 failing row, not gated (no --baseline)" in out
    assert "pass --baseline to judge them here too" in out
    assert "baseline" not in json.loads((tmp_path / "m.json").read_text())["results"][1]


def test_a_shard_from_before_v4_merges_without_its_cause_parsed(tmp_path, capsys):
    # No likely_cause/cause_kind keys: an older report. The cause is not read back from its message.
    old = {k: v for k, v in row("test_b", "mismatch").items() if k not in ("likely_cause", "cause_kind")}
    a = report(tmp_path / "a.json", row("test_a"), old)
    assert main([a, "-o", str(tmp_path / "m.json")]) == Exit.OK
    assert "mismatch     tests/test_m.py::test_b[torchexport-trace] [trace]\n" in capsys.readouterr().out
    written = json.loads((tmp_path / "m.json").read_text())["results"][1]
    assert written["likely_cause"] is None and written["cause_kind"] is None
    assert written["message"] == old["message"]


@pytest.fixture
def baseline(tmp_path):
    """test_a passed and test_b failed (a known mismatch) when the baseline was recorded."""
    return report(tmp_path / "base.json", row("test_a"), row("test_b", "mismatch"))


def test_a_regression_in_one_shard_fails_the_merged_gate(tmp_path, baseline, capsys):
    a = report(tmp_path / "a.json", row("test_a", "mismatch"))
    b = report(tmp_path / "b.json", row("test_b", "mismatch"))
    assert main([a, b, "-o", str(tmp_path / "m.json"), "--baseline", baseline]) == Exit.FAILED
    out = capsys.readouterr().out.splitlines()
    assert f"---- torchexport baseline {baseline} ----" in out
    assert (
        "REGRESSION   tests/test_m.py::test_a[torchexport-trace] [trace]: got worse: pass in the baseline, mismatch now"
    ) in out
    assert (
        "KNOWN        tests/test_m.py::test_b[torchexport-trace] [trace]: known failure recorded in the baseline (mismatch)"
    ) in out
    assert out[-1].endswith(": 1 failing")
    rows = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["baseline"] for r in rows] == ["regression", "known"]


def test_a_known_failure_passes_the_merged_gate(tmp_path, baseline, capsys):
    a = report(tmp_path / "a.json", row("test_a"))
    b = report(tmp_path / "b.json", row("test_b", "mismatch"), row("test_c", "skipped"))
    assert main([a, b, "-o", str(tmp_path / "m.json"), "--baseline", baseline]) == Exit.OK
    assert "KNOWN        tests/test_m.py::test_b" in capsys.readouterr().out
    # Judged exactly where the plugin judges: a skipped row carries no verdict.
    assert [r.get("baseline") for r in json.loads((tmp_path / "m.json").read_text())["results"]] == [
        "same",
        "known",
        None,
    ]


def test_a_new_failing_row_fails_the_merged_gate(tmp_path, baseline, capsys):
    a = report(tmp_path / "a.json", row("test_a"), row("test_new", "export_error"))
    assert main([a, "-o", str(tmp_path / "m.json"), "--baseline", baseline]) == Exit.FAILED
    out = capsys.readouterr().out
    assert (
        "NEW          tests/test_m.py::test_new[torchexport-trace] [trace]: not in the baseline (now export_error)"
        in out
    )


def test_markdown_output_is_the_plugins_table(tmp_path, baseline):
    a = report(tmp_path / "a.json", row("test_a"))
    b = report(tmp_path / "b.json", row("test_b", "mismatch"))
    assert main([a, b, "-o", str(tmp_path / "out" / "m.md"), "--baseline", baseline]) == Exit.OK
    text = (tmp_path / "out" / "m.md").read_text()
    assert text.startswith(
        "# torchexport parity report\n\ntorch 2.13.0, onnxruntime 1.31.1, Python 3.11.7, devices cpu\n"
    )
    assert "| test | backend | device | status |" in text
    assert "| `tests/test_m.py::test_a` | trace | cpu | ✅ pass |" in text
    assert "| `tests/test_m.py::test_b` | trace | cpu | ⚠️ mismatch (known) |" in text


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([], "ERROR: no reports to merge"),
        (["missing.json"], "ERROR: missing.json: cannot read it ([Errno 2] No such file or directory"),
        (["broken.json"], "ERROR: broken.json: cannot read it (Expecting property name"),
        (["other.json"], 'ERROR: other.json: not a torchexport report (no "results" list)'),
        (["a.json", "--baseline", "nope.json"], "ERROR: --baseline=nope.json: cannot read it"),
        (["a.json", "--frobnicate"], "ERROR: unrecognized arguments: --frobnicate"),
    ],
    ids=["no-inputs", "missing", "not-json", "not-a-report", "missing-baseline", "unknown-option"],
)
def test_unusable_inputs_are_usage_errors(tmp_path, monkeypatch, capsys, inputs, message):
    monkeypatch.chdir(tmp_path)
    report(tmp_path / "a.json", row("test_a"))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "other.json").write_text('{"tests": []}')
    assert _exit_code([*inputs, "-o", "m.json"]) == Exit.USAGE_ERROR
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        return exc.code


def test_exit_codes_are_pytests():
    assert (Exit.OK, Exit.FAILED, Exit.USAGE_ERROR, Exit.NO_RESULTS) == (
        pytest.ExitCode.OK,
        pytest.ExitCode.TESTS_FAILED,
        pytest.ExitCode.USAGE_ERROR,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    )


def test_the_command_never_imports_torch(tmp_path):
    report(tmp_path / "a.json", row("test_a"))
    code = (
        "import sys\nfrom pytest_torchexport.__main__ import main\n"
        "code = main(['merge', 'a.json', '-o', 'm.md'])\nprint(code, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "0 False", proc.stdout + proc.stderr


def test_two_shards_of_a_real_session_merge_into_their_union(tester):
    tester.makepyfile(
        test_one=mlp_test("trace"),
        test_two=mlp_and_gate_source()
        + '\n@pytest.mark.torchexport(backends=["trace"])\ndef test_gate():\n    Gate()(torch.ones(3, 4))\n',
    )
    common = ("--torchexport-examples=3", "--torchexport-seed=0")
    tester.runpytest("test_one.py", "--torchexport-report=shard-1.json", *common).assert_outcomes(passed=1)
    tester.runpytest("test_two.py", "--torchexport-report=shard-2.json", *common).assert_outcomes(failed=1)
    shards = [json.loads((tester.path / f"shard-{i}.json").read_text()) for i in (1, 2)]

    def merge_cli(*args):
        command = [sys.executable, "-m", "pytest_torchexport", "merge", "shard-1.json", "shard-2.json", *args]
        return subprocess.run(command, cwd=tester.path, capture_output=True, text=True, timeout=60)

    proc = merge_cli("-o", "merged.json")
    assert proc.returncode == Exit.OK, proc.stdout + proc.stderr
    merged = json.loads((tester.path / "merged.json").read_text())
    assert merged["results"] == shards[0]["results"] + shards[1]["results"]
    assert [r["status"] for r in merged["results"]] == ["pass", "mismatch"]
    assert "mismatch     test_two.py::test_gate[torchexport-trace] [trace]" in proc.stdout

    # The merged report is a baseline like any other: against it the trace mismatch is known.
    proc = merge_cli("-o", "merged.md", "--baseline", "merged.json")
    assert proc.returncode == Exit.OK, proc.stdout + proc.stderr
    assert "KNOWN        test_two.py::test_gate[torchexport-trace] [trace]" in proc.stdout
