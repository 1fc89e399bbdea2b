"""The standalone load overlaps the search: the request to the loader goes
out after the export, the side-effect checks and the search run while it is answered, and
its verdict joins the result at the end, the verdict it gave when it ran first."""

import functools
import threading

import pytest
import torch
from helpers import checked_one
from models import register_twice

from pytest_torchexport.isolation import loader
from pytest_torchexport.stages import standalone

# Registered by this file only: the loader process never imports it, so a traced artifact
# that calls it does not load there (a load_error for TorchScript).
register_twice("overlap_tests")


class WithOpAndBranch(torch.nn.Module):
    """Needs the test's op, and trace bakes in the branch the example takes: the standalone
    load fails and the search finds a mismatch."""

    def forward(self, x):
        y = torch.ops.overlap_tests.twice(x)
        return y + 1 if x.sum() > 0 else y - 1


_result = functools.partial(checked_one, backend="trace", examples=10, seed=0, isolation="inline")


def _no_thread_left():
    return not [t for t in threading.enumerate() if t.name == "torchexport-standalone"]


def _answer_after_the_search_started(monkeypatch):
    """The loader's answer held back until the search compares its first example (compare=)."""
    handle = loader.start()
    real = handle.request
    searching = threading.Event()

    def held(message, timeout=loader.TIMEOUT_S):
        # Before the overlap the check waited here before its search: this wait timed out.
        assert searching.wait(30), "the search did not run while the standalone request was out"
        return real(message, timeout=timeout)

    monkeypatch.setattr(handle, "request", held)

    def compare(expected, actual):
        searching.set()
        torch.testing.assert_close(actual, expected)

    return compare


def test_the_search_runs_while_the_loader_answers(monkeypatch):
    compare = _answer_after_the_search_started(monkeypatch)
    result = _result(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), compare=compare)
    assert result.status == "pass", result.message
    assert result.extra["standalone"].startswith("loaded and ran in a fresh process"), result.extra
    assert result.timings["standalone_s"] >= result.timings["standalone_wait_s"]
    assert _no_thread_left()


def test_a_standalone_load_error_wins_over_the_searchs_mismatch(monkeypatch):
    args = (torch.ones(2, 4),)  # sum > 0: the traced branch adds 1
    close = lambda expected, actual: torch.testing.assert_close(actual, expected)  # noqa: E731
    searched = _result(WithOpAndBranch().eval(), args, standalone=False, compare=close)
    assert searched.status == "mismatch", searched.message  # what the overlapped search finds

    result = _result(WithOpAndBranch().eval(), args, compare=_answer_after_the_search_started(monkeypatch))
    assert result.status == "load_error", result.message
    assert result.message.startswith("trace artifact does not work outside the test's process"), result.message
    # As when the load ran first and the search never did: the export's findings, then the
    # step's; what the search found (its findings and numbers) is not kept.
    kinds, exported = [f.kind for f in result.findings], len(result.findings) - 1
    assert kinds[-1] == "standalone_load" and "overlap_tests::twice" in result.findings[-1].detail
    assert result.findings[:exported] == searched.findings[:exported]
    assert set(f.kind for f in searched.findings[exported:]).isdisjoint(kinds), (kinds, searched.findings)
    assert result.examples == 0 and result.max_abs_err is None and result.failing_example is None
    assert searched.examples and "search_s" in searched.timings and "latency_ms" in searched.extra
    assert "search_s" not in result.timings and "rejected_examples" not in result.extra
    assert "latency_ms" not in result.extra
    assert result.extra["standalone"].startswith("failed: does not load there")
    assert _no_thread_left()


def test_a_load_error_with_process_isolation_too():
    result = _result(WithOpAndBranch().eval(), (torch.ones(2, 4),), isolation="process")
    assert result.status == "load_error", result.message
    assert result.findings[-1].kind == "standalone_load" and result.examples == 0, result.findings


def test_the_in_process_fallback_runs_in_the_checks_thread(monkeypatch):
    handle = loader.start()
    threads = []
    fallback = standalone.Loading._in_process

    def recorded(self):
        threads.append(threading.current_thread())
        return fallback(self)

    def fails_to_run(message, timeout=loader.TIMEOUT_S):
        return {"ok": False, "stage": "run", "error": "RuntimeError: no kernel here", "reached": None}

    monkeypatch.setattr(standalone.Loading, "_in_process", recorded)
    monkeypatch.setattr(handle, "request", fails_to_run)
    result = _result(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),))
    # It runs in the test's process: the loader alone fails, a load_error for TorchScript.
    assert threads == [threading.main_thread()]
    assert result.status == "load_error", result.message
    assert "loads but fails to run there" in result.message


@pytest.mark.parametrize("how", ["crash", "timeout"])
def test_a_crash_or_timeout_in_the_search_is_not_blamed_on_the_standalone_step(how):
    import os
    import time

    calls = []

    def compare(expected, actual):  # runs in the check's child
        # The standalone verdict judges its one output with compare= too, before the search
        # or after it, as the loader's answer arrives: from the second call on, it is the search.
        calls.append(None)
        if len(calls) < 2:
            return
        if how == "crash":
            os._exit(3)
        time.sleep(600)

    # The limit leaves the export time on a loaded machine: the check must reach its search.
    limit = {"timeout": 15} if how == "timeout" else {}
    result = _result(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), isolation="process", compare=compare, **limit)
    assert result.status == ("run_error" if how == "crash" else "timeout"), result.message
    first = result.message.splitlines()[0]
    assert "during search" in first and "standalone" not in first, first


STARTED_BEFORE_THE_BODY = """
import pytest, torch

from pytest_torchexport.isolation import loader

@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_model():
    handle = loader.current()
    assert handle is not None and handle.proc is not None and handle.proc.poll() is None
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace"], examples=2, standalone=False)
def test_without_standalone():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))
"""


def test_the_loader_starts_before_the_first_body_it_serves(tester):
    # Its import of torch overlaps the body and the export instead of the first check's wait.
    # A fresh process: this one may have a loader already.
    tester.makepyfile(test_started=STARTED_BEFORE_THE_BODY)
    result = tester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=2)
