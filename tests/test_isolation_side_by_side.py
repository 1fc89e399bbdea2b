"""[Side By Side] Independent checks run at once, each in its own child (runner.parallel_checks()).

The checks are timed by a third-party backend that notes when each export starts and ends
(in a file, since each check runs in its own child) and sleeps in between: side by side
the intervals overlap; one at a time they do not. Verdicts and row order do not change.
"""

import json
import os
import time

import pytest
import torch

from pytest_torchexport.backends.trace import TraceBackend
from pytest_torchexport.engine.pipeline import PendingCheck, Session, plan_inputs, run
from pytest_torchexport.engine.schedule import CheckState, Scheduler
from pytest_torchexport.isolation import runner
from pytest_torchexport.isolation.warmup import Warmup
from pytest_torchexport.options import Options


class Slow(TraceBackend):
    """trace, with an export that takes 1.5 s (or ``seconds``) and says when it ran (in ``log``)."""

    def __init__(self, name, log, seconds=1.5):
        self.name, self.log, self.seconds = name, log, seconds

    def unavailable_reason(self):
        return None

    def export(self, module, args, kwargs, ctx):
        start = time.time()
        time.sleep(self.seconds)
        artifact = super().export(module, args, kwargs, ctx)
        with open(self.log, "a") as f:
            f.write(json.dumps([self.name, start, time.time()]) + "\n")
        return artifact


def _intervals(log):
    return {name: (start, end) for name, start, end in map(json.loads, log.read_text().splitlines())}


def _check(tmp_path, monkeypatch, jobs, fail=()):
    monkeypatch.setenv("TORCHEXPORT_JOBS", str(jobs))
    log = tmp_path / "log.jsonl"
    backends = [Slow(name, log) for name in ("slow-a", "slow-b")]
    session = Session(backends={b.name: b for b in backends})
    opts = Options.build(
        valid_backends=tuple(session.backends),
        backends=[b.name for b in backends],
        examples=2,
        xfail={name: "known" for name in fail},
    )
    results = run(torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),), None, opts, session).results
    return results, _intervals(log)


def test_the_backends_of_a_check_run_side_by_side(tmp_path, monkeypatch):
    results, spans = _check(tmp_path, monkeypatch, jobs=2)
    assert [r.backend for r in results] == ["slow-a", "slow-b"]  # rows in the order asked for
    assert [r.status for r in results] == ["pass", "pass"]
    (a0, a1), (b0, b1) = spans["slow-a"], spans["slow-b"]
    assert b0 < a1 and a0 < b1, spans  # the exports overlapped


def test_one_at_a_time_when_told(tmp_path, monkeypatch):
    results, spans = _check(tmp_path, monkeypatch, jobs=1, fail=("slow-b",))
    assert [r.status for r in results] == ["pass", "xpass"]  # the options still reach each check
    (_, a1), (b0, _) = spans["slow-a"], spans["slow-b"]
    assert a1 <= b0, spans


def test_the_longest_check_starts_first_and_rows_keep_their_order(tmp_path, monkeypatch):
    # Named like the built-ins, for their usual times: onnx's check usually takes longest.
    monkeypatch.setenv("TORCHEXPORT_JOBS", "1")
    log = tmp_path / "log.jsonl"
    backends = [Slow(name, log) for name in ("trace", "onnx")]
    session = Session(backends={b.name: b for b in backends})
    opts = Options.build(valid_backends=tuple(session.backends), backends=["trace", "onnx"], examples=2)
    results = run(torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),), None, opts, session).results
    assert [(r.backend, r.status) for r in results] == [("trace", "pass"), ("onnx", "pass")]
    spans = _intervals(log)
    assert spans["onnx"][1] <= spans["trace"][0], spans  # one at a time, the longest first


def test_a_place_frees_when_any_check_ends_not_the_first_started(tmp_path, monkeypatch):
    # Two places, three checks: onnx (long) and export start first (their usual
    # times); trace takes export's place when export ends, while onnx still runs. Waiting on
    # the first started (onnx) before starting trace left a core idle.
    monkeypatch.setenv("TORCHEXPORT_JOBS", "2")
    log = tmp_path / "log.jsonl"
    backends = [Slow("trace", log, 0.3), Slow("onnx", log, 4.0), Slow("export", log, 0.3)]
    session = Session(backends={b.name: b for b in backends})
    opts = Options.build(valid_backends=tuple(session.backends), backends=["trace", "onnx", "export"], examples=2)
    results = run(torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),), None, opts, session).results
    assert [(r.backend, r.status) for r in results] == [("trace", "pass"), ("onnx", "pass"), ("export", "pass")]
    spans = _intervals(log)
    assert spans["export"][0] < spans["onnx"][1], spans  # side by side from the start
    assert spans["trace"][0] < spans["onnx"][1], spans  # in export's place, before onnx ended


def _pending(name="trace", **options):
    model, args = torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),)
    opts = Options.build(backends=[name], examples=2, **options)
    return PendingCheck(model, plan_inputs(model, args, None), name, "cpu", opts, session=Session())


def test_a_held_check_moves_through_its_states_in_order():
    # [Held] forked now, let go later: HELD holds no place, RUNNING does, FINISHED once its child
    # has ended (seen by whoever reads the pipes), DONE once its row is read.
    pending = _pending()
    assert pending.state is CheckState.PENDING and pending.child is None
    pending.start(held=True)
    assert pending.state is CheckState.HELD and pending.child is not None
    pending.start()
    assert pending.state is CheckState.RUNNING and pending.state.busy
    child = pending.child
    assert child is not None
    while not runner.wait_any([child]) and not child.finished:
        pass
    assert pending.state is CheckState.FINISHED and pending.state.over
    row = pending.wait()
    assert pending.state is CheckState.DONE and row.status == "pass"
    pending.cancel()  # a no-op once its row is in (run_all cancels every check it ran)
    assert pending.state is CheckState.DONE


def test_an_inline_check_runs_when_waited_for_and_a_cancelled_one_cannot_start_again():
    inline = _pending(isolation="inline")
    inline.start()
    assert inline.state is CheckState.RUNNING and inline.child is None  # it runs in wait()
    assert inline.wait().status == "pass" and inline.state is CheckState.DONE
    held = _pending()
    held.start(held=True)
    held.cancel()  # the session ended before its item ran
    assert held.state is CheckState.CANCELLED
    with pytest.raises(AssertionError, match="cannot go from CANCELLED to RUNNING"):
        held._to(CheckState.RUNNING)


def test_the_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("TORCHEXPORT_JOBS", raising=False)
    monkeypatch.setattr(runner, "available_memory", lambda: 64 * 2**30)
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert runner.parallel_checks() == 8
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")  # workers x checks <= cores
    assert runner.parallel_checks() == 2
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
    assert runner.parallel_checks() == 1
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    monkeypatch.setattr(runner, "available_memory", lambda: 5 * 2**30)  # one check per 2 GiB
    assert runner.parallel_checks() == 2
    monkeypatch.setenv("TORCHEXPORT_JOBS", "3")
    assert runner.parallel_checks() == 3


ITEMS = """
import json, os, time
import pytest, torch

LOG = {log!r}
SLEPT = set()

class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        # A process's first eager run (no_grad: a check's) takes 1.5 s and says when.
        if not torch.is_grad_enabled() and os.getpid() not in SLEPT:
            SLEPT.add(os.getpid())
            start = time.time()
            time.sleep(1.5)
            with open(LOG, "a") as f:
                f.write(json.dumps([os.getpid(), start, time.time()]) + "\\n")
        return self.lin(x)

@pytest.mark.torchexport(backends=["trace", "export"], examples=2)
def test_slow():
    with open(LOG + ".body", "a") as f:
        f.write("ran\\n")
    Slow().eval()(torch.randn(2, 3))
"""


@pytest.mark.parametrize("jobs", [2, 1])
def test_a_tests_next_item_starts_beside_it(tester, tmp_path, monkeypatch, jobs):
    log = str(tmp_path / "spans.jsonl")
    monkeypatch.setenv("TORCHEXPORT_JOBS", str(jobs))
    tester.makepyfile(test_items=ITEMS.format(log=log))
    result = tester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert (tmp_path / "spans.jsonl.body").read_text() == "ran\n"  # the body once, as ever
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    # The first eager run here is the test's prelude (prelude.py), once for both items; then one child per item.
    spans = [span for span in spans if span[0] != os.getpid()]
    assert len({pid for pid, _, _ in spans}) == 2, spans
    (_, a0, a1), (_, b0, b1) = sorted(spans, key=lambda s: s[1])
    overlapped = b0 < a1 and a0 < b1
    assert overlapped == (jobs == 2), spans


SKIPPED_AT_SETUP = """
import pytest, torch

@pytest.fixture
def picky(request):
    if request.node.name.endswith("-export]"):
        pytest.skip("not this one")

@pytest.mark.torchexport(backends=["trace", "export", "script"], examples=2)
def test_model(picky):
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))
"""


def test_an_item_that_never_takes_its_check_does_not_hold_the_others(tester, monkeypatch):
    # The export item's check is started beside the trace item's; its setup then skips it.
    monkeypatch.setenv("TORCHEXPORT_JOBS", "2")
    tester.makepyfile(test_skipped=SKIPPED_AT_SETUP)
    result = tester.runpytest("-q", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*not this one*"])


FIXTURES_ONCE = """
import pytest, torch

SETUPS = {log!r}
SETTINGS = {{"scale": 1.0}}

@pytest.fixture(autouse=True)
def scaled():
    with open(SETUPS, "a") as f:
        f.write("set up\\n")
    SETTINGS["scale"] = 2.0
    yield
    SETTINGS["scale"] = 1.0

class Scaled(torch.nn.Module):
    def forward(self, x):
        return x * SETTINGS["scale"]  # read at export: an artifact exported without the fixture is off by 2x

@pytest.mark.torchexport(backends=["trace", "export", "onnx"], examples=3)
def test_model():
    Scaled().eval()(torch.randn(2, 3))
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_tests_other_items_set_up_no_fixture_and_check_under_the_first_items(tester, tmp_path, monkeypatch, jobs):
    # [Fixtures Once] The body runs once (the first item); the other items' checks are forked at
    # once, under that item's fixtures (here: a setting the model reads), so their own fixtures are
    # never set up. One at a time (jobs=1) the last check runs two items later, with no fixture set up.
    setups = tmp_path / "setups.txt"
    monkeypatch.setenv("TORCHEXPORT_JOBS", str(jobs))
    tester.makepyfile(test_once=FIXTURES_ONCE.format(log=str(setups)))
    result = tester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert setups.read_text() == "set up\n"


ORDER_CONFTEST = """
import time

import pytest_torchexport.recording.selection as recorded
from pytest_torchexport.backends.trace import TraceBackend

LOG = {log!r}


class Quick(TraceBackend):
    name = "quick"

    def unavailable_reason(self):
        return None


class Slow(Quick):
    name = "slow"

    def export(self, module, args, kwargs, ctx):
        time.sleep(1.5)
        return super().export(module, args, kwargs, ctx)


def pytest_torchexport_backends(config):
    return {{"quick": Quick, "slow": Slow}}


_start = recorded.Selection.start


def _logged_start(self, backend, device, session, **kw):
    with open(LOG, "a") as f:
        f.write(f"{{session.test.split('::')[-1]}} {{backend}}\\n")
    return _start(self, backend, device, session, **kw)


def pytest_configure(config):
    recorded.Selection.start = _logged_start


def pytest_unconfigure(config):
    recorded.Selection.start = _start
"""

ORDER_TESTS = """
import pytest, torch

@pytest.mark.torchexport(backends=["trace", "quick", "slow"], examples=2)
def test_one():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace", "quick", "slow"], examples=2)
def test_two():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace", "quick", "slow"], examples=2)
def test_three():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))
"""


def test_the_longest_check_of_a_test_starts_first(tester, tmp_path, monkeypatch):
    # Two places: the first item's own check, and one started ahead. test_one knows no times
    # (both third-party backends rank alike: the order asked for), nor does test_two, whose
    # first item runs before test_one's later items report; by test_three, this process has
    # timed slow's check (1.5 s of export) against quick's, and starts slow ahead instead.
    log = tmp_path / "starts.txt"
    monkeypatch.setenv("TORCHEXPORT_JOBS", "2")
    tester.makeconftest(ORDER_CONFTEST.format(log=str(log)))
    tester.makepyfile(test_order=ORDER_TESTS)
    result = tester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
    starts = log.read_text().split("\n")[:-1]
    assert starts == [
        "test_one trace",
        "test_one quick",
        "test_one slow",
        "test_two trace",
        "test_two quick",
        "test_two slow",
        "test_three trace",
        "test_three slow",
        "test_three quick",
    ], starts


SPANS_CONFTEST = """
import json, time

from pytest_torchexport.backends.trace import TraceBackend

LOG = {log!r}


class Timed(TraceBackend):
    seconds = 0.3

    def unavailable_reason(self):
        return None

    def export(self, module, args, kwargs, ctx):
        start = time.time()
        time.sleep(self.seconds)
        with open(LOG, "a") as f:
            f.write(json.dumps([self.name, start, time.time()]) + "\\n")
        return super().export(module, args, kwargs, ctx)


class Long(Timed):
    name, seconds = "long", 4.0


class Short(Timed):
    name = "short"


class Third(Timed):
    name = "third"


def pytest_torchexport_backends(config):
    return {{"long": Long, "short": Short, "third": Third}}
"""


@pytest.mark.parametrize("xdist", [(), ("-n", "1", "--dist", "loadfile")], ids=["serial", "xdist"])
def test_a_place_freed_ahead_goes_to_the_next_item_while_the_current_one_runs(tester, tmp_path, monkeypatch, xdist):
    # Two places: the long item's own check and short's, started ahead. short
    # ends first; third takes its place while long still runs, not when long's item ends.
    # Under xdist too: the worker has been sent the whole file (loadfile) and reads its queue,
    # not only the item it runs next (third is two items after long).
    log = tmp_path / "spans.jsonl"
    monkeypatch.setenv("TORCHEXPORT_JOBS", "2")
    tester.makeconftest(SPANS_CONFTEST.format(log=str(log)))
    tester.makepyfile(
        test_spans="""
import pytest, torch

@pytest.mark.torchexport(backends=["long", "short", "third"], examples=2)
def test_model():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))
"""
    )
    result = tester.runpytest("-q", "-p", "no:cacheprovider", *xdist)
    result.assert_outcomes(passed=3)
    spans = _intervals(log)
    assert spans["short"][0] < spans["long"][1], spans  # started ahead, beside long
    assert spans["third"][0] < spans["long"][1], spans  # in short's place once short ended


TWO_TESTS = """
import pytest, torch

@pytest.mark.torchexport(backends=["trace", "onnx"])
def test_a():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace", "onnx"])
def test_b():
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))
"""


@pytest.mark.parametrize("select, warmed_first", [("", True), ("test_a", False)])
def test_a_session_of_several_tests_warms_the_exporters_once_before_the_first_child(
    tester, monkeypatch, select, warmed_first
):
    # [Warm Once] Decided on the items left after -k: one test's checks keep their first use in
    # their children (nothing runs twice here: no warm-up in this process at all), several pay it
    # once, in this process, before their first child (no check forks without it). Observed on
    # what this process paid (a fresh record: the suite's own fixture warmed everything already).
    paid = Warmup()
    monkeypatch.setattr(runner.THIS, "warmup", paid)
    tester.makepyfile(test_two=TWO_TESTS)
    result = tester.runpytest_inprocess("-q", "-p", "no:cacheprovider", *(["-k", select] if select else []))
    result.assert_outcomes(passed=4 if warmed_first else 2)
    if warmed_first:
        assert (paid.warmed, paid.used) == ({"trace", "onnx"}, set())
    else:
        assert (paid.warmed, paid.used) == (set(), {"trace", "onnx"})


BODIES_AHEAD = """
import json, time

import pytest, torch

BODIES = {bodies!r}


@pytest.fixture(scope="module")
def once_a_module():
    with open(BODIES + ".module", "a") as f:
        f.write(__name__ + "\\n")


def _body(name):
    with open(BODIES, "a") as f:
        f.write(json.dumps([name, time.time()]) + "\\n")
    torch.nn.Linear(3, 2).eval()(torch.randn(2, 3))


@pytest.mark.torchexport(backends=["trace", "long"], examples=2)
def test_a(once_a_module):
    _body("a")


@pytest.mark.torchexport(backends=["trace", "long"], examples=2)
def test_b(once_a_module):
    _body("b")


def test_plain():
    _body("plain")
"""


@pytest.mark.parametrize(
    "jobs, xdist", [(2, ()), (1, ()), (2, ("-n", "1", "--dist", "loadfile"))], ids=["two", "one", "xdist"]
)
def test_the_next_tests_body_runs_while_this_tests_checks_do(tester, tmp_path, monkeypatch, jobs, xdist):
    # test_a's long check (4 s of export) is started ahead at its trace item; with two places
    # test_b's first item, and its body, runs before test_a's long item reports, while that
    # check runs. Bodies keep their order, and no module's fixture is set up twice: the second
    # file's first test never moves ahead of the first file's items. One place: nothing moves.
    # Under xdist the worker orders its collection the same way, and the controller runs it so.
    log, bodies = tmp_path / "spans.jsonl", tmp_path / "bodies.jsonl"
    monkeypatch.setenv("TORCHEXPORT_JOBS", str(jobs))
    tester.makeconftest(SPANS_CONFTEST.format(log=str(log)))
    tester.makepyfile(
        test_one=BODIES_AHEAD.format(bodies=str(bodies)), test_two=BODIES_AHEAD.format(bodies=str(bodies))
    )
    result = tester.runpytest("-v", "-p", "no:cacheprovider", "--torchexport-report=out.json", *xdist)
    result.assert_outcomes(passed=10)
    # Whatever order the items ran in, the report keeps each test's rows together.
    rows = json.loads((tester.path / "out.json").read_text())["results"]
    assert [(row["test"], row["backend"]) for row in rows] == [
        (f"{file}::{test}", backend)
        for file in ("test_one.py", "test_two.py")
        for test in ("test_a", "test_b")
        for backend in ("trace", "long")
    ], rows
    ran = [line.split()[-1] if xdist else line.split()[0] for line in result.outlines if " PASSED " in line]
    collected = [
        f"{file}::{test}"
        for file in ("test_one.py", "test_two.py")
        for test in (
            "test_a[torchexport-trace]",
            "test_a[torchexport-long]",
            "test_b[torchexport-trace]",
            "test_b[torchexport-long]",
            "test_plain",
        )
    ]
    if jobs == 1:
        assert ran == collected, ran
    else:
        moved = [collected[i] for i in (0, 2, 1, 4, 3)]
        assert ran == moved + [collected[5 + i] for i in (0, 2, 1, 4, 3)], ran
    starts = [json.loads(line) for line in bodies.read_text().splitlines()]
    assert [name for name, _ in starts] == ["a", "b", "plain"] * 2
    assert (tmp_path / "bodies.jsonl.module").read_text().split() == ["test_one", "test_two"]
    long_ends = sorted(
        end for name, _, end in (json.loads(line) for line in log.read_text().splitlines()) if name == "long"
    )
    b_started = starts[1][1]
    assert (b_started < long_ends[0]) == (jobs == 2), (starts, long_ends)


def test_a_child_that_ends_while_this_process_works_hands_its_place_on(monkeypatch):
    # [Held] Two places: the current check's and one ahead. The check started ahead ends while
    # this process is busy (a test's shared prelude); the held one behind it runs from the next
    # poll there, not from this process's next wait.
    monkeypatch.setenv("TORCHEXPORT_JOBS", "2")
    monkeypatch.setattr(runner.THIS, "on_free", None)
    scheduler = Scheduler()
    first, second = _pending(), _pending()
    scheduler.start_ahead("first", first)
    scheduler.start_ahead("second", second)
    scheduler.release_ahead()
    assert (first.state, second.state) == (CheckState.RUNNING, CheckState.HELD)
    deadline = time.monotonic() + 60
    while second.state is CheckState.HELD and time.monotonic() < deadline:
        time.sleep(0.05)  # this process at work: nothing here waits on the children
        runner.pump(0)
    assert first.state.over and second.state is CheckState.RUNNING
    assert [first.wait().status, second.wait().status] == ["pass", "pass"]
