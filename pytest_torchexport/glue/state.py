"""What one pytest session knows across items, kept in ``config.stash``.

Never a module global, so two pytest sessions in one process (pytester) never share it.
Facts about the OS process itself live in ``isolation/runner.py``.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from ..cache.store import resolve
from ..engine.schedule import Scheduler
from ..errors import InvalidArgument
from ..options import BUILTIN_BACKENDS, switched_on
from ..results.baseline import load
from ..results.html import missing_message
from ..results.merge import report_format_problem
from .cli import session_defaults

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

    from ..cache.store import Cache
    from ..recording.calls import Recording

#: At most this many recordings are kept (see ``State.remember``).
KEEP_RECORDINGS = 4
#: A test whose checks' shared stages held this many bytes is collected at once when it is done.
COLLECT_BYTES = 64 << 20


@dataclass
class State:
    """Run state of one pytest session."""

    backends: dict[str, Any]
    defaults: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    database: Any = None
    usage_errors: list[str] = field(default_factory=list)
    baseline: dict[str, dict[str, Any]] | None = None
    baseline_path: str | None = None
    #: --torchexport-report paths
    report_paths: list[str] = field(default_factory=list)
    update_baseline: bool = False
    auto: bool = False  # --torchexport-auto
    #: [Body Once] test key -> the recording of its body, shared by the test's items
    recordings: dict[str, Any] = field(default_factory=dict)
    #: test key -> how many of its items are still to run (the recording is freed at 0)
    pending: dict[str, int] = field(default_factory=dict)
    #: [Side By Side] the one scheduler of this session's checks
    scheduler: Scheduler = field(default_factory=Scheduler)
    #: nodeid -> index in the collected items (glue/ahead.py)
    order: dict[str, int] | None = None
    #: [Verdict Cache] cache.store.Cache, or None when off; resolved on first use
    cache: Any = None
    cache_resolved: bool = False
    warm: bool = False  # the cache held entries when the session started
    #: [Model By Name] SPEC -> the inputs its model was called with
    model_inputs: dict[str, str] = field(default_factory=dict)
    #: [Warm Once] more than one test will be checked here (``ahead.repeats``)
    repeats: bool = False
    #: a done test's shared stages held COLLECT_BYTES or more (``collect_if_due``)
    collect_due: bool = False

    @classmethod
    def configure(cls, config: pytest.Config) -> State:
        """Read the options and load the baseline; a bad value raises ``pytest.UsageError``."""
        backends = dict(BUILTIN_BACKENDS)
        for extra in config.hook.pytest_torchexport_backends(config=config):
            for name in sorted(set(extra or {}) & set(BUILTIN_BACKENDS)):
                # Allowed, but never silently.
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
                if absent:  # said now, not after every check has run
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

    def verdict_cache(self, config: pytest.Config) -> Cache | None:
        if not self.cache_resolved:
            self.cache_resolved = True
            self.cache, self.warm = _verdict_cache(config)
        return self.cache

    def example_database(self, config: pytest.Config) -> ExampleDatabase:
        if self.database is None:
            self.database = _database(config)
        return self.database

    def remember(self, key: str, recording: Recording) -> None:
        self.recordings[key] = recording
        # Under xdist a count may never reach 0, and a recording may hold a copy of a model.
        while len(self.recordings) > KEEP_RECORDINGS:
            self.recordings.pop(next(iter(self.recordings)))

    def done(self, key: str) -> None:
        left = self.pending.get(key, 1) - 1
        self.pending[key] = left
        if left <= 0:
            recording = self.recordings.pop(key, None)
            once = getattr(getattr(recording, "selection", None), "eager_once", None)
            if once is not None and once.held_bytes() >= COLLECT_BYTES:
                self.collect_due = True

    def collect_if_due(self) -> None:
        """Collect the last test's shared stages, once the item's frames no longer hold them.

        The recording, its checks' objects and hypothesis's test refer to each other, so what
        they hold (eager's module copies, the held runs) waits for the collector's full pass,
        which counts objects, not bytes: a file of large tests grew the test's process by each
        test's share until one came. A full pass costs about 0.4 s beside torch's objects, so
        only a test whose shared stages held ``COLLECT_BYTES`` pays for it."""
        if self.collect_due:
            self.collect_due = False
            gc.collect()


STATE = pytest.StashKey[State]()


def _verdict_cache(config: pytest.Config) -> tuple[Cache | None, bool]:
    """The cache and whether it already held entries: the flag, else the ini key, else under
    pytest's cache dir."""
    given, base = config.getoption("torchexport_cache"), config.invocation_params.dir
    if given is None:
        given, base = config.getini("torchexport_cache"), config.rootpath
    pytest_cache = getattr(config, "cache", None)
    default = pytest_cache.mkdir("torchexport-verdicts") if pytest_cache is not None else None
    cache = resolve(given, default, base)
    return cache, cache is not None and cache.root.is_dir() and any(cache.root.iterdir())


def _database(config: pytest.Config) -> ExampleDatabase:
    """Hypothesis's examples live in pytest's cache dir, never a new .hypothesis/ folder."""
    # Deferred: hypothesis is slow to import.
    from hypothesis.database import DirectoryBasedExampleDatabase, InMemoryExampleDatabase

    cache = getattr(config, "cache", None)
    if cache is None:
        return InMemoryExampleDatabase()
    return DirectoryBasedExampleDatabase(str(cache.mkdir("torchexport-examples")))


__all__ = ["KEEP_RECORDINGS", "STATE", "State"]
