"""Errors of the plugin's own code are never taken for the model's: a bug around eager's call
fails the test with its traceback (never "eager rejected every input"), a copy of the module
that could not be taken is said, and a backend's optional answer that raises is said."""

import pytest
import torch
from helpers import Pickled, checked, checked_one, kinds, linear_test, run_with_report


def _planted_bug(*args, **kwargs):
    raise TypeError("planted plugin bug")


#: Plugin functions on the eager side of a check, each planted with a bug (a TypeError): the
#: shared inputs' held eager outputs the search reads, and the copy of the inputs every eager
#: call is made on. Before, the search took the first for eager refusing every input (a skip)
#: and the prelude took the second for the model raising on its example (a usage_error).
PLANTED = {
    "held_outputs": ("pytest_torchexport.stages.shared_search.SharedInputs", "expected"),
    "fresh_inputs": ("pytest_torchexport.reference.eager", "fresh"),
}


@pytest.mark.parametrize("where", sorted(PLANTED))
def test_a_plugin_bug_around_eagers_call_fails_the_test_with_its_traceback(tester, monkeypatch, where):
    # In this process: the inline run and the checks' forked children see it, and it is undone after.
    owner, attr = PLANTED[where]
    monkeypatch.setattr(f"{owner}.{attr}", _planted_bug)
    tester.makepyfile(test_m=linear_test(backends=["trace"]))
    result, rows = run_with_report(tester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "TypeError: planted plugin bug" in out
    # The traceback reaches the planted function, from the check's child where it ran there.
    assert "in _planted_bug" in out or "def _planted_bug" in out
    assert "rejected every generated input" not in out
    assert "usage_error" not in out and "skipped" not in out
    # ... and the report still has the check's row: failing, a bug of the plugin's, with the traceback.
    row = rows["trace"]
    assert row["status"] == "run_error" and row["cause_kind"] == "plugin_error", row
    assert "pytest-torchexport's own code raised TypeError: planted plugin bug" in row["message"]
    assert "_planted_bug" in row["message"] and "not a verdict on the model" in row["message"]


class _Uncopyable(torch.nn.Linear):
    """A module that refuses a deep copy the way one holding a handle does (pickling's TypeError)."""

    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'Handle' object")


def test_eager_on_the_live_module_is_said():
    """check() has no recording to say it: the prelude does, and the check still runs."""
    row = checked_one(_Uncopyable(4, 2).eval(), (torch.randn(3, 4),), backend="trace", examples=4)
    assert row.status == "pass", row.message
    (finding,) = [f for f in row.findings if f.kind == "reference_copy"]
    assert finding.detail == (
        "eager ran the module the test called, not a copy: its deep copy raised TypeError: cannot pickle 'Handle' object"
    )


class _NoShapes(Pickled):
    name = "noshapes"

    def input_shapes(self, artifact):
        raise KeyError("graph inputs")


def test_a_backend_answer_that_raises_is_said():
    row = checked(torch.nn.Linear(4, 2).eval(), (torch.randn(3, 4),), [_NoShapes()], examples=4)["noshapes"]
    assert row.status == "pass", row.message
    assert "backend_note" in kinds(row)
    (note,) = [f.detail for f in row.findings if f.kind == "backend_note"]
    assert (
        note
        == "the noshapes backend's input_shapes raised KeyError: 'graph inputs'; the check went on without its answer"
    )
