"""[Side By Side] The checks of a test's next items, started while its current item's runs.

A check runs in a child with one thread (``isolation/runner.py``), so one item at a time
leaves the other cores idle. Once an item has the test's recording, the test's next items
in this process (the same recording, the same options) start their checks on the session's
``Scheduler`` (``engine/schedule.py``): [Held] each forked at once, so that it inherits the
state the recorded call ran in, and let go as places free, longest first; each item then
takes its own when it runs, and sets up none of its fixtures (``fixtures_needed``). Under
xdist the items the controller has sent this worker are known (``_compat.xdist_queued``), or
where that cannot be read, the one pytest runs next. What never runs here (``-x``, a rerun, an
item taken back by ``--dist worksteal``) is stopped, at the latest when the session ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from .._compat import item_aware_fixtures, xdist_queued
from ..isolation import runner
from ..options import Options
from . import adapters, items
from .markers import options_of
from .state import STATE

if TYPE_CHECKING:  # a type only: recording/ imports torch, which the plugin's import must not
    from ..recording.selection import PlannedRun

#: the item pytest runs after this one in this process (known to xdist workers only this way)
NEXT = pytest.StashKey["pytest.Item | None"]()
#: set once an item has started (pytest-rerunfailures runs the same item object again)
ATTEMPTED = pytest.StashKey[bool]()
#: how far ahead of the current item a check may start
LOOK_AHEAD = 7


def repeats(session: pytest.Session) -> bool:
    """[Warm Once] Whether more than one marked test will be checked in this process: then the
    exporters' first use is paid in the parent before the first check's children
    (``isolation/warmup.py``), not in them and again at the second test."""
    tests = {items.test_key(item) for item in session.items if items.target(item) is not None}
    return len(tests) > 1


def start_following(item: pytest.Item, recording: Any, options: Options) -> None:
    """Start the checks of the test's next items: [Held] each forked now, under the state the
    test's recorded call ran in, and let go beside this one's as places allow."""
    scheduler = item.config.stash[STATE].scheduler
    if recording.error is None:
        key = items.test_key(item)
        candidates = []
        for following in _following(item):
            target = items.target(following)
            if target is None or items.test_key(following) != key:
                break
            if scheduler.started_ahead(following.nodeid) or following.stash.get(ATTEMPTED, False):
                continue
            if options_of(following) != options:
                break
            candidates.append((following, target))
        # The longest first: the short ones then fill the other cores while it runs, instead
        # of the test's last long check running alone at its end.
        candidates.sort(key=lambda c: scheduler.expected_s(c[1].backend, c[1].device), reverse=True)
        for following, _ in candidates:
            scheduler.start_ahead(
                following.nodeid, adapters.plan(following, recording, options, held=True), group=key or ""
            )
    scheduler.release_ahead()


def wait_beside(item: pytest.Item, planned: Any, recording: Any, options: Options) -> None:
    """[Any Place] Until this item's check ends: when a check started ahead ends first, the
    place it held goes to the test's next item (a long ONNX check no longer runs beside an
    idle core after a short check started ahead of it ended)."""
    scheduler = item.config.stash[STATE].scheduler
    planned.start()  # [Held] let go, if it was started ahead and held
    while planned.child is not None and not planned.state.over:
        ahead = scheduler.children_ahead()
        if not ahead or runner.wait_any([planned.child, *ahead]):
            return  # nothing beside it to end first; or a child past its time (its wait ends it)
        start_following(item, recording, options)


def fixtures_needed(item: pytest.Item) -> bool:
    """[Fixtures Once] Whether this item needs its test's fixtures set up: not when its check was
    started ahead and no longer depends on this process (``PlannedRun.detached``): its body does
    not run (the test's first item in this process recorded it) and its child was forked under
    that item's fixtures. Setting them up again cost e3nn's model tests a second a fixture, each
    backend's item. Still set up where a function-scoped fixture takes ``request`` and so may
    decide by the item (``pytest.skip`` for one backend's item): that decision is the item's."""
    # what the plugin starts ahead is always an item's PlannedRun (start_following)
    planned = cast("PlannedRun | None", item.config.stash[STATE].scheduler.ahead(item.nodeid))
    return planned is None or not planned.detached or bool(item_aware_fixtures(item))


def _following(item: pytest.Item) -> list[pytest.Item]:
    state = item.config.stash[STATE]
    collected = item.session.items
    if hasattr(item.config, "workerinput"):  # xdist: what the controller has sent this worker
        queued = xdist_queued(item.config)
        if queued is None:  # only the item pytest runs next here is known
            nxt = item.stash.get(NEXT, None)
            return [nxt] if nxt is not None else []
        return [collected[index] for index in queued[:LOOK_AHEAD] if index < len(collected)]
    if state.order is None:
        state.order = {it.nodeid: i for i, it in enumerate(collected)}
    index = state.order.get(item.nodeid)
    return [] if index is None else collected[index + 1 : index + 1 + LOOK_AHEAD]


__all__ = ["ATTEMPTED", "NEXT", "fixtures_needed", "repeats", "start_following", "wait_beside"]
