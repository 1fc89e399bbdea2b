"""pytest glue: decides *when* to check; ``checks.py`` decides *how*.

Each hook is a few lines. Nothing here imports torch at module level: torch is imported
only once a ``torchexport`` test is collected, so a session with no marked test pays
nothing (a subprocess test pins this).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs, items
from .errors import InvalidArgument
from .options import BUILTIN_BACKENDS, DEFAULT_BACKENDS, Options, add_options, session_defaults
from .reporting import Reporting

if TYPE_CHECKING:
    from .checks import Session
    from .report import Result

MARKER = "torchexport"
TARGET = items.TARGET
KEEP_RECORDINGS = 4


@dataclass
class State:
    """Run state of one pytest process, kept in ``config.stash`` (never in globals)."""

    backends: dict[str, Any]
    defaults: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    database: Any = None
    usage_errors: list[str] = field(default_factory=list)
    baseline: dict[str, dict[str, Any]] | None = None
    baseline_path: str | None = None
    report_path: str | None = None
    update_baseline: bool = False
    verdicts: list[tuple[str, Any]] = field(default_factory=list)
    auto: bool = False  # --torchexport-auto: every collected test as if it carried a bare marker
    #: [Body Once] test key -> the recording of its body, shared by the test's items in this process
    recordings: dict[str, Any] = field(default_factory=dict)
    #: test key -> how many of its items are still to run here (the recording is freed at 0)
    pending: dict[str, int] = field(default_factory=dict)
    #: [Side By Side] checks of a test's next items, started beside the current one
    ahead: Ahead = field(default_factory=lambda: Ahead())
    #: [Verdict Cache] where passes are reused (cache.Cache), None when off; resolved on first use
    cache: Any = None
    cache_resolved: bool = False
    warm: bool = False  # the cache held entries when the session started

    def verdict_cache(self, config: pytest.Config) -> Any:
        if not self.cache_resolved:
            self.cache_resolved = True
            self.cache, self.warm = _verdict_cache(config)
        return self.cache

    def remember(self, key: str, recording: Any) -> None:
        self.recordings[key] = recording
        # Under xdist a worker runs only some of a test's items, so a count may never reach
        # 0 here: keep the few most recent recordings (each may hold a copy of a model).
        while len(self.recordings) > KEEP_RECORDINGS:
            self.recordings.pop(next(iter(self.recordings)))

    def done(self, key: str) -> None:
        left = self.pending.get(key, 1) - 1
        self.pending[key] = left
        if left <= 0:
            self.recordings.pop(key, None)


STATE = pytest.StashKey[State]()
ITEM_RESULTS = pytest.StashKey[list]()
WARNED = pytest.StashKey[bool]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "torchexport(**options): export the nn.Module this test calls on every backend and check "
        "parity with eager (see pytest-torchexport's docs/reference.md)",
    )
    backends = dict(BUILTIN_BACKENDS)
    for extra in config.hook.pytest_torchexport_backends(config=config):
        backends.update(extra or {})
    try:
        defaults = session_defaults(config, tuple(backends))
    except InvalidArgument as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state = State(backends=backends, defaults=defaults)
    state.report_path = config.getoption("torchexport_report") or config.getini("torchexport_report") or None
    state.baseline_path = config.getoption("torchexport_baseline") or config.getini("torchexport_baseline") or None
    state.update_baseline = bool(config.getoption("torchexport_update_baseline"))
    if state.update_baseline and not state.baseline_path:
        raise pytest.UsageError("--torchexport-update-baseline needs --torchexport-baseline=PATH (where to write it)")
    if state.baseline_path and not state.update_baseline:
        from .baseline import load

        try:
            state.baseline = load(state.baseline_path)
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(
                f"--torchexport-baseline={state.baseline_path}: cannot read it ({exc}); "
                "write one with --torchexport-update-baseline"
            ) from None
    state.auto = _flag(config.getoption("torchexport_auto")) or _flag(config.getini("torchexport_auto"))
    config.pluginmanager.register(Reporting(config, state), "torchexport-reporting")
    config.pluginmanager.register(LateMarkers(), "torchexport-late-markers")
    if config.pluginmanager.hasplugin("xdist"):
        from .xdist import XdistHooks, cap_worker_threads

        config.pluginmanager.register(XdistHooks(), "torchexport-xdist")
        cap_worker_threads(config)


def _verdict_cache(config: pytest.Config) -> tuple[Any, bool]:
    """--torchexport-cache (relative to the invocation dir), else the ini (relative to the
    rootdir), else under pytest's cache dir, which --cache-clear clears and -p no:cacheprovider removes."""
    from .cache import resolve

    given, base = config.getoption("torchexport_cache"), config.invocation_params.dir
    if given is None:
        given, base = config.getini("torchexport_cache"), config.rootpath
    pytest_cache = getattr(config, "cache", None)
    default = pytest_cache.mkdir("torchexport-verdicts") if pytest_cache is not None else None
    cache = resolve(given, default, base)
    return cache, cache is not None and cache.root.is_dir() and any(cache.root.iterdir())


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def _marker_options(node: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    # Farthest first (module, class, function), so the closest marker wins.
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            raise pytest.UsageError(
                f"{node.nodeid}: @pytest.mark.torchexport takes keyword options only, got {mark.args!r}"
            )
        merged.update(mark.kwargs)
    return merged


def _resolve(state: State, marker: dict[str, Any], nodeid: str) -> Options:
    try:
        return Options.build(valid_backends=tuple(state.backends), **{**state.defaults, **marker})
    except InvalidArgument as exc:
        raise pytest.UsageError(f"{nodeid}: {exc}") from None


def _targets(state: State, node: Any) -> list[items.Target] | None:
    """The (backend, device) items of a marked test; a bad option is a usage error (listed, raised once)."""
    try:
        options = _resolve(state, _marker_options(node), node.nodeid)
    except pytest.UsageError as exc:
        state.usage_errors.append(str(exc))
        return None
    return items.targets(options)


@pytest.hookimpl(trylast=True)  # after @parametrize: the id ends in [...-torchexport-<backend>]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE]
    if metafunc.definition.get_closest_marker(MARKER) is None and not state.auto:
        return
    targets = _targets(state, metafunc.definition)
    if targets is None:
        return
    # [Markers Added Late] A conftest's pytest_generate_tests may add the marker to the
    # definition; pytest does not copy a definition's markers to the items it makes, so
    # they ride on each item's parameter, or the items would lose the marker's options.
    decorated = getattr(metafunc.function, "pytestmark", [])
    added = [m for m in metafunc.definition.own_markers if m.name == MARKER and m not in decorated]
    metafunc.fixturenames.append(TARGET)
    metafunc.parametrize(TARGET, [pytest.param(t, id=t.id, marks=added) for t in targets])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Runs after conftests' own modifyitems (they register later, so pytest calls them
    # first) and before -k/-m deselection (pytest's own impl, registered earlier, runs
    # last): a marker a conftest adds here gets its items, and -k onnx selects among them.
    _expand(config, items)


class LateMarkers:
    """A second pass for markers added by a ``trylast`` conftest hook, after everyone else."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        _expand(config, items)
        errors = config.stash[STATE].usage_errors
        if errors:
            # [Usage Errors] A UsageError raised while a module is collected would become that
            # module's collection error; raised here it ends the session as a usage error (exit 4).
            raise pytest.UsageError("\n".join(errors))
        config.stash[STATE].pending = items_per_test(items)


def _expand(config: pytest.Config, collected: list[pytest.Item]) -> None:
    """Items that carry the marker but were not parametrized (unittest, markers added after
    parametrization) become one item per (backend, device) here; what cannot be, says why."""
    state = config.stash[STATE]
    out: list[pytest.Item] = []
    changed = False
    for item in collected:
        marked = item.get_closest_marker(MARKER) is not None
        if items.target(item) is not None or not (marked or (state.auto and isinstance(item, pytest.Function))):
            out.append(item)
            continue
        why = items.cannot_clone(item)
        if why:
            if marked and not item.stash.get(WARNED, False):
                item.stash[WARNED] = True
                item.warn(pytest.PytestCollectionWarning(
                    f"{item.nodeid} is marked torchexport but will not be checked: {why}. "
                    "Mark a test function, a test class's method or a unittest.TestCase method instead, "
                    "or check the module explicitly with the torchexport fixture."
                ))
            out.append(item)
            continue
        targets = _targets(state, item)
        if targets is None:
            out.append(item)
            continue
        out.extend(items.clone(item, t) for t in targets)
        changed = True
    if changed:
        collected[:] = out


def items_per_test(collected: list[pytest.Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in collected:
        key = items.test_key(item)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    # [Body Once] The test's first item in this process ran the body and recorded it; the
    # others reuse that recording, so their body does not run again.
    if pyfuncitem.stash.get(items.REUSE, False):
        return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    target = items.target(item)
    if target is None:
        return (yield)
    __tracebackhide__ = True
    state = item.config.stash[STATE]
    key = items.test_key(item)
    options = _resolve(state, _marker_options(item), item.nodeid)
    recording = state.recordings.get(key)
    try:
        if recording is None:
            _start_loader(item, options, target)
            recording = yield from _run_body(item, options)
            state.remember(key, recording)
        else:
            item.stash[items.REUSE] = True
            yield
        if recording.error is not None:
            # A body that failed fails each item with the body's own error, and leaves a row.
            _record(item, [_body_row(item, target, recording.error)])
            raise recording.error
        _check(item, recording, options, target)
    finally:
        state.done(key)


def _start_loader(item: pytest.Item, options: Options, target: items.Target) -> None:
    """[Standalone Overlap] The standalone loader (a fresh interpreter that imports torch, a
    second or two) starts before the first body it will serve, not when that body's first
    check asks for it, so the import overlaps the body, its recording and the export."""
    from . import standalone

    state = item.config.stash[STATE]
    if state.verdict_cache(item.config) is not None and state.warm:
        return  # [Verdict Cache] most checks will be reused: the first that runs starts the loader
    standalone.start(state.backends.get(target.backend), options)


def _run_body(item: pytest.Item, options: Options) -> Generator[None, None, Any]:
    """Run the test body (the inner hooks) under the recorder; returns its ``Recording``."""
    import torch

    from .capture import Recorder

    # Seeded, so the model's random init (and so a failure) is the same in every run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed or 0)
        with Recorder() as recorder:
            try:
                yield
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - kept, and raised by every item of the test
                recorder.recording.error = exc
    if recorder.recording.error is None:
        recorder.recording.error = items.body_error(item)  # unittest reports failures, it does not raise
    return recorder.recording


def _body_row(item: pytest.Item, target: items.Target, error: BaseException) -> Result:
    from .outcome import Outcome
    from .recorded import row

    if isinstance(error, pytest.skip.Exception):
        why = f"the test body skipped: {error}"
        verdict = Outcome("skipped", why, why, "test_body")
    elif isinstance(error, pytest.xfail.Exception):
        why = f"the test body xfailed: {error}"
        verdict = Outcome("xfail", why, why, "test_body")
    else:
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        verdict = Outcome(
            "usage_error",
            f"The test body failed, so nothing was checked [backend={target.backend}, device={target.device}]\n"
            f"{why}\n"
            "The body runs once per test and its error fails each of the test's items; fix the test first.",
            why, "test_body",
        )
    return row(target.backend, target.device, _session(item), verdict)


def _check(item: pytest.Item, recording: Any, options: Options, target: Any) -> None:
    __tracebackhide__ = True
    state = item.config.stash[STATE]
    planned = state.ahead.take(item) or _plan(item, recording, options, target)
    state.ahead.start_after(item, recording, options)
    result = planned.wait()
    state.ahead.timed(result)
    result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}
    _record(item, [result])
    _outcome(result, state)


def _plan(item: pytest.Item, recording: Any, options: Options, target: Any) -> Any:
    """The item's check, started (``recorded.PlannedRun``)."""
    from .recorded import Selection

    state = item.config.stash[STATE]
    selection = Selection.make(recording, options, auto=state.auto and item.get_closest_marker(MARKER) is None)
    return selection.start(target.backend, target.device, _session(item))


class Ahead:
    """[Side By Side] The checks of a test's next items, started while its current item's runs.

    A check runs in a child with one thread (runner.py), so one item at a time leaves the
    other cores idle. Once an item has the test's recording, the test's next items in this
    process (the same recording, the same options) start their checks too, up to
    ``runner.parallel_checks()`` at once; each item then waits for its own. Under xdist only
    the item pytest runs next here is known. What never runs (``-x``, a rerun) is stopped."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}  # nodeid -> PlannedRun
        self.next: dict[str, pytest.Item | None] = {}  # nodeid -> the item run after it here (xdist)
        self._order: dict[str, int] | None = None
        self._took: dict[tuple[str, str], tuple[float, int]] = {}  # (backend, device) -> (seconds, checks)

    def timed(self, result: Result) -> None:
        """What one check took, for the next tests' order of starting."""
        total = result.timings.get("total_s")
        if total is not None:
            seconds, count = self._took.get((result.backend, result.device), (0.0, 0))
            self._took[(result.backend, result.device)] = (seconds + total, count + 1)

    def expected_s(self, item: pytest.Item) -> float:
        target = items.target(item)
        if target is None:
            return 0.0
        seconds, count = self._took.get((target.backend, target.device), (0.0, 0))
        if count:
            return seconds / count
        from .checks import usual_s  # before one was timed here

        return usual_s(target.backend)

    def take(self, item: pytest.Item) -> Any:
        return self.started.pop(item.nodeid, None)

    def start_after(self, item: pytest.Item, recording: Any, options: Options) -> None:
        from . import runner

        jobs = runner.parallel_checks()
        if jobs <= 1 or recording.error is not None:
            return
        key = items.test_key(item)
        candidates = []
        for following in self._following(item):
            target = items.target(following)
            if target is None or items.test_key(following) != key:
                break
            if following.nodeid in self.started or following.stash.get(ATTEMPTED, False):
                continue
            state = following.config.stash[STATE]
            if _resolve(state, _marker_options(following), following.nodeid) != options:
                break
            candidates.append(following)
        # The longest first: the short ones then fill the other cores while it runs, instead
        # of the test's last long check running alone at its end.
        candidates.sort(key=self.expected_s, reverse=True)
        for following in candidates[: max(0, jobs - 1 - len(self.started))]:
            self.started[following.nodeid] = _plan(following, recording, options, items.target(following))

    def _following(self, item: pytest.Item) -> list[pytest.Item]:
        if hasattr(item.config, "workerinput"):  # xdist: this worker's schedule is not known ahead
            nxt = self.next.get(item.nodeid)
            return [nxt] if nxt is not None else []
        collected = item.session.items
        if self._order is None:
            self._order = {it.nodeid: i for i, it in enumerate(collected)}
        index = self._order.get(item.nodeid)
        return [] if index is None else collected[index + 1 : index + 8]

    def cancel(self, key: str | None = None) -> None:
        for nodeid, planned in list(self.started.items()):
            if key is None or planned.session.test == key:
                planned.cancel()
                del self.started[nodeid]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if items.target(item) is None:
        return (yield)
    ahead = item.config.stash[STATE].ahead
    if hasattr(item.config, "workerinput"):
        ahead.next[item.nodeid] = nextitem
    try:
        return (yield)
    finally:
        ahead.next.pop(item.nodeid, None)
        # Started for this item, which never took it (skipped at setup, a fixture error):
        # stopped, and its place goes to the next item.
        leftover = ahead.take(item)
        if leftover is not None:
            leftover.cancel()


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None:
        state.ahead.cancel()
        if state.cache is not None and not hasattr(session.config, "workerinput"):
            state.cache.prune()


def _session(item: pytest.Item) -> Session:
    from .checks import Session

    state = item.config.stash[STATE]
    if state.database is None:
        state.database = _database(item.config)
    cache = getattr(item.config, "cache", None)
    return Session(
        backends=state.backends,
        database=state.database,
        hypothesis_home=str(cache.mkdir("torchexport-hypothesis")) if cache is not None else None,
        test=items.test_key(item) or item.nodeid,
        nodeid=item.nodeid,
        cache=state.verdict_cache(item.config),
    )


def _database(config: pytest.Config) -> Any:
    """Hypothesis's examples live in pytest's cache dir, never a new .hypothesis/ folder."""
    from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

    cache = getattr(config, "cache", None)
    if cache is None:
        return InMemoryExampleDatabase()
    return DirectoryBasedExampleDatabase(str(cache.mkdir("torchexport-examples")))


def _record(item: pytest.Item, results: list[Result]) -> None:
    item.stash.setdefault(ITEM_RESULTS, []).extend(results)
    for r in results:
        prefix = "torchexport" if len(results) == 1 else f"torchexport[{r.backend}-{r.device}]"
        item.user_properties.append((f"{prefix}.backend", r.backend))
        item.user_properties.append((f"{prefix}.status", r.status))
        if r.max_abs_err is not None:
            item.user_properties.append((f"{prefix}.max_abs_err", r.max_abs_err))


def _outcome(result: Result, state: State) -> None:
    __tracebackhide__ = True  # the failure is the user's model, not these frames
    from .errors import ExportMismatch
    from .report import Report

    if result.status == "skipped" or result.status == "nondeterministic":
        pytest.skip(f"[{result.status}] {result.message}")
    if result.status == "xfail":
        pytest.xfail(result.message)
    if state.update_baseline and result.failed:
        pytest.xfail(f"recorded into the baseline {state.baseline_path}: {result.status}")
    if state.baseline is not None:
        from .baseline import judge_baseline

        verdict = judge_baseline(result.to_dict(), state.baseline)
        result.extra["baseline"] = verdict.kind
        if verdict.kind == "known":
            pytest.xfail(f"{verdict.detail} ({state.baseline_path}): {result.message.splitlines()[0]}")
        if verdict.blocks:
            raise ExportMismatch(f"Regression against the baseline {state.baseline_path}: {verdict.detail}\n"
                                 f"{result.message}", Report([result]))
    if result.failed:
        raise ExportMismatch(result.message, Report([result]))


@pytest.fixture
def torchexport(request: pytest.FixtureRequest) -> Any:
    """Check a module explicitly: ``torchexport(Model(), (x,), dims={"batch": (1, 16)})``.

    Takes the module, the example args (a tuple), optional ``kwargs`` and the marker's
    options; returns the ``Report`` and raises ``ExportMismatch`` when a backend fails.
    Results also reach the session report.
    """
    item = request.node
    state = request.config.stash[STATE]

    def run(module: Any, /, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        __tracebackhide__ = True
        from . import checks

        if "module" in options:
            raise InvalidArgument("module= picks among the modules a marked test calls; the fixture is given its module")

        opts = Options.build(valid_backends=tuple(state.backends), **{**state.defaults, **options})
        report = checks.run(module, args, kwargs, opts, _session(item))
        for result in report.results:
            result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}
        _record(item, report.results)
        if state.baseline is not None or state.update_baseline:
            for result in report.failures:
                _outcome(result, state)  # regressions raise; known failures xfail the test
        checks.raise_if_failed(report)
        return report

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "call" and ITEM_RESULTS in item.stash:
        # Rides on the report, so xdist carries it to the controller (TestReport keeps
        # extra JSON-able attributes through serialization).
        report.torchexport_results = [r.to_dict() for r in item.stash[ITEM_RESULTS]]
    return report


ATTEMPTED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # [Reruns] pytest-rerunfailures runs a failed item again, the same item object: that
    # attempt starts clean (its body runs again, its report carries only its own rows).
    if items.target(item) is None:
        return
    if item.stash.get(ATTEMPTED, False):
        state = item.config.stash[STATE]
        key = items.test_key(item)
        state.recordings.pop(key, None)
        state.ahead.cancel(key)  # started from the recording this attempt replaces
        state.pending[key] = state.pending.get(key, 0) + 1
        for stashed in (ITEM_RESULTS, items.REUSE):
            if stashed in item.stash:
                del item.stash[stashed]
        item.user_properties[:] = [p for p in item.user_properties if not str(p[0]).startswith("torchexport")]
    item.stash[ATTEMPTED] = True


__all__ = ["DEFAULT_BACKENDS", "torchexport"]
