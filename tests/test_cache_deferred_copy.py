"""[As Called] A warm run copies a module only for a check that runs.

Real pytest sessions on one cache folder. The model counts its deep copies in a file (its
``__setstate__`` runs once per ``copy.deepcopy``), so a run says how many copies it took: the
test bodies never copy it themselves.
"""

import json

import pytest
from helpers import by_item, report_rows

from pytest_torchexport.cache.store import Cache

MODEL = """
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.scale = 1.0

    def forward(self, x):
        return self.lin(x) * self.scale

    def __setstate__(self, state):
        with open("copies.txt", "a") as f:
            f.write("copy\\n")
        super().__setstate__(state)
"""

TEST = """
import pytest
import torch
from m_scaled import Scaled


@pytest.mark.torchexport(backends=["trace", "export"])
def test_scaled():
    model = Scaled().eval()
    model(torch.randn(2, 4))
    {after}
"""


def _copies(tester: pytest.Pytester) -> int:
    path = tester.path / "copies.txt"
    count = path.read_text().count("copy") if path.exists() else 0
    path.unlink(missing_ok=True)
    return count


def _rows(tester: pytest.Pytester) -> dict[str, dict]:
    result = tester.runpytest("--torchexport-cache=c", "--torchexport-report=out.json")
    result.assert_outcomes(passed=2)
    return {k.split("-")[1].rstrip("]"): v for k, v in report_rows(tester, "out.json", key=by_item).items()}


def _forget(tester: pytest.Pytester, backend: str) -> None:
    """Remove the backend's stored verdict: its check runs next time, the others are reused."""
    (entry,) = [
        p for p in (tester.path / "c").rglob("*.json") if json.loads(p.read_text())["row"]["backend"] == backend
    ]
    entry.unlink()


@pytest.fixture
def suite(tester: pytest.Pytester):
    tester.makepyfile(m_scaled=MODEL)
    return tester


def test_a_warm_run_copies_no_module_whose_checks_are_all_reused(suite):
    suite.makepyfile(test_s=TEST.format(after=""))
    rows = _rows(suite)
    assert "cached" not in rows["trace"] and _copies(suite) >= 1  # copied at the call, then checked
    rows = _rows(suite)
    assert rows["trace"]["cached"] is True and rows["export"]["cached"] is True
    assert _copies(suite) == 0


def test_a_check_that_runs_in_a_warm_run_takes_its_copy_then(suite):
    """The trace verdict is reused; export's is gone, so it runs on a copy taken after the body,
    of the module still as called: a clean row, kept for the next run."""
    suite.makepyfile(test_s=TEST.format(after=""))
    _rows(suite)
    _forget(suite, "export")
    _copies(suite)
    rows = _rows(suite)
    assert rows["trace"]["cached"] is True
    export = rows["export"]
    assert export["status"] == "pass" and "cached" not in export and "cache" not in export
    assert not [f for f in export["findings"] if f["kind"] == "changed_after_call"]
    assert _copies(suite) >= 1
    rows = _rows(suite)
    assert all(row["cached"] is True for row in rows.values())
    assert _copies(suite) == 0


def test_a_module_changed_after_its_call_is_said_and_copied_at_the_call_next_run(suite):
    """The body sets an attribute the forward reads after its call. A check that runs in a warm run,
    whose copy was put off, sees the module as the body left it: the row says so and keeps nothing,
    and the next run copies the module at its call again."""
    suite.makepyfile(test_s=TEST.format(after="model.scale = 3.0"))
    _rows(suite)
    _forget(suite, "export")
    _forget(suite, "trace")
    rows = _rows(suite)
    for row in rows.values():  # both checks ran: the one that took the copy, and the other
        (changed,) = [f["detail"] for f in row["findings"] if f["kind"] == "changed_after_call"]
        assert "Scaled was changed by the test body after it was called" in changed
        assert "the module as the body left it was checked" in changed
        assert row["cache"].startswith("not kept: the module changed after its call")
    _copies(suite)
    rows = _rows(suite)
    for row in rows.values():
        assert "cached" not in row and not [f for f in row["findings"] if f["kind"] == "changed_after_call"]
    assert _copies(suite) >= 1
    rows = _rows(suite)
    assert all(row["cached"] is True for row in rows.values())


def test_a_mark_that_a_copy_may_wait_is_signed_with_the_secret(tmp_path):
    """Whoever can write the folder may make a run take its copy late, which only a module changed
    after its call would show; with a secret set, a mark it did not sign is not read."""
    signed = Cache(tmp_path, secret="s3cret")
    assert not signed.saw("test_a", "d" * 64)
    signed.see("test_a", "d" * 64)
    assert signed.saw("test_a", "d" * 64)
    assert not signed.saw("test_b", "d" * 64)
    assert not Cache(tmp_path, secret="another").saw("test_a", "d" * 64)
    Cache(tmp_path).see("test_b", "d" * 64)  # written without the secret
    assert Cache(tmp_path).saw("test_b", "d" * 64) and not signed.saw("test_b", "d" * 64)
    signed.unsee("test_a", "d" * 64)
    assert not signed.saw("test_a", "d" * 64)


UNCOPYABLE = """
import pytest
import torch


class Uncopyable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)

    def __deepcopy__(self, memo):
        raise TypeError("cannot copy a Handle")


@pytest.mark.torchexport(backends=["trace", "export"])
def test_uncopyable():
    Uncopyable().eval()(torch.randn(2, 4))
"""


def test_a_reused_row_of_a_module_that_refuses_a_copy_says_what_its_check_said(tester):
    """No copy is tried in a warm run, so the refusal is read from the row the check wrote."""
    tester.makepyfile(test_u=UNCOPYABLE)
    cold, warm = _rows(tester), _rows(tester)
    for backend, row in warm.items():
        assert row["cached"] is True
        assert row["findings"] == cold[backend]["findings"]
    (said,) = [f["detail"] for f in warm["trace"]["findings"] if f["kind"] == "reference_copy"]
    assert said == (
        "the plugin's copy of Uncopyable is not the module the test called: its deep copy raised TypeError: "
        "cannot copy a Handle; the test's own module was checked, its modes and state as at the call put back"
    )
