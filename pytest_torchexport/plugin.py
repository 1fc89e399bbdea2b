"""The pytest hooks and the ``torchexport`` fixture; ``glue/`` holds their logic and
``engine/`` decides how to check.

Nothing here imports torch at module level, so a session with no marked test pays nothing.
See docs/one-check.md.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, cast

import pytest

from ._compat import skip_fixture_setup
from .errors import InvalidArgument
from .glue import adapters, ahead, hookspecs, items, markers, model_items, verdicts, wording
from .glue.cli import add_options, misspelled_flags
from .glue.command import started_by_check
from .glue.costs import COSTS, Costs
from .glue.items import without_group_suffix
from .glue.state import STATE, State
from .glue.summary import REPORTING, Reporting, carried_rows
from .options import DEFAULT_BACKENDS, Options

if TYPE_CHECKING:  # a type only: recording/ imports torch, which the plugin's import must not
    from pathlib import Path

    import torch

    from .recording.calls import Recording
    from .recording.selection import PlannedRun
    from .results.report import Report

MARKER = markers.MARKER
TARGET = items.TARGET


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # Before pytest parses the command line, which would misread a misspelled flag.
    wrong = misspelled_flags(args)
    if wrong:
        raise pytest.UsageError(wrong)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "torchexport(**options): export the nn.Module this test calls on every backend and check "
        "parity with eager (see pytest-torchexport's docs/reference.md)",
    )
    try:
        config.stash[STATE] = state = State.configure(config)
        model_items.configure(config)  # [Model By Name] a bad SPEC is a usage error now
    except pytest.UsageError as exc:
        if started_by_check(config.pluginmanager.get_plugins()):  # name the options the user typed
            raise pytest.UsageError(*(wording.usage_in_check_words(str(a)) for a in exc.args)) from None
        raise
    config.stash[REPORTING] = reporting = Reporting(config, state)
    config.pluginmanager.register(reporting, "torchexport-reporting")
    config.pluginmanager.register(markers.LateMarkers(), "torchexport-late-markers")
    config.stash[COSTS] = costs = Costs(config)
    config.pluginmanager.register(costs, "torchexport-costs")
    if config.pluginmanager.hasplugin("xdist"):
        from .glue.xdist import XdistHooks, cap_worker_threads

        config.pluginmanager.register(XdistHooks(), "torchexport-xdist")
        cap_worker_threads(config)


@pytest.hookimpl(trylast=True)  # after @parametrize: the id ends in [...-torchexport-<backend>]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    markers.parametrize(metafunc)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    model_items.collect(session, items)  # [Model By Name] each SPEC's items, first
    # After conftests' modifyitems and before -k/-m deselection, so markers they add count.
    markers.expand(config, items)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return model_items.ignore(config)  # --torchexport-models-only: no test file


@pytest.hookimpl(tryfirst=True)  # before xdist's worker sends the order it runs to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    # after deselection and every plugin's reordering
    ahead.body_ahead(session)
    session.config.stash[STATE].repeats = ahead.repeats(session)  # [Warm Once]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    # [Body Once] the test's other items reuse the first item's recording
    if pyfuncitem.stash.get(items.REUSE, False):
        return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    error = items.usage_error(item)
    if error is not None:  # the marker's options are wrong: nothing runs
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
            state.scheduler.release_ahead()  # [Side By Side] the previous test's checks run beside the body
            adapters.prepare_stages(item, options, target)
            recording = yield from adapters.run_body(item, options)
            state.remember(key, recording)
        else:
            item.stash[items.REUSE] = True
            yield
        if recording.error is not None:
            # A failed body fails each item with its own error, and leaves a row.
            verdicts.record(item, [adapters.body_row(item, target, recording.error)])
            if item.stash.get(items.REUSE, False) and model_items.is_model_error(recording.error):
                # Say the error in full only once, at the item that built the model.
                spec = str(recording.error).split(": ", 1)[0]
                pytest.fail(
                    f"{spec}: the model could not be checked (why is said once, at this test's first item)",
                    pytrace=False,
                )
            raise recording.error
        _check(item, recording, options)
    finally:
        state.done(key)


def _check(item: pytest.Item, recording: Recording, options: Options) -> None:
    __tracebackhide__ = True
    state = item.config.stash[STATE]
    state.scheduler.release_ahead()  # [Side By Side] beside this test's shared work, made in planning
    # ahead.start_following only ever starts an item's PlannedRun
    planned = cast("PlannedRun | None", state.scheduler.take(item.nodeid)) or adapters.plan(item, recording, options)
    ahead.start_following(item, recording, options)
    ahead.let_go_inputs(item, planned, recording)
    ahead.wait_beside(item, planned, recording, options)
    planned.wait()
    rows = planned.rows  # one per kind of call the test made (recording/kinds.py)
    model = model_items.inputs_note(item)
    for result in rows:
        state.scheduler.timed(result)
        result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}  # type: ignore[operator]  # a function has a line
        if model is not None:
            result.extra["model"] = model
    verdicts.record(item, rows)
    verdicts.settle_rows(rows, state)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    if items.target(item) is None:
        return (yield)
    if hasattr(item.config, "workerinput"):
        item.stash[ahead.NEXT] = nextitem
    try:
        return (yield)
    finally:
        # A check started ahead that this item never took (skipped at setup, a fixture error).
        leftover = item.config.stash[STATE].scheduler.take(item.nodeid)
        if leftover is not None:
            leftover.cancel()
        item.config.stash[STATE].collect_if_due()


@pytest.hookimpl(trylast=True)  # after other plugins' sessionfinish, so every row is in
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the checks no item took; then, on the controller only, prune the cache, keep the
    costs and write the reports (before pytest writes the terminal summary)."""
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
def torchexport(request: pytest.FixtureRequest) -> Generator[Callable[..., Report], None, None]:
    """Check a module explicitly: ``torchexport(Model(), (x,), dims={"batch": (1, 16)})``.

    Takes the marker's options; returns the ``Report`` and raises ``ExportMismatch`` when a
    backend fails. See docs/check-api.md.
    """
    item = request.node
    state = request.config.stash[STATE]

    def run(
        module: torch.nn.Module,
        /,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: object,
    ) -> Report:
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

    # Seeded as a marked test's body is (--torchexport-seed, else 0): a model the test builds has
    # the same random weights on every run, so its verdict can be reused and a failure repeats.
    with adapters.seeded(state.defaults.get("seed")):
        yield run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the call phase's rows to the test report, which xdist carries to the controller:
    the recorded rows, else the one on the exception ([Interrupted]), ids without [Group Suffix];
    an item skipped at setup gets its row on the setup report."""
    report = yield
    target = items.target(item) if call.when != "teardown" else None
    if call.when == "setup" and report.skipped and target is not None and verdicts.rows_of(item) is None:
        # A test skipped before its body ran (a skip marker, a unittest class skipped whole) gets its row too.
        xfailed = hasattr(report, "wasxfail")  # xfail(run=False)
        reason = report.wasxfail if xfailed else report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        verdicts.record(item, [adapters.setup_skip_row(item, target, str(reason), xfailed=xfailed)])
    elif call.when != "call":
        return report
    elif report.skipped and isinstance(report.longrepr, tuple) and target is not None:
        # pytest.skip names where it was raised: for a row this plugin skips, a frame of pluggy's
        # or of this package. -rs should name the test, as for a skip marker; a skip the test's
        # own code raised keeps its line.
        raised_at = str(report.longrepr[0]).replace("\\", "/")
        if "/pluggy/" in raised_at or "/pytest_torchexport/" in raised_at:
            path, lineno, _ = item.location
            report.longrepr = (str(item.path), (lineno or 0) + 1, report.longrepr[2])
    rows = verdicts.rows_of(item)
    if not rows:
        rows = carried_rows(call) or rows
    if rows is not None:
        without_group_suffix(item, rows)
        report.torchexport_results = rows
        report.torchexport_test = items.test_key(item)  # the report keeps a test's rows together
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # pytest-rerunfailures reruns the same item object: start it clean.
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
    # [Fixtures Once] a check started ahead was forked under the first item's fixtures ([Body Once])
    if not ahead.fixtures_needed(item):
        skip_fixture_setup(item)


__all__ = ["DEFAULT_BACKENDS", "torchexport"]
