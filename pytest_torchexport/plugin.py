"""pytest glue: decides *when* to check; ``checks.py`` decides *how*.

Each hook is a few lines. Nothing here imports torch at module level: torch is imported
only once a ``torchexport`` test is collected, so a session with no marked test pays
nothing (a subprocess test pins this).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs
from .errors import InvalidArgument
from .options import BUILTIN_BACKENDS, DEFAULT_BACKENDS, Options, add_options, session_defaults
from .reporting import Reporting

if TYPE_CHECKING:
    from .checks import Session
    from .report import Result

MARKER = "torchexport"
TARGET = "_torchexport_target"


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


STATE = pytest.StashKey[State]()
ITEM_RESULTS = pytest.StashKey[list]()


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
    config.pluginmanager.register(Reporting(config, state), "torchexport-reporting")
    if config.pluginmanager.hasplugin("xdist"):
        from .xdist import XdistHooks, cap_worker_threads

        config.pluginmanager.register(XdistHooks(), "torchexport-xdist")
        cap_worker_threads(config)


def _marker_options(definition: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    # Farthest first (module, class, function), so the closest marker wins.
    for mark in reversed(list(definition.iter_markers(MARKER))):
        if mark.args:
            raise pytest.UsageError(
                f"{definition.nodeid}: @pytest.mark.torchexport takes keyword options only, got {mark.args!r}"
            )
        merged.update(mark.kwargs)
    return merged


def _resolve(state: State, marker: dict[str, Any], nodeid: str) -> Options:
    try:
        return Options.build(valid_backends=tuple(state.backends), **{**state.defaults, **marker})
    except InvalidArgument as exc:
        raise pytest.UsageError(f"{nodeid}: {exc}") from None


def pytest_collection_modifyitems(config: pytest.Config) -> None:
    # [Usage Errors] A UsageError raised while a module is collected would become that
    # module's collection error; raised here it ends the session as a usage error (exit 4).
    errors = config.stash[STATE].usage_errors
    if errors:
        raise pytest.UsageError("\n".join(errors))


@pytest.hookimpl(trylast=True)  # after @parametrize: the id ends in [...-torchexport-<backend>]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker(MARKER) is None:
        return
    state = metafunc.config.stash[STATE]
    try:
        options = _resolve(state, _marker_options(metafunc.definition), metafunc.definition.nodeid)
    except pytest.UsageError as exc:
        state.usage_errors.append(str(exc))
        return
    from .checks import resolve_devices

    devices = resolve_devices(options.devices)
    targets, ids = [], []
    for device in devices:
        for backend in options.backends:
            targets.append((backend, device))
            ids.append(f"torchexport-{backend}" + (f"-{device}" if len(devices) > 1 else ""))
    metafunc.fixturenames.append(TARGET)
    metafunc.parametrize(TARGET, targets, ids=ids)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or TARGET not in callspec.params:
        return (yield)
    import torch

    from .capture import Recorder

    __tracebackhide__ = True
    backend, device = callspec.params[TARGET]
    options = _resolve(pyfuncitem.config.stash[STATE], _marker_options(pyfuncitem), pyfuncitem.nodeid)
    # Seeded, so the model's random init (and so a failure) is the same in every item and run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed or 0)
        with Recorder() as recorder:
            outcome = yield
    call = recorder.pick(options.module)
    if call is None:
        _no_module(pyfuncitem, recorder, options)
    _run_check(pyfuncitem, call.module, call.args, call.kwargs, options, backend, device)
    return outcome


def _no_module(item: pytest.Function, recorder: Any, options: Options) -> None:
    __tracebackhide__ = True
    from .errors import NoModuleCalled

    if options.module and recorder.calls:
        called = ", ".join(sorted({c.name for c in recorder.calls}))
        raise NoModuleCalled(f"torchexport(module={options.module!r}): the test called no such module; it called {called}")
    raise NoModuleCalled(
        f"{item.nodeid} is marked torchexport but called no nn.Module, so there was nothing to export.\n"
        "Call the model in the test body (model(x)), or check it explicitly with the fixture:\n"
        "    def test_model(torchexport):\n"
        "        torchexport(Model(), (torch.randn(2, 8),))"
    )


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
        test=item.nodeid.split("[")[0] if TARGET in getattr(getattr(item, "callspec", None), "params", {}) else item.nodeid,
        nodeid=item.nodeid,
    )


def _database(config: pytest.Config) -> Any:
    """Hypothesis's examples live in pytest's cache dir, never a new .hypothesis/ folder."""
    from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

    cache = getattr(config, "cache", None)
    if cache is None:
        return InMemoryExampleDatabase()
    return DirectoryBasedExampleDatabase(str(cache.mkdir("torchexport-examples")))


def _run_check(
    item: pytest.Function, module: Any, args: Any, kwargs: Any, options: Options, backend: str, device: str
) -> None:
    __tracebackhide__ = True
    from . import checks

    result = checks.check_backend(
        module, checks.plan_inputs(module, args, kwargs, dims=options.dims, dynamic=options.dynamic, inputs=options.inputs),
        backend, device, options, _session(item),
    )
    result.extra["location"] = {"file": item.location[0], "line": item.location[1] + 1}
    _record(item, [result])
    _outcome(result, item.config.stash[STATE])


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
        from .baseline import judge

        verdict = judge(result.to_dict(), state.baseline)
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

        try:
            opts = Options.build(valid_backends=tuple(state.backends), **{**state.defaults, **options})
        except InvalidArgument:
            raise
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


__all__ = ["DEFAULT_BACKENDS", "torchexport"]
