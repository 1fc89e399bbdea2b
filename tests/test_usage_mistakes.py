"""Each mistake once, with the fix: what a person who mistypes sees in the terminal."""

from __future__ import annotations

import pytest

MODEL = """
import pytest, torch

class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2

@pytest.mark.torchexport(backend="trace")
def test_bad():
    Double()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace"])
def test_good():
    Double()(torch.randn(2, 3))
"""


def test_mistyped_flags_and_values_are_usage_errors_with_the_fix(tester):
    tester.makepyfile(test_models=MODEL)
    # One letter off: not read as a path ("path cannot contain [] parametrization") nor an abbreviation.
    result = tester.runpytest("--torchexport-model-input=x: float32[batch=1..4, 3]")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: unknown flag --torchexport-model-input (did you mean '--torchexport-model-inputs'?)*"]
    )
    # Durations are strict: an empty value and an unknown unit are refused with the accepted forms.
    for value in ("", "5S"):
        result = tester.runpytest(f"--torchexport-budget={value}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"ERROR: --torchexport-budget={value}: torchexport option budget= takes a number of seconds (90), "
                f'"90s", "10m", "1.5h", or "off" for the full search; got \'{value}\''
            ]
        )
    result = tester.runpytest("--torchexport-backends=trace,onxx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --torchexport-backends=trace,onxx: unknown torchexport backend(s) 'onxx' "
            "(did you mean 'onnx'?); valid backends: trace, script, onnx, export, *"
        ]
    )


def test_a_bad_marker_fails_its_own_item_once_and_the_session_goes_on(tester):
    tester.makepyfile(test_models=MODEL)
    result = tester.runpytest("-rf")
    result.assert_outcomes(failed=1, passed=1)
    said = (
        "test_models.py::test_bad: unknown torchexport option(s) 'backend' (did you mean 'backends'?); valid options:"
    )
    assert sum(line.startswith(said) for line in result.outlines) == 1, result.stdout.str()
    result.stdout.re_match_lines([r"test_bad\s+-\s+marker\s+usage_error", r"test_good\s+Double\s+trace\s+pass"])
    result.stdout.fnmatch_lines(["FAILED test_models.py::test_bad[[]torchexport-marker[]]*"])
    # -k deselects the test with the bad marker: the session is clean.
    clean = tester.runpytest("-k", "good")
    clean.assert_outcomes(passed=1, deselected=1)
    assert "unknown torchexport option" not in clean.stdout.str() + clean.stderr.str()


def test_a_comma_between_model_inputs_is_said_with_the_semicolon_line(tester):
    tester.makepyfile(zoo="import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n")
    result = tester.runpytest(
        "--torchexport-model=zoo.py:make",
        "--torchexport-models-only",
        "--torchexport-model-inputs=x: float32[2, 4], y: float32[2]",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --torchexport-model-inputs: inputs are separated by ';', not ',' (a comma separates the sizes "
            "inside [[]...[]]): write 'x: float32[[]2, 4[]]; y: float32[[]2[]]'"
        ]
    )


def test_a_model_that_cannot_be_built_is_said_once_not_once_per_backend(tester):
    tester.makepyfile(zoo="import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n")
    result = tester.runpytest(
        "--torchexport-model=zoo.py:Make", "--torchexport-models-only", "--torchexport-backends=trace,script,onnx"
    )
    result.assert_outcomes(failed=3)  # each item still fails, with its usage_error row
    said = [line for line in result.outlines if line.startswith("zoo.py:Make: ")]
    assert len([line for line in said if "has no 'Make'; closest names: make" in line]) == 1, said
    assert said.count("zoo.py:Make: the model could not be checked (why is said once, at this test's first item)") == 2


def test_a_report_path_that_names_no_format_is_a_usage_error_listing_the_formats(tester, tmp_path):
    """A report path whose ending names no format would get JSON written under another name: refused
    before any check, by the plugin, ``merge -o`` and ``verify -o`` alike."""
    import subprocess
    import sys

    tester.makepyfile(test_models=MODEL)
    result = tester.runpytest("--torchexport-report=out.xml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --torchexport-report=out.xml: .xml is no report format; name a file ending .json (JSON), "
            ".md (Markdown), .html (a self-contained HTML page) (for JUnit XML, pytest's own --junitxml=PATH "
            "writes one row per item)"
        ]
    )
    assert not (tester.path / "out.xml").exists()
    report = tmp_path / "r.json"
    report.write_text('{"version": 1, "environment": {}, "results": []}')
    for command, said in (
        (["merge", str(report), "-o", "m.txt"], "-o=m.txt: .txt is no report format"),
        (["verify", str(tmp_path), "-o", "v"], "-o=v: the name has no extension to tell the format by"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pytest_torchexport", *command], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stderr
        assert f"ERROR: {said}" in done.stderr, done.stderr


def test_verify_with_no_bundle_or_an_unknown_backend_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    def verify(*args):
        return subprocess.run(
            [sys.executable, "-m", "pytest_torchexport", "verify", *args], capture_output=True, text=True, cwd=tmp_path
        )

    done = verify(str(tmp_path))
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert f"ERROR: {tmp_path}: holds no bundle (a folder --torchexport-bundle=DIR wrote)" in done.stderr
    assert "no failure" not in done.stdout
    done = verify(str(tmp_path), "--backend", "onnxx")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --backend onnxx: no such backend (did you mean 'onnx'?); one of trace, script, onnx," in done.stderr


def test_a_usage_error_under_check_names_the_options_typed(tmp_path):
    """``check`` passes its options to pytest as --torchexport-* flags; a mistake in one is said
    with the option the user typed, and a bad input spec's form reads as a whole sentence."""
    import subprocess
    import sys

    (tmp_path / "m.py").write_text(
        "import torch\n\n\nclass MLP(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(10, 4)\n"
    )

    def check(*args):
        return subprocess.run(
            [sys.executable, "-m", "pytest_torchexport", "check", "m.py:MLP", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    done = check("--backends", "tracee")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --backends tracee: unknown torchexport backend(s) 'tracee' (did you mean 'trace'?)" in done.stderr
    assert "--torchexport-backends" not in done.stderr
    done = check("--inputs", "x float32[4, 10")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: --inputs: cannot read 'x float32[4, 10'; write NAME: DTYPE[DIM=MIN..MAX, SIZE, ...] [in LOW..HIGH], "
        "one per input, separated by ';'; e.g. 'x: float32[batch=1..8, 3, 224, 224]'"
    ) in done.stderr


def test_a_skipped_backend_is_reported_at_the_test_not_inside_pytest(tester):
    # tensorrt needs CUDA, which CI never has: the row is skipped, and -rs names the test's file.
    import torch

    if torch.cuda.is_available():
        pytest.skip("tensorrt may run here")
    tester.makepyfile(
        test_models="import pytest, torch\n\n@pytest.mark.torchexport\ndef test_it():\n"
        "    torch.nn.Linear(3, 2)(torch.randn(2, 3))\n"
    )
    result = tester.runpytest("--torchexport-backends=tensorrt", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_models.py:3: [[]skipped[]] tensorrt skipped: *"])


def test_a_test_that_calls_no_model_under_auto_is_skipped_at_the_test(tester):
    # No marker: --torchexport-auto made the items. -rs names the test, not pluggy's frame; a skip
    # the test raises itself keeps its own line.
    tester.makepyfile(
        test_plain="import pytest\n\n\ndef test_nothing():\n    assert True\n\n\n"
        "def test_skips_itself():\n    pytest.skip('not here')\n"
    )
    result = tester.runpytest("--torchexport-auto", "--torchexport-backends=trace", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] test_plain.py:4: [[]skipped[]] the test called no nn.Module*",
            "SKIPPED [[]1[]] test_plain.py:9: not here",
        ]
    )
