"""[Session State] What one pytest process knows across items, kept in ``config.stash``.

Built once in ``pytest_configure`` (``State.configure``): the backends (built in and from the
``pytest_torchexport_backends`` hook), the session-wide option defaults, the report and
baseline paths, and then, while items run, the rows, the recordings of test bodies, the
scheduler of checks and the verdict cache. Never a module global: two pytest sessions in
one process (pytester) never share it. What the engine needs of it travels on the ``Session``
each item hands the engine (``adapters.session``). The few facts of the OS process itself,
which every session in it shares (what it paid of the exporters' first use, the children it
forked, the loader it spawned), are ``isolation/runner.py``'s one documented record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ..cache.store import resolve
from ..engine.schedule import Scheduler
from ..errors import InvalidArgument
from ..options import BUILTIN_BACKENDS, switched_on
from ..results.baseline import load
from ..results.html import missing_message
from ..results.merge import report_format_problem
from .cli import session_defaults

#: Under xdist a worker runs only some of a test's items: at most this many recordings kept.
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
    #: --torchexport-report (repeatable): one file per path, its format from its suffix
    report_paths: list[str] = field(default_factory=list)
    update_baseline: bool = False
    auto: bool = False  # --torchexport-auto: every collected test as if it carried a bare marker
    #: [Body Once] test key -> the recording of its body, shared by the test's items in this process
    recordings: dict[str, Any] = field(default_factory=dict)
    #: test key -> how many of its items are still to run here (the recording is freed at 0)
    pending: dict[str, int] = field(default_factory=dict)
    #: [Side By Side] the one scheduler of this process's checks: items (and checks started
    #: ahead of their items, glue/ahead.py) and the fixture's
    scheduler: Scheduler = field(default_factory=Scheduler)
    #: nodeid -> index in the collected items, for the items that follow one (glue/ahead.py)
    order: dict[str, int] | None = None
    #: [Verdict Cache] where verdicts are reused (cache.store.Cache), None when off; resolved on first use
    cache: Any = None
    cache_resolved: bool = False
    warm: bool = False  # the cache held entries when the session started
    #: [Model By Name] SPEC -> the inputs its model was called with, and where they came from
    model_inputs: dict[str, str] = field(default_factory=dict)
    #: [Warm Once] more than one test will be checked in this process (decided after deselection,
    #: ``ahead.repeats``): every check's session says so to the warm-up (``isolation/warmup.py``)
    repeats: bool = False

    @classmethod
    def configure(cls, config: pytest.Config) -> State:
        """The state of a session starting: options read, the baseline loaded (usage errors raise)."""
        backends = dict(BUILTIN_BACKENDS)
        for extra in config.hook.pytest_torchexport_backends(config=config):
            for name in sorted(set(extra or {}) & set(BUILTIN_BACKENDS)):
                # allowed (a subclass with other settings), but never silently: a name taken over
                config.issue_config_time_warning(
                    pytest.PytestConfigWarning(
                        f"pytest_torchexport_backends returned {name!r}, a built-in backend's name: it replaces "
                        f"the built-in {name!r} backend in this session (register it under another name to keep both)"
                    ),
                    stacklevel=2,
                )
            backends.update(extra or {})
        try:
            defaults = session_defaults(config, tuple(backends))
        except InvalidArgument as exc:
            raise pytest.UsageError(str(exc)) from None
        state = cls(backends=backends, defaults=defaults)
        given = config.getoption("torchexport_report") or config.getini("torchexport_report") or []
        state.report_paths = list(dict.fromkeys(str(p) for p in given if str(p).strip()))
        for path in state.report_paths:
            wrong = report_format_problem(path, "--torchexport-report")
            if wrong:
                raise pytest.UsageError(wrong)
            if path.endswith(".html"):
                absent = missing_message(f"--torchexport-report={path}")
                if absent:  # said now, not after an hour of checks
                    raise pytest.UsageError(absent)
        state.baseline_path = config.getoption("torchexport_baseline") or config.getini("torchexport_baseline") or None
        state.update_baseline = switched_on(config.getoption("torchexport_update_baseline")) or switched_on(
            config.getini("torchexport_update_baseline")
        )
        if state.update_baseline and not state.baseline_path:
            raise pytest.UsageError(
                "--torchexport-update-baseline needs --torchexport-baseline=PATH (where to write it)"
            )
        if state.baseline_path and not state.update_baseline:
            try:
                state.baseline = load(state.baseline_path)
            except (OSError, ValueError) as exc:
                raise pytest.UsageError(
                    f"--torchexport-baseline={state.baseline_path}: cannot read it ({exc}); "
                    "write one with --torchexport-update-baseline"
                ) from None
        state.auto = switched_on(config.getoption("torchexport_auto")) or switched_on(config.getini("torchexport_auto"))
        return state

    def verdict_cache(self, config: pytest.Config) -> Any:
        if not self.cache_resolved:
            self.cache_resolved = True
            self.cache, self.warm = _verdict_cache(config)
        return self.cache

    def example_database(self, config: pytest.Config) -> Any:
        if self.database is None:
            self.database = _database(config)
        return self.database

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


def _verdict_cache(config: pytest.Config) -> tuple[Any, bool]:
    """--torchexport-cache (relative to the invocation dir), else the ini (relative to the
    rootdir), else under pytest's cache dir, which --cache-clear clears and -p no:cacheprovider removes."""
    given, base = config.getoption("torchexport_cache"), config.invocation_params.dir
    if given is None:
        given, base = config.getini("torchexport_cache"), config.rootpath
    pytest_cache = getattr(config, "cache", None)
    default = pytest_cache.mkdir("torchexport-verdicts") if pytest_cache is not None else None
    cache = resolve(given, default, base)
    return cache, cache is not None and cache.root.is_dir() and any(cache.root.iterdir())


def _database(config: pytest.Config) -> Any:
    """Hypothesis's examples live in pytest's cache dir, never a new .hypothesis/ folder."""
    # Deferred: hypothesis costs 0.7 s to import here, paid only by a session that checks something
    from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

    cache = getattr(config, "cache", None)
    if cache is None:
        return InMemoryExampleDatabase()
    return DirectoryBasedExampleDatabase(str(cache.mkdir("torchexport-examples")))


__all__ = ["KEEP_RECORDINGS", "STATE", "State"]
