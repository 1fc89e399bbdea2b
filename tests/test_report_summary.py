"""The terminal summary table: every line fits the terminal, and no cause is cut to a stub."""

import pytest

from pytest_torchexport.results.report import Finding, Result
from pytest_torchexport.results.table import summary_lines

CAUSE = "frozen_branch src/models/detection/heads.py:118"
LONG = (
    "export baked the argument scale=2.0 into the artifact: the failing input has scale=0.0, "
    "and with scale=2.0 the same input passes; declare it with inputs= or keep it fixed"
)


def results():
    frozen = Result(
        "trace",
        "cpu",
        "mismatch",
        nodeid="tests/test_heads.py::test_detection_head_scores[torchexport-trace]",
        examples=5,
        max_abs_err=1.5,
        message="Exported outputs differ\nx",
        findings=[Finding("frozen_branch", "if scores.sum() > 0", where=CAUSE.split()[1])],
    )
    baked = Result(
        "export",
        "cpu",
        "mismatch",
        nodeid="tests/test_heads.py::test_scale[torchexport-export]",
        examples=9,
        max_abs_err=4.0,
        message=f"Exported outputs differ\nLikely cause: {LONG}",
        likely_cause=LONG,
    )
    clean = Result("script", "cpu", "pass", nodeid="tests/test_heads.py::test_scale[torchexport-script]", examples=33)
    return [frozen, baked, clean]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_every_line_fits_and_the_cause_is_whole(width):
    lines = summary_lines(results(), width=width)
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    text = " ".join(" ".join(line.split()) for line in lines)
    assert CAUSE in text  # the short cause is never clipped, at any width
    # A long one wraps over at most three lines, its words whole.
    assert "export baked the argument scale=2.0 into the artifact" in text
    row = next(i for i, line in enumerate(lines) if line.startswith("test_scale") and " export " in line)
    following = [line for line in lines[row + 1 :] if line.startswith(" ")][:4]
    shown = following if width < 100 else [lines[row], *following]  # under the row at 80 columns
    assert 1 < len(shown) <= 3
    assert LONG in text or shown[-1].endswith("…")  # whole, or visibly cut


def test_wide_terminal_keeps_one_line_per_short_cause():
    lines = summary_lines(results(), width=120)
    assert any(line.startswith("test_detection_head_scores") and line.endswith(CAUSE) for line in lines)
    assert any(line.startswith("test_scale") and "script" in line and line.rstrip().endswith("33") for line in lines)


def test_narrow_terminal_puts_the_cause_under_its_row():
    lines = summary_lines(results(), width=80)
    row = next(i for i, line in enumerate(lines) if line.startswith("test_detection_head_scores"))
    assert lines[row + 1] == "    " + CAUSE


def test_cells_say_what_to_do_without_repeating_the_row():
    from pytest_torchexport.results.outcome import Stop, settle, xfail
    from pytest_torchexport.stages import side_effects

    xpass = Result("script", "cpu", "pass")
    xfail(xpass, "flaky?")
    noisy = Result("trace", "cuda", "pass", module="Noisy")
    with pytest.raises(Stop) as stop:
        side_effects._nondeterministic(noisy, "Eager output depends on the RNG", "forward draws random numbers")
    settle(noisy, stop.value.outcome)
    assert xpass.cause == "the defect may be fixed: remove 'script' from xfail="
    assert (
        noisy.message
        == "Eager output depends on the RNG [backend=trace, device=cuda] (Noisy): forward draws random numbers"
    )
    assert noisy.cause == "Eager output depends on the RNG: forward draws random numbers"


def test_latency_column_only_where_it_leaves_the_cause_its_column():
    timed = results()
    for r in timed:
        r.extra["latency_ms"] = {"eager": 1.93, "artifact": 0.812, "input": "x: float32[4, 16]"}
    wide = summary_lines(timed, width=120)
    assert wide[0].split()[:8] == ["test", "module", "backend", "status", "max", "err", "ex", "ms"]
    assert any(
        line.startswith("test_scale") and "script" in line and line.rstrip().endswith("1.9/0.81") for line in wide
    )
    narrow = summary_lines(timed, width=80)
    assert "ms e/a" not in narrow[0] and summary_lines(results(), width=80) == narrow


def test_a_sentence_every_backend_of_a_test_shares_is_said_once():
    said = "timm:resnet18x: timm is not installed in this environment (/venv/bin/python)."
    rows = [
        Result(
            backend=b, device="cpu", status="usage_error", test="timm:resnet18x", likely_cause=said, cause_kind="usage"
        )
        for b in ("trace", "script", "onnx")
    ]
    frozen = Finding("frozen_branch", "a branch was frozen", "models.py:19")
    rows += [
        Result(
            backend=b, device="cpu", status="mismatch", test="test_gate", findings=[frozen], cause_kind="frozen_branch"
        )
        for b in ("trace", "onnx")
    ]
    text = "\n".join(summary_lines(rows, width=80))
    assert text.count("timm is not installed") == 1 and text.count("as above") == 2, text
    assert text.count("frozen_branch models.py:19") == 2, text  # a finding's line stays on each row
