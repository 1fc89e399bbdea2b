"""Process isolation: a crash, an exit or a hang in one check is a classified row, not the end of the session."""

import ctypes
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import by_item, report_rows, run_with_report
from models import GRUClassifier

from pytest_torchexport.backends.trace import TraceBackend
from pytest_torchexport.engine.pipeline import PendingCheck, Session, plan_inputs, run
from pytest_torchexport.options import Options
from pytest_torchexport.results.report import Result

FRAGILE = """
import ctypes, os, time
import pytest, torch

ACTIONS = {
    "segfault": lambda: ctypes.string_at(0),
    "exit": lambda: os._exit(3),
    "hang": lambda: time.sleep(600),
}


class Fragile(torch.nn.Module):
    '''Fine in eager; dies, exits or hangs while an exporter captures it.'''

    def __init__(self, action):
        super().__init__()
        self.action = action
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            ACTIONS[self.action]()
        return self.lin(x)


@pytest.mark.torchexport(backends=["trace", "export", "onnx"], timeout=5)
@pytest.mark.parametrize("action", ["segfault", "exit", "hang"])
def test_fragile(action):
    Fragile(action).eval()(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["trace", "export", "onnx"])
def test_clean_after_them():
    torch.nn.Linear(4, 4).eval()(torch.randn(2, 4))
"""


def test_crash_exit_and_hang_are_rows_and_the_session_goes_on(tester):
    tester.makepyfile(test_fragile=FRAGILE)
    result, rows = run_with_report(tester, "-v", key=by_item)
    result.assert_outcomes(failed=9, passed=3)
    assert len(rows) == 12
    for backend in ("trace", "export", "onnx"):
        segv = rows[f"test_fragile[segfault-torchexport-{backend}]"]
        assert segv["status"] == "export_error", segv["message"]
        assert "killed by signal SIGSEGV" in segv["message"] and "during export" in segv["message"]
        code = rows[f"test_fragile[exit-torchexport-{backend}]"]
        assert code["status"] == "export_error", code["message"]
        assert "exited with code 3 during export" in code["message"]
        hang = rows[f"test_fragile[hang-torchexport-{backend}]"]
        assert hang["status"] == "timeout", hang["message"]
        assert hang["message"].startswith(f"{backend} ran past the time limit of 5 s during export")
        assert [f["kind"] for f in hang["findings"]] == ["timeout"]
        assert hang["timings"]["total_s"] < 30
        clean = rows[f"test_clean_after_them[torchexport-{backend}]"]
        assert clean["status"] == "pass", clean["message"]
        assert clean["isolation"] == "process"
    # The summary's cause column says what happened, in the table itself.
    result.stdout.fnmatch_lines(
        ["test_fragile[[]segfault[]]*export_error*", "*killed by signal SIGSEGV during export*"]
    )
    # When it was stopped: 5 s after its start, and later by however long the test's process
    # was busy when the limit passed (5.1-5.2 s seen on a loaded machine).
    result.stdout.fnmatch_lines(["test_fragile[[]hang[]]*timeout*", "*stopped after 5.? s during export*"])


class CrashAt(TraceBackend):
    """A third-party backend that takes its process down in one stage."""

    def __init__(self, where, how):
        self.where, self.how, self.name = where, how, f"crash-{where}"

    def unavailable_reason(self):
        return None

    def _maybe_die(self, where):
        if where == self.where:
            if self.how == "segfault":
                ctypes.string_at(0)
            os.kill(os.getpid(), signal.SIGABRT)

    def load(self, directory, ctx):
        self._maybe_die("load")
        return super().load(directory, ctx)

    def run(self, artifact, args, kwargs):
        self._maybe_die("run")
        return super().run(artifact, args, kwargs)


@pytest.mark.parametrize(
    ("where", "how", "status", "signal_name"),
    [("load", "segfault", "load_error", "SIGSEGV"), ("run", "abort", "run_error", "SIGABRT")],
)
def test_a_death_gets_the_status_of_its_stage_and_leaves_no_files(tmp_path, where, how, status, signal_name):
    stage = {"load": "load", "run": "search"}[where]
    # In a fresh interpreter: in a process where OpenVINO's runtime has run (its warm-up, an earlier
    # test of this worker), a forked child's crash comes back with the right status and stage but
    # without its Python stack, and SIGABRT read as SIGSEGV (noted, not solved: its thread pool).
    script = textwrap.dedent(f"""
        import json, sys, tempfile
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        tempfile.tempdir = {str(tmp_path)!r}
        import torch
        from test_isolation_crashes import CrashAt
        from pytest_torchexport.engine.pipeline import Session, run
        from pytest_torchexport.options import Options

        backend = CrashAt({where!r}, {how!r})
        opts = Options.build(valid_backends=(backend.name,), backends=[backend.name], examples=2)
        (r,) = run(torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),), None, opts, Session(backends={{backend.name: backend}})).results
        print(json.dumps(r.to_dict()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    r = Result.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
    assert r.status == status, r.message
    assert f"killed by signal {signal_name}" in r.message and f"during {stage}" in r.message
    assert "_maybe_die" in r.message  # the Python stack at the crash, from faulthandler
    assert "export_s" in r.timings  # what the child found before it died came back
    # Nothing of the dead check is left; the fresh session's hypothesis home (made in the temp dir at its
    # first search, once per session) is not a check's.
    assert [p.name for p in tmp_path.iterdir() if p.name != "pytest-torchexport-hypothesis"] == []


def test_a_usage_error_in_the_child_comes_back_as_a_usage_error_row():
    class Picky(torch.nn.Module):
        def forward(self, x):
            if os.getpid() != parent:
                raise ValueError("only in the child")
            return x

    parent = os.getpid()
    opts = Options.build(backends=["trace"], examples=2)
    # One check on its own: its eager stages run in its child (run() would run them here, once
    # for all its backends: prelude.py).
    module, args = Picky(), (torch.randn(2, 3),)
    row = PendingCheck(module, plan_inputs(module, args, None), "trace", "cpu", opts, session=Session()).wait()
    assert row.status == "usage_error" and "only in the child" in row.message, row.message


@pytest.mark.slow
def test_one_export_no_longer_changes_the_next():
    """In one process, a failed torch.export of this GRU makes the next dynamo ONNX export's
    ``seq`` static (a run_error inline); each check in its own child gives the clean verdict."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 16))
    dims = {"batch": (1, 8), "seq": (2, 32)}

    def onnx_status(backends):
        opts = Options.build(backends=backends, examples=6, dims=dims, dynamic={0: {0: "batch", 1: "seq"}})
        return run(GRUClassifier().eval(), (ids,), None, opts, Session()).by_backend()["onnx"].status

    alone = onnx_status(["onnx"])
    after_export = onnx_status(["export", "onnx"])
    assert alone == after_export == "pass"


GRU_FILE = (
    "import pytest, torch\n\n"
    + inspect.getsource(GRUClassifier)
    + """
OPTIONS = dict(examples=6, dims={"batch": (1, 8), "seq": (2, 32)}, dynamic={0: {0: "batch", 1: "seq"}})

@pytest.mark.torchexport(backends=["export", "onnx"], **OPTIONS)
def test_export_then_onnx():
    torch.manual_seed(0)
    GRUClassifier().eval()(torch.randint(0, 50, (2, 16)))

@pytest.mark.torchexport(backends=["onnx"], **OPTIONS)
def test_onnx_alone():
    torch.manual_seed(0)
    GRUClassifier().eval()(torch.randint(0, 50, (2, 16)))
"""
)


@pytest.mark.slow
def test_the_onnx_verdict_is_the_same_under_xdist(tester):
    """Inline under ``-n 2`` the onnx verdict depends on which worker ran the failed
    torch.export first (measured: pass on one worker, run_error on the other); with each
    check in its own child both onnx rows pass, as they do serially."""
    tester.makepyfile(test_gru=GRU_FILE)
    result = tester.runpytest_subprocess("-n", "2", "--torchexport-report=out.json")
    rows = report_rows(tester, key=by_item)
    assert rows["test_export_then_onnx[torchexport-export]"]["status"] == "run_error"  # torch.export pins seq
    assert rows["test_export_then_onnx[torchexport-onnx]"]["status"] == "pass"
    assert rows["test_onnx_alone[torchexport-onnx]"]["status"] == "pass"
    result.assert_outcomes(failed=1, passed=2)


def test_a_cuda_check_runs_inline_and_says_why():
    """A forked child cannot use its parent's CUDA context, so a cuda check runs inline
    unless asked otherwise (no GPU needed: the device decides before CUDA is touched)."""
    from pytest_torchexport.isolation import runner

    assert runner.choose(None, "cpu") == ("process", None)
    mode, why = runner.choose(None, "cuda")
    assert mode == "inline" and "forked child cannot use it" in why
    assert runner.choose("inline", "cpu") == ("inline", None)


def test_a_check_planned_before_cuda_was_initialised_runs_inline_once_it_is(monkeypatch):
    """``devices=cpu,cuda``: the cuda checks run inline and initialise CUDA in the test's process,
    so a cpu check planned before that must not fork afterwards (on an H200 the cpu ONNX child
    raised "Cannot re-initialize CUDA in forked subprocess"). No GPU here: CUDA's initialisation
    is mocked (``torch.cuda.is_initialized``), which is all the decision reads."""
    model = torch.nn.Linear(4, 2).eval()
    args = (torch.randn(3, 4),)
    opts = Options.build(backends=["trace"], examples=2)
    session = Session()
    initialised = [False]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised[0])
    pending = PendingCheck(model, plan_inputs(model, args, None), "trace", "cpu", opts, session=session)
    assert pending.mode == "process"
    initialised[0] = True  # a cuda check ran inline in between
    result = pending.wait()
    assert pending.child is None and result.status == "pass"
    assert result.extra["isolation"] == "inline: CUDA is initialised in this process, and a forked child cannot use it"


def test_a_forked_child_of_a_process_that_touched_cuda_sees_no_cuda(monkeypatch):
    """Where the parent reached the CUDA driver (``torch.cuda.is_available()`` on a GPU machine), a
    forked child is in torch's "bad fork" state: an exporter that asks ``is_available()`` and then
    initialises CUDA raised "Cannot re-initialize CUDA in forked subprocess" (a lent H200). The child,
    a CPU check, sees no CUDA instead. No GPU here: the bad-fork state is mocked, through the private
    name the plugin reads (``torch.cuda._is_in_bad_fork``), which must still exist."""
    from pytest_torchexport._compat import cuda_closed_in_forked_child

    assert callable(torch.cuda._is_in_bad_fork)  # torch's private API: fails first if it moves
    monkeypatch.setattr(torch.cuda, "is_available", torch.cuda.is_available)  # restored after the test
    monkeypatch.setattr(torch.cuda, "device_count", torch.cuda.device_count)
    assert cuda_closed_in_forked_child() is False  # not a bad fork: nothing changed
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert cuda_closed_in_forked_child() is True
    assert torch.cuda.is_available() is False and torch.cuda.device_count() == 0
