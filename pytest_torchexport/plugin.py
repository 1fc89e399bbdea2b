"""pytest glue: the hooks and the ``torchexport`` fixture; ``engine/`` decides *how* to check.

Each hook is a few lines over ``glue/``: the session's state (``state.py``), markers to
options and items (``markers.py``, ``items.py``), the item-to-engine adapters
(``adapters.py``), the checks started ahead of their items (``ahead.py``, on the one
``engine/schedule.py`` scheduler) and the row-to-pytest mapping (``verdicts.py``).

Nothing here imports torch at module level: torch is imported only once a ``torchexport``
test is collected, so a session with no marked test pays nothing (a subprocess test pins this).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from ._compat import skip_fixture_setup
from .errors import InvalidArgument
from .glue import adapters, ahead, hookspecs, items, markers, models, verdicts
from .glue.cli import add_options, misspelled_flags
from .glue.costs import COSTS, Costs
from .glue.items import without_group_suffix
from .glue.state import STATE, State
from .glue.summary import REPORTING, Reporting, carried_rows
from .options import DEFAULT_BACKENDS, Options

if TYPE_CHECKING:  # a type only: recording/ imports torch, which the plugin's import must not
    from .recording.selection import PlannedRun

MARKER = markers.MARKER
TARGET = items.TARGET


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Before pytest reads the command line: a misspelled --torchexport-* flag is one usage error naming
    # the closest flag, not an abbreviation taken silently or a "path" pytest cannot find.
    wrong = misspelled_flags(args)
    if wrong:
        raise pytest.UsageError(wrong)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "torchexport(**options): export the nn.Module this test calls on every backend and check "
        "parity with eager (see pytest-torchexport's docs/reference.md)",
    )
    config.stash[STATE] = state = State.configure(config)
    config.stash[REPORTING] = reporting = Reporting(config, state)
    config.pluginmanager.register(reporting, "torchexport-reporting")
    config.pluginmanager.register(markers.LateMarkers(), "torchexport-late-markers")
    config.stash[COSTS] = costs = Costs(config)
    config.pluginmanager.register(costs, "torchexport-costs")  # [Cost Estimate] before the first check
    models.configure(config)  # [Model By Name] a bad --torchexport-model SPEC is a usage error now
    if config.pluginmanager.hasplugin("xdist"):
        from .glue.xdist import XdistHooks, cap_worker_threads

        config.pluginmanager.register(XdistHooks(), "torchexport-xdist")
        cap_worker_threads(config)


@pytest.hookimpl(trylast=True)  # after @parametrize: the id ends in [...-torchexport-<backend>]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    markers.parametrize(metafunc)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    models.collect(session, items)  # [Model By Name] each --torchexport-model SPEC's items, first
    # Runs after conftests' own modifyitems (they register later, so pytest calls them
    # first) and before -k/-m deselection (pytest's own impl, registered earlier, runs
    # last): a marker a conftest adds here gets its items, and -k onnx selects among them.
    markers.expand(config, items)


def pytest_ignore_collect(collection_path: Any, config: pytest.Config) -> bool | None:
    return models.ignore(config)  # --torchexport-models-only: no test file


def pytest_collection_finish(session: pytest.Session) -> None:
    # [Warm Once] after deselection: the tests this process will check
    session.config.stash[STATE].repeats = ahead.repeats(session)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    # [Body Once] The test's first item in this process ran the body and recorded it; the
    # others reuse that recording, so their body does not run again.
    if pyfuncitem.stash.get(items.REUSE, False):
        return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    error = items.usage_error(item)
    if error is not None:  # the marker's options are wrong: this test's one item says so, nothing runs
        verdicts.record(item, [markers.usage_row(item, error)])
        pytest.fail(error, pytrace=False)
    target = items.target(item)
    if target is None:
        return (yield)
    __tracebackhide__ = True
    state = item.config.stash[STATE]
    key = items.test_key(item)
    assert key is not None  # a marked item (its target is not None)
    options = markers.options_of(item)
    recording = state.recordings.get(key)
    try:
        if recording is None:
            adapters.start_loader(item, options, target)
            recording = yield from adapters.run_body(item, options)
            state.remember(key, recording)
        else:
            item.stash[items.REUSE] = True
            yield
        if recording.error is not None:
            # A body that failed fails each item with the body's own error, and leaves a row.
            verdicts.record(item, [adapters.body_row(item, target, recording.error)])
            if item.stash.get(items.REUSE, False) and models.is_model_error(recording.error):
                # A model by name that cannot be built is one mistake: said in full by the item that
                # tried, and pointed at by the test's others (each still fails, with its row).
                spec = str(recording.error).split(": ", 1)[0]
                pytest.fail(
                    f"{spec}: the model could not be checked (why is said once, at this test's first item)",
                    pytrace=False,
                )
            raise recording.error
        _check(item, recording, options)
    finally:
        state.done(key)


def _check(item: pytest.Item, recording: Any, options: Options) -> None:
    __tracebackhide__ = True
    state = item.config.stash[STATE]
    # what the plugin starts ahead is an item's PlannedRun (ahead.start_following)
    planned = cast("PlannedRun | None", state.scheduler.take(item.nodeid)) or adapters.plan(item, recording, options)
    ahead.start_following(item, recording, options)
    ahead.wait_beside(item, planned, recording, options)
    planned.wait()
    rows = planned.rows  # one per kind of call the test made of the module (recording/kinds.py)
    model = models.inputs_note(item)
    for result in rows:
        state.scheduler.timed(result)
        result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}  # type: ignore[operator]  # a function has a line
        if model is not None:
            result.extra["model"] = model
    verdicts.record(item, rows)
    verdicts.settle_rows(rows, state)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if items.target(item) is None:
        return (yield)
    if hasattr(item.config, "workerinput"):
        item.stash[ahead.NEXT] = nextitem
    try:
        return (yield)
    finally:
        # Started for this item, which never took it (skipped at setup, a fixture error):
        # stopped, and its place goes to the next item.
        leftover = item.config.stash[STATE].scheduler.take(item.nodeid)
        if leftover is not None:
            leftover.cancel()


@pytest.hookimpl(trylast=True)  # after other plugins' sessionfinish: every report's rows are in
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The plugin's one end of session, in this order: stop the checks started ahead that no item
    took; then, on the controller only (xdist's workers send their rows on the test reports),
    prune the verdict cache, keep this run's costs, and write the report files and the baseline
    last, once every row is in. The terminal summary (``Reporting``) follows: pytest writes it
    after this hook, so it can name the files written here."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    state.scheduler.cancel()
    if hasattr(config, "workerinput"):
        return
    if state.cache is not None:
        state.cache.prune()
    config.stash[COSTS].keep()
    config.stash[REPORTING].write_reports()


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
        from .engine import pipeline

        if "module" in options:
            raise InvalidArgument(
                "module= picks among the modules a marked test calls; the fixture is given its module"
            )

        opts = Options.build(valid_backends=tuple(state.backends), **{**state.defaults, **options})
        report = pipeline.run(module, args, kwargs, opts, adapters.session(item), scheduler=state.scheduler)
        for result in report.results:
            result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}
        verdicts.record(item, report.results)
        if state.baseline is not None or state.update_baseline:
            for result in report.failures:
                verdicts.settle_item(result, state)  # regressions raise; known failures xfail the test
        pipeline.raise_if_failed(report)
        return report

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """The plugin's one wrapper over a test report: the call phase's rows ride on it, so xdist
    carries them to the controller (a TestReport keeps extra JSON-able attributes through its
    serialization). In this order: the rows the item recorded (``verdicts``); else the row an
    interrupted or raising check put on its exception ([Interrupted]); then each row's test id
    without xdist's ``@group`` suffix ([Group Suffix])."""
    report = yield
    if call.when != "call":
        return report
    rows = verdicts.rows_of(item)
    if not rows:
        rows = carried_rows(call) or rows
    if rows is not None:
        without_group_suffix(item, rows)
        report.torchexport_results = rows
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # [Reruns] pytest-rerunfailures runs a failed item again, the same item object: that
    # attempt starts clean (its body runs again, its report carries only its own rows).
    if items.target(item) is None:
        return
    if item.stash.get(ahead.ATTEMPTED, False):
        state = item.config.stash[STATE]
        key = items.test_key(item)
        assert key is not None  # a marked item (its target is not None)
        state.recordings.pop(key, None)
        state.scheduler.cancel(key or "")  # started from the recording this attempt replaces
        state.pending[key] = state.pending.get(key, 0) + 1
        for stashed in (verdicts.ITEM_RESULTS, items.REUSE):
            if stashed in item.stash:  # type: ignore[misc]  # two keys of different value types
                del item.stash[stashed]  # type: ignore[misc]
        item.user_properties[:] = [p for p in item.user_properties if not str(p[0]).startswith("torchexport")]
    item.stash[ahead.ATTEMPTED] = True
    # [Fixtures Once] Its check was forked under the fixtures of the test's item that ran the
    # body: its own would be set up for nothing (its body does not run, [Body Once]).
    if not ahead.fixtures_needed(item):
        skip_fixture_setup(item)


__all__ = ["DEFAULT_BACKENDS", "torchexport"]
