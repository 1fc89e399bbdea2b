"""Every page of docs/ runs as written, and shows what it prints.

A page is a script (docs/regen_outputs.py parses and runs it): each ```python block headed
``# path.py`` writes that file (the heading line is not part of it, as the pages' line
numbers assume), and each ``$ command`` in a console block runs in the page's folder, in
order. A command must not crash (no traceback the page does not show, no INTERNALERROR),
pytest's closing counts must be the ones shown, and every output the page shows must be an
excerpt of the real one, run-to-run noise aside (durations, memory sizes, paths: see
in docs/regen_outputs.py). A stale page fails here; ``python
docs/regen_outputs.py PAGE`` rewrites its outputs from a real run.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md") if "$ " in p.read_text())

_spec = importlib.util.spec_from_file_location("regen_outputs", DOCS / "regen_outputs.py")
regen = importlib.util.module_from_spec(_spec)
sys.modules["regen_outputs"] = regen  # dataclasses look their module up while the class is made
_spec.loader.exec_module(regen)
steps, run, Command, File = regen.steps, regen.run, regen.Command, regen.File

_COUNTS = re.compile(r"(\d+) (passed|failed|xfailed|xpassed|errors?|skipped|deselected)")


def closing_counts(output: str) -> dict[str, int] | None:
    """pytest's closing line ('2 failed, 4 passed in 5.21s') as {outcome: n}, if any."""
    for line in reversed(output.strip().splitlines()):
        if re.search(r"\b(passed|failed|xfailed|no tests ran)\b.* in [\d.]+s", line):
            return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _COUNTS.findall(line)}
    return None


def check_step(page: str, step: Command, output: str, returncode: int) -> None:
    """One command's real output against what the page shows of it."""
    where = f"{page}: $ {step.line}\n{output[-3000:]}"
    assert "INTERNALERROR" not in output, where
    if "Traceback (most recent call last)" not in step.shown:
        assert "Traceback (most recent call last)" not in output, where
    shown = closing_counts(step.shown)
    if shown is not None:
        assert closing_counts(output) == shown, where
    exits = re.findall(r"^exit=\d+$", step.shown, flags=re.M)  # `...; echo "exit=$?"`
    errors = [line for line in step.shown.splitlines() if line.startswith("ERROR:")]
    if shown is None and not errors and not exits:
        assert returncode == 0, where
    if not step.loose:
        differs = regen.mismatch(step.shown, output)
        assert differs is None, (
            f"{page}: $ {step.line}\nthe page's output is stale (python docs/regen_outputs.py {page}):\n{differs}"
        )


@pytest.mark.docs
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page, tmp_path):
    ran = regen.run_page(
        DOCS / page, tmp_path, on_step=lambda step, proc: check_step(page, step, proc.stdout, proc.returncode)
    )
    assert ran, f"{page} shows commands but none ran"


def test_the_page_parser_finds_files_commands_and_counts():
    text = (
        "```python\n# tests/m.py\nx = 1\n```\n\n```\n$ COLUMNS=120 python -m pytest -q\n"
        "..F\n2 failed, 4 passed, 1 xfailed in 5.21s\n$ python m.py\nok\n```\n"
    )
    files, first, second = steps(text)
    assert files == File("tests/m.py", "x = 1\n")
    assert first.line == "COLUMNS=120 python -m pytest -q"
    assert closing_counts(first.shown) == {"failed": 2, "passed": 4, "xfailed": 1}
    assert second.line == "python m.py" and closing_counts(second.shown) is None
    assert text[first.start : first.end] == first.shown and text[second.start : second.end] == "ok\n"


SUMMARY = """\
F.                                                                       [100%]
=================================== FAILURES ===================================
_____________________ test_scorer_shape[torchexport-trace] _____________________
E   ExportMismatch: Exported outputs differ from eager [backend=trace, device=cpu]
    Failed on 1 of 4 inputs tried (search and shrinking); smallest failing input:
============================= torchexport summary ==============================
test               module  backend  status    max err  ex  cause
test_scorer_shape  Scorer  trace    mismatch  0.63     4
test_scorer_shape  Scorer  script   pass      0        33
report written to /tmp/pytest-of-me/pytest-3/test_a0/report.json (export_s: 0.51, "reference_s": 0.12)
1 failed, 1 passed in 6.02s
"""


def test_a_shown_output_is_an_excerpt_of_the_real_one_up_to_timings_and_paths():
    shown = SUMMARY.replace("6.02s", "13.90s").replace("/tmp/pytest-of-me/pytest-3/test_a0", "/home/x/proj")
    shown = shown.replace("0.51", "2.5").replace("0.12", "7")
    assert regen.mismatch(shown, SUMMARY) is None
    lines = shown.splitlines()
    assert regen.mismatch("\n".join([lines[0], "...", *lines[5:]]), SUMMARY) is None  # `...` leaves lines out
    assert regen.mismatch("\n".join(lines[6:9]), SUMMARY) is None  # an excerpt starts and ends anywhere
    assert (
        regen.mismatch("E   ExportMismatch: Exported outputs differ...", SUMMARY) is None
    )  # a trailing ... abbreviates
    table = "test_scorer_shape  Scorer  script  pass  0  33"  # a table re-aligned by a wider duration
    assert regen.mismatch(table, SUMMARY) is None


@pytest.mark.parametrize(
    "stale",
    [
        ("script   pass      0        33", "script   pass      0        31"),  # examples counted
        ("trace    mismatch  0.63", "trace    mismatch  0.62"),  # an error's size
        ("trace    mismatch", "trace    pass    "),  # a status
        ("1 of 4 inputs", "1 of 5 inputs"),
        ("1 failed, 1 passed", "2 passed"),
    ],
)
def test_a_count_a_status_or_a_number_that_changed_is_stale(stale):
    old, new = stale
    assert regen.mismatch(SUMMARY.replace(old, new), SUMMARY) is not None


def test_lines_shown_out_of_order_or_run_together_across_an_elision_are_stale():
    lines = SUMMARY.splitlines()
    assert regen.mismatch("\n".join([lines[7], lines[6]]), SUMMARY) is not None
    assert regen.mismatch("\n".join([lines[0], lines[5]]), SUMMARY) is not None  # no `...` between them


def test_regenerating_keeps_elisions_and_unchanged_lines_and_takes_the_rest_from_the_run():
    real = SUMMARY.replace("0        33", "0        31").replace(
        "test_scorer_shape  Scorer  script",
        "test_scorer_shape  Scorer  onnx     pass      1e-06    31\ntest_scorer_shape  Scorer  script",
    )
    shown = "\n".join([SUMMARY.splitlines()[0], "...", *SUMMARY.splitlines()[5:]]).replace("6.02s", "9.99s") + "\n"
    new = regen.regenerate(shown, real)
    assert regen.mismatch(new, real) is None
    assert new.splitlines()[:2] == [SUMMARY.splitlines()[0], "..."]  # the page's elision stays
    assert "1 failed, 1 passed in 9.99s" in new  # a line that still matches stays as the page wrote it
    assert "onnx     pass      1e-06    31" in new and "0        31" in new and "0        33" not in new
    assert regen.regenerate(new, real) == new  # a second run changes nothing


def test_an_output_block_of_its_own_is_tied_to_a_hidden_command_and_loose_blocks_are_marked():
    text = (
        "```\n$ python -m pytest -q --torchexport-report=r.md\n.\n1 passed in 1.00s\n```\n\n"
        "<!-- $ cat r.md -->\n```markdown\n# torchexport parity report\n```\n\n"
        "<!-- output: loose -->\n```\n$ python -m pytest -n 2\n...\n1 passed in 3.00s\n```\n"
    )
    first, hidden, loose = steps(text)
    assert hidden.line == "cat r.md" and hidden.shown == "# torchexport parity report\n"
    assert text[hidden.start : hidden.end] == hidden.shown and not hidden.loose
    assert loose.loose and not first.loose


def test_a_cause_cell_wrapped_elsewhere_by_a_wider_timing_column_still_matches():
    shown = (
        "test          backend  status    max err  ex  ms e/a     cause\n"
        "test_encoder  trace    mismatch  0.0024   1   0.21/0.14  the difference starts in layers.3.act (FastGELU), whose code in\n"
        "                                                         the artifact computes differently; every input took the same\n"
        "                                                         control-flow path, so it is numeric, not a…\n"
    )
    real = (
        "test          backend  status    max err  ex  ms e/a      cause\n"
        "test_encoder  trace    mismatch  0.0024   1   0.37/0.082  the difference starts in layers.3.act (FastGELU),\n"
        "                                                          whose code in the artifact computes differently;\n"
        "                                                          every input took the same control-flow path, so it i…\n"
    )
    assert regen.mismatch(shown, real) is None
    assert regen.mismatch(shown.replace("layers.3.act", "layers.2.act"), real) is not None
    assert regen.mismatch(shown.replace("0.0024", "0.0025"), real) is not None


def test_a_stretch_the_page_skipped_without_an_elision_comes_back_as_one():
    shown = "....                                     [100%]\n4 passed in 9.02s\n"
    real = (
        "....                                     [100%]\n== torchexport summary ==\n"
        + "row of the table\n" * 6
        + "4 passed in 11.40s\n"
    )
    assert regen.mismatch(shown, real) is not None  # not consecutive lines of the run
    new = regen.regenerate(shown, real)
    assert new == "....                                     [100%]\n...\n4 passed in 9.02s\n"
    assert regen.mismatch(new, real) is None


def test_an_ellipsis_within_a_line_stands_for_any_text():
    real = '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/ctypes/__init__.py", line 519 in string_at\n'
    assert regen.mismatch('  File ".../ctypes/__init__.py", line 519 in string_at', real) is None
    assert regen.mismatch('  File ".../ctypes/__init__.py", line 518 in string_at', real) is not None
