"""What a pytest item hands the engine, and what the engine hands back as a row.

The engine never touches a pytest object: an item becomes a ``Session``, its body a
``Recording`` and its check a ``PlannedRun``. See docs/one-check.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from .._compat import torch
from ..options import Options
from ..recording.deferral import Deferral
from ..recording.models import ModelError
from ..recording.recorder import Recorder
from ..results import outcome
from ..results.outcome import Outcome
from ..stages.session import Session
from . import items
from .markers import MARKER
from .state import STATE

if TYPE_CHECKING:
    from ..recording.calls import Recording
    from ..recording.selection import PlannedRun
    from ..results.report import Result


def session(item: pytest.Item) -> Session:
    """The engine's view of the item: its names, the example database, the verdict cache."""
    state = item.config.stash[STATE]
    cache = getattr(item.config, "cache", None)
    return Session(
        backends=state.backends,
        database=lambda: state.example_database(item.config),
        hypothesis_home=str(cache.mkdir("torchexport-hypothesis")) if cache is not None else None,
        test=items.test_key(item) or item.nodeid,
        nodeid=item.nodeid,
        cache=state.verdict_cache(item.config),
        repeats=state.repeats,
    )


def plan(item: pytest.Item, recording: Recording, options: Options, *, held: bool = False) -> PlannedRun:
    """Start the item's check; ``held``: fork the child now, let it go later (``runner.Child``)."""
    # Deferred: imports torch and hypothesis; the plugin's import stays torch-free.
    from ..recording.selection import Selection

    state = item.config.stash[STATE]
    target = items.target(item)
    assert target is not None
    selection = Selection.make(recording, options, auto=state.auto and item.get_closest_marker(MARKER) is None)
    return selection.start(target.backend, target.device, session(item), held=held)


def prepare_stages(item: pytest.Item, options: Options, target: items.Target) -> None:
    """Prepare the optional stages now (the standalone loader, the C++ runner's build), so their
    slow starts overlap the body and the export."""
    state = item.config.stash[STATE]
    if state.verdict_cache(item.config) is not None and state.warm:
        return  # [Verdict Cache] most checks will be reused: the first one that runs starts it
    # Deferred, after the warm return: imports torch and hypothesis, which a reused check never needs.
    from ..stages import optional

    for stage in optional.OPTIONAL:
        stage.prepare(target.backend, state.backends.get(target.backend), options)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """torch's RNG seeded for a test's body and restored after it, so the model the test builds
    with random weights (and so a failure, and the verdict cache's key) is the same in every run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed or 0)
        yield


def run_body(item: pytest.Item, options: Options) -> Generator[None, None, Recording]:
    """Run the test body (the inner hooks) under the recorder; returns its ``Recording``."""
    cache = item.config.stash[STATE].verdict_cache(item.config)
    test = items.test_key(item) or item.nodeid
    deferral = (
        Deferral(cache, test) if cache is not None and not options.keep_artifacts and not options.bundle else None
    )
    with seeded(options.seed):
        with Recorder(module=options.module, deferral=deferral) as recorder:
            t0 = time.perf_counter()
            try:
                yield
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - kept, and raised by every item of the test
                recorder.recording.error = exc
            finally:
                recorder.recording.body_s = time.perf_counter() - t0
    if recorder.recording.error is None:
        recorder.recording.error = items.body_error(item)  # unittest reports failures, it does not raise
    return recorder.recording


def body_row(item: pytest.Item, target: items.Target, error: BaseException) -> Result:
    """The row of an item whose test body did not finish: skipped, xfailed, or a usage error."""
    if isinstance(error, pytest.skip.Exception):
        why = f"the test body skipped: {error}"
        verdict = Outcome("skipped", why, why, "test_body")
    elif isinstance(error, pytest.xfail.Exception):
        why = f"the test body xfailed: {error}"
        verdict = Outcome("xfail", why, why, "test_body")
    elif isinstance(error, ModelError):
        # [Model By Name] its message says it all
        why = str(error).splitlines()[0]
        verdict = Outcome(
            "usage_error",
            f"The model could not be checked [backend={target.backend}, device={target.device}]\n{error}",
            why,
            "usage",
        )
    else:
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        verdict = Outcome(
            "usage_error",
            f"The test body failed, so nothing was checked [backend={target.backend}, device={target.device}]\n"
            f"{why}\n"
            "The body runs once per test and its error fails each of the test's items; fix the test first.",
            why,
            "test_body",
        )
    return _item_row(item, target, verdict)


def setup_skip_row(item: pytest.Item, target: items.Target, reason: str, *, xfailed: bool = False) -> Result:
    """The row of an item skipped (or xfailed with ``run=False``) before its body ran: nothing was
    recorded, nothing checked."""
    why = f"the test was {'xfailed' if xfailed else 'skipped'} before its body ran: {reason.removeprefix('Skipped: ')}"
    return _item_row(item, target, Outcome("xfail" if xfailed else "skipped", why, why, "test_body"))


def _item_row(item: pytest.Item, target: items.Target, verdict: Outcome) -> Result:
    names = session(item)
    return outcome.row(verdict, backend=target.backend, device=target.device, nodeid=names.nodeid, test=names.test)


__all__ = ["body_row", "plan", "prepare_stages", "run_body", "seeded", "session", "setup_skip_row"]
