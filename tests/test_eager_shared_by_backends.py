"""[Eager Once] Eager's stages (the replayed call, the training-mode, side-effect and determinism
probes, the budget) run once for all the backends of a call, in the test's process, and each
backend's row carries what they found under its own [backend=..] tag."""

import pytest
import torch
from models import source

from pytest_torchexport import ExportMismatch, check
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options
from pytest_torchexport.stages import latency

BACKENDS = ["trace", "script", "export"]


CALLED = []


class Counted(torch.nn.Module):
    """Counts its calls made in this process under no_grad (a check's eager calls, on its
    copies of the module); a forked check's calls stay in its child."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        if not torch.is_grad_enabled():
            CALLED.append(1)
        return self.lin(x)


def _eager_calls(backends, isolation):
    CALLED.clear()
    # budget="off": the search is not cut by time, which a loaded machine would cut sooner for one call than the other
    report = check(
        Counted().eval(), (torch.randn(2, 4),), backends=backends, examples=2, isolation=isolation, budget="off"
    )
    assert all(r.status == "pass" for r in report.results), [r.message for r in report.results]
    return len(CALLED)


def test_eager_runs_once_for_every_backend_of_a_call():
    one = _eager_calls(["trace"], "process")
    assert one >= 3  # the replayed call and the determinism probes, here, before the fork
    assert _eager_calls(["trace", "export"], "process") == one  # not once per backend


def test_inline_checks_each_run_their_own():
    # They share a process, and an export may change the module copy it is given.
    assert _eager_calls(["trace", "export"], "inline") > _eager_calls(["trace"], "inline") > 0


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)


def test_a_verdict_eager_settles_is_each_backends_row_with_its_own_tag():
    session = Session()
    opts = Options.build(backends=BACKENDS, examples=2)
    results = run(Noisy().eval(), (torch.randn(2, 4),), None, opts, session).results
    assert [r.status for r in results] == ["nondeterministic"] * 3
    for r in results:
        assert f"[backend={r.backend}, device=cpu] (Noisy)" in r.message, r.message
        assert r.message.count("[backend=") == 1


class Training(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x))


def test_findings_reach_every_row():
    module = Training()  # called in training mode: outputs differ from eval's
    report = check(module, (torch.randn(8, 4),), backends=BACKENDS, examples=2)
    for r in report.results:
        assert [f.kind for f in r.findings].count("training_mode") == 1, (r.backend, r.findings)
        assert r.extra["memory_budget_mb"] > 0 and "eager_s" in r.extra


CALLS = (
    source(Counted)
    + """

CALLED = []


@pytest.mark.torchexport(backends={backends!r}, examples=2)
def test_model():
    Counted().eval()(torch.randn(2, 4))

def test_zz_count():
    print("EAGER CALLS", len(CALLED))
"""
)


def test_a_tests_items_share_it(tester):
    counts = []
    for backends in (["trace"], ["trace", "export"]):
        tester.makepyfile(test_calls=CALLS.format(backends=backends))
        result = tester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=len(backends) + 1)
        (line,) = [line for line in result.outlines if "EAGER CALLS" in line]
        counts.append(int(line.split()[-1]))
    # Eager's latency is timed in as many calls as fit its time (latency.CALLS at most, after a
    # warm-up): the one count that follows the machine's load. Unshared, a second backend would
    # add every one of the first's calls again.
    timed = latency.CALLS + 1
    assert counts[0] >= 3 + timed and abs(counts[1] - counts[0]) < timed, counts


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_verdicts_do_not_depend_on_sharing(monkeypatch, jobs):
    monkeypatch.setenv("TORCHEXPORT_JOBS", jobs)
    module, x = Training().eval(), torch.randn(3, 4)
    shared = check(module, (x,), backends=BACKENDS, examples=4, seed=1)
    alone = [check(module, (x,), backends=[b], examples=4, seed=1).results[0] for b in BACKENDS]
    for a, b in zip(shared.results, alone):
        assert (a.status, a.examples, a.max_abs_err, [f.kind for f in a.findings]) == (
            b.status,
            b.examples,
            b.max_abs_err,
            [f.kind for f in b.findings],
        )


class RaisesUnderAnotherSeed(torch.nn.Module):
    """Replays fine, then raises on the determinism probe's other RNG seed: an error that is no
    verdict (no ``Stop``), out of the shared prelude."""

    def forward(self, x):
        if torch.default_generator.initial_seed() == 1:
            raise RuntimeError("planted: fails under another seed")
        return x * 2.0


def _fresh(backend):
    from pytest_torchexport.results.report import Result

    return Result(backend=backend, device="cpu", status="pass", module="M")


def test_the_shared_prelude_answers_one_way():
    """``EagerOnce.hand_over`` answers each check with a ``Handed`` whose kind says what it is;
    what eager found, or the verdict it settled, is written into each check's own row."""
    from pytest_torchexport.inputs.specs import plan_inputs
    from pytest_torchexport.stages.prelude import EagerOnce, SharedCall

    opts = Options.build(examples=2)
    for module, kind in ((Training(), "shared"), (Noisy().eval(), "settled"), (RaisesUnderAnotherSeed(), "own")):
        once = SharedCall(EagerOnce(), 0)
        plan = plan_inputs(module, (torch.randn(2, 4),), None)
        first, second = _fresh("trace"), _fresh("export")
        handed = [once.hand_over(module, plan, opts, r) for r in (first, second)]
        assert [h.kind for h in handed] == [kind, kind]
        assert (handed[0].prelude is not None) == (kind == "shared") and handed[0].prelude is handed[1].prelude
        if kind == "shared":
            assert [f.kind for f in second.findings] == ["training_mode"] and "eager_s" in second.extra
            assert second.status == "pass" and second.backend == "export"
        elif kind == "settled":
            assert second.status == "nondeterministic" and "[backend=export, device=cpu] (M)" in second.message
        else:  # nothing written: the check computes its own prelude in its child
            assert (second.status, second.findings, second.extra) == ("pass", [], {})


def test_an_error_out_of_the_shared_prelude_surfaces_from_the_check_itself():
    # Not shared, not swallowed: the check's own prelude, in its child, meets it again: the model's
    # own error on a call every check makes, a usage error that names it.
    with pytest.raises(ExportMismatch, match="RuntimeError: planted: fails under another seed"):
        check(
            RaisesUnderAnotherSeed(),
            (torch.randn(2, 4),),
            backends=["trace", "export"],
            examples=2,
            isolation="process",
        )


COPIES_LOG = []  # the file each process notes its copies in (a forked check's are its child's)


class CountedCopies(torch.nn.Module):
    """Notes which process deep-copies it, in ``COPIES_LOG[0]``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def __deepcopy__(self, memo):
        import copy
        import os

        with open(COPIES_LOG[0], "a") as f:
            f.write(f"{os.getpid()}\n")
        clone = CountedCopies()
        clone.lin = copy.deepcopy(self.lin, memo)
        clone.train(self.training)
        return clone

    def forward(self, x):
        return self.lin(x)


class Scaling:
    """A third-party backend whose export scales the module it is given in place (a quantizer
    that prepares it inplace=True, say): the copy it was given is its own, not another's."""

    def __new__(cls):
        from pytest_torchexport.backends.trace import TraceBackend

        class Scales(TraceBackend):
            name = "scales"

            def unavailable_reason(self):
                return None

            def export(self, module, args, kwargs, ctx):
                with torch.no_grad():
                    module.lin.weight.mul_(2.0)
                return super().export(module, args, kwargs, ctx)

        return Scales()


def test_forked_checks_export_a_copy_made_once_each_their_own(tmp_path):
    # [Spare Copy] The test's process copies the module for the exports once (its first
    # check's child copies its own meanwhile); each child's copy is its own by fork: a backend that changes the module it exports changes no
    # other's (its own check fails against eager; trace and export pass).
    import os

    from pytest_torchexport.options import BUILTIN_BACKENDS

    COPIES_LOG[:] = [str(tmp_path / "copies.txt")]
    opts = Options.build(backends=["trace", "script", "export"], examples=2)
    results = run(CountedCopies().eval(), (torch.randn(2, 4),), None, opts, Session()).results
    assert [r.status for r in results] == ["pass"] * 3, [r.message for r in results]
    # here: eager's copy, then the spare one while the first child copies its own; the two
    # children forked after it copy nothing for their export
    copies = (tmp_path / "copies.txt").read_text().split()
    assert copies.count(str(os.getpid())) == 2 and len(copies) == 3, copies

    # [Shared Capture] With a capture to share, the spare copy is made before the capture child is
    # forked: the capture child and every check's child inherit it, no child copies (there were
    # two more copies: the capture child's and the first check child's).
    (tmp_path / "copies.txt").unlink()
    opts = Options.build(backends=["export", "onnx", "trace"], examples=2)
    results = run(CountedCopies().eval(), (torch.randn(2, 4),), None, opts, Session()).results
    assert [r.status for r in results] == ["pass"] * 3, [r.message for r in results]
    assert [r.extra.get("capture") for r in results] == ["shared", "shared", None]
    copies = (tmp_path / "copies.txt").read_text().split()
    assert copies == [str(os.getpid())] * 2, copies

    session = Session(backends={**BUILTIN_BACKENDS, "scales": Scaling()})
    opts = Options.build(
        backends=["trace", "scales", "export"], examples=2, valid_backends=("trace", "export", "scales")
    )
    results = run(CountedCopies().eval(), (torch.randn(2, 4),), None, opts, session).results
    statuses = {r.backend: r.status for r in results}
    assert statuses == {"trace": "pass", "scales": "mismatch", "export": "pass"}, [r.message for r in results]


def test_forked_checks_copy_the_held_inputs_instead_of_drawing_them_again(tmp_path, monkeypatch):
    # [One Search] The test's process drew each shared input once for eager; every backend's child
    # judges its artifact on copies of those tensors, drawing none again.
    import pytest_torchexport.search.search as search

    log = tmp_path / "drawn.txt"
    drawn = search.materialize

    def logged(plan, draw, device="cpu"):
        with open(log, "a") as f:
            f.write(f"{draw.mode}\n")
        return drawn(plan, draw, device)

    monkeypatch.setattr(search, "materialize", logged)  # forked children inherit it
    opts = Options.build(backends=["trace", "export"], examples=4, seed=3, budget="off")
    results = run(Training().eval(), (torch.randn(3, 4),), None, opts, Session()).results
    assert [r.status for r in results] == ["pass", "pass"], [r.message for r in results]
    assert all(r.examples >= 4 for r in results), [r.examples for r in results]
    assert not log.exists(), log.read_text()


PLANS = """
import pytest, torch
import pytest_torchexport.recording.selection as selection

PLANNED = []
_plan = selection.plan_inputs


def counted(*args, **kwargs):
    PLANNED.append(1)
    return _plan(*args, **kwargs)


selection.plan_inputs = counted


@pytest.mark.torchexport(backends=["trace", "script", "export"])
def test_model():
    torch.nn.Linear(4, 3).eval()(torch.randn(2, 4))


def test_zz_count():
    print("PLANNED", len(PLANNED))
"""


def test_a_tests_items_plan_its_inputs_once(tester):
    # Planning reads every recorded tensor's scale: once for the call, not once per backend.
    tester.makepyfile(test_plans=PLANS)
    result = tester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    (line,) = [line for line in result.outlines if "PLANNED" in line]
    assert line.split()[-1] == "1", line


LET_GO = """
import os, pytest, torch
import pytest_torchexport.search.search as search
from pytest_torchexport.glue.state import STATE

_materialize = search.materialize


def logged(plan, draw, device="cpu"):
    with open(os.environ["DRAWN_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return _materialize(plan, draw, device)


search.materialize = logged  # forked children inherit it


@pytest.fixture(autouse=True)
def held_after(request):
    yield
    for recording in request.config.stash[STATE].recordings.values():
        for shared in recording.selection.eager_once._shared.values():
            print("HELD", request.node.name, len(shared.prelude.shared.inputs))


@pytest.mark.torchexport(backends=["trace", "script", "export"], examples=4, seed=3, budget="off")
def test_model():
    torch.nn.Linear(4, 3).eval()(torch.randn(2, 4))
"""


def test_the_tests_process_lets_go_of_the_inputs_once_every_item_is_forked(tester, tmp_path, monkeypatch):
    # [One Search] Held inputs are for the children; the test's process keeps a test's recording
    # while its later items wait, and would hold that many tests' inputs at once. Once the first
    # item has forked every item's check, it holds none; the children still copy theirs.
    log = tmp_path / "drawn.txt"
    monkeypatch.setenv("DRAWN_LOG", str(log))
    tester.makepyfile(test_let_go=LET_GO)
    result = tester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    held = [line.split("HELD ")[1].split() for line in result.outlines if "HELD " in line]
    assert held and held[0] == ["test_model[torchexport-trace]", "0"], result.outlines
    assert not log.exists(), log.read_text()


COLLECTED = """
import gc, os, weakref, pytest, torch
import pytest_torchexport.glue.state as state
import pytest_torchexport.stages.shared_search as shared_search
import pytest_torchexport.stages.prelude as prelude

gc.disable()  # only the plugin's own collection may free a cycle here
state.COLLECT_BYTES = int(os.environ["COLLECT_BYTES"])
DRAWN = []
_draw_once = shared_search.draw_once


def draw_once(*args, **kwargs):
    shared = _draw_once(*args, **kwargs)
    DRAWN.append(weakref.ref(shared))
    return shared


prelude.draw_once = draw_once


@pytest.mark.torchexport(backends=["trace", "export"], examples=2)
def test_model():
    torch.nn.Linear(4, 3).eval()(torch.randn(2, 4))
"""

# Another module: the plugin runs the next test of the same module before the test's later items.
COLLECTED_AFTER = """
from test_collected import DRAWN


def test_alive():
    print("ALIVE", sum(ref() is not None for ref in DRAWN), "OF", len(DRAWN))
"""


@pytest.mark.parametrize("threshold, alive", [(0, "0"), (1 << 40, "1")])
def test_a_done_tests_shared_stages_are_collected_where_they_held_enough(tester, monkeypatch, threshold, alive):
    # The recording, its checks' objects and hypothesis's test are a cycle: once the test's last
    # item has run, its shared inputs are freed only by a full collection, which the plugin runs
    # for a test that held COLLECT_BYTES or more (below it, the collector's own pass frees them).
    monkeypatch.setenv("COLLECT_BYTES", str(threshold))
    tester.makepyfile(test_collected=COLLECTED, test_collected_after=COLLECTED_AFTER)
    result = tester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    (line,) = [line.split("ALIVE ")[1] for line in result.outlines if "ALIVE " in line]
    assert line == f"{alive} OF 1", result.outlines
