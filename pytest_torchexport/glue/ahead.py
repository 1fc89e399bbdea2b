"""[Side By Side] Start the checks of a test's next items while its current item's check runs.

Each check runs in a one-thread child, so one item at a time would leave cores idle. The
next items' checks are [Held]: forked at once, let go as places free. The next
test's first item runs before this test's later items report, so its body uses this process
while their checks use the other cores. See docs/howto-isolation.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

import pytest

from .._compat import item_aware_fixtures, xdist_queued
from ..isolation import runner
from ..options import Options
from . import adapters, items
from .markers import options_of
from .state import STATE

if TYPE_CHECKING:  # a type only: recording/ imports torch, which the plugin's import must not
    from ..recording.calls import Recording
    from ..recording.selection import PlannedRun

#: The item pytest runs next (how an xdist worker knows it).
NEXT = pytest.StashKey["pytest.Item | None"]()
#: Set once an item has started (pytest-rerunfailures reruns the same item object).
ATTEMPTED = pytest.StashKey[bool]()
#: How many items ahead of the current one a check may start: a test's later items, the next
#: test's first item and the previous test's later items (body_ahead).
LOOK_AHEAD = 15


def repeats(session: pytest.Session) -> bool:
    """[Warm Once] Whether more than one marked test will be checked in this process."""
    tests = {items.test_key(item) for item in session.items if items.target(item) is not None}
    return len(tests) > 1


def start_following(item: pytest.Item, recording: Recording, options: Options) -> None:
    """Start the checks of the test's next items: [Held] each forked now, to inherit the
    recorded call's state, and let go as places free."""
    scheduler = item.config.stash[STATE].scheduler
    if recording.error is None:
        key = items.test_key(item)
        candidates = []
        for following in _following(item):
            target = items.target(following)
            if target is None or items.test_key(following) != key:
                continue  # another test's item, moved between this test's (body_ahead)
            if scheduler.started_ahead(following.nodeid) or following.stash.get(ATTEMPTED, False):
                continue
            if options_of(following) != options:
                continue
            candidates.append((following, target))
        # Longest first, so the short ones fill the other cores while it runs.
        candidates.sort(key=lambda c: scheduler.expected_s(c[1].backend, c[1].device), reverse=True)
        for following, _ in candidates:
            scheduler.start_ahead(
                following.nodeid, adapters.plan(following, recording, options, held=True), group=key or ""
            )
    scheduler.release_ahead()


def let_go_inputs(item: pytest.Item, planned: PlannedRun, recording: Recording) -> None:
    """Once every item of the test left to run has its check forked, the test's process lets go
    of the inputs it held for those children (``EagerOnce.forked_all``)."""
    selection = recording.selection
    if selection is None or selection.eager_once is None:
        return
    state = item.config.stash[STATE]
    key = items.test_key(item) or ""
    # start_following only ever starts an item's PlannedRun
    later = cast("list[PlannedRun]", state.scheduler.ahead_in(key))
    if state.pending.get(key, 1) - 1 <= len(later) and all(p.detached for p in [planned, *later]):
        selection.eager_once.forked_all()


def wait_beside(item: pytest.Item, planned: PlannedRun, recording: Recording, options: Options) -> None:
    """Wait for this item's check, giving the place of any check started ahead that ends first
    to the test's next item."""
    scheduler = item.config.stash[STATE].scheduler
    planned.start()  # [Held] let go, if it was started ahead and held
    while planned.child is not None and not planned.state.over:
        ahead = scheduler.children_ahead()
        if not ahead or runner.wait_any([planned.child, *ahead]):
            return  # nothing else to wait for, or the child ran past its time
        start_following(item, recording, options)


def body_ahead(session: pytest.Session) -> None:
    """[Side By Side] Order ``session.items`` so that each marked test's later items come after
    the next test's first item.

    The later items' checks are started at the test's first item ([Held]); when they come
    after the next test's first item, that item's body, and the shared work of its checks
    (its inputs through eager, the export capture), runs in this process while those checks
    run in their children, where it would otherwise wait for the last of them with a core
    idle. Bodies keep their order and no test's setup moves past another's teardown: only
    the next test's first item of the same module or class moves, and only where every one of
    the later items can be started ahead. Nothing moves where nothing runs beside the body
    (one place, no fork) or where this worker cannot see its queue.
    """
    config = session.config
    if config.option.collectonly or not hasattr(os, "fork") or runner.parallel_checks() < 2:
        return
    if hasattr(config, "workerinput") and xdist_queued(config) is None:
        return
    ordered: list[pytest.Item] = []
    held: list[pytest.Item] = []  # the previous test's later items, not yet placed
    before: pytest.Item | None = None  # the previous test's first item
    for group in _groups(session.items):
        first, later = group[0], group[1:]
        beside = before is not None and first.parent is before.parent
        if held and not (beside and len(held) + len(group) <= LOOK_AHEAD):  # the window reaches them all
            ordered.extend(held)
            held = []
        ordered.append(first)
        ordered.extend(held)
        held, before = later, first  # an unmarked item is a run of one: nothing later
    ordered.extend(held)
    session.items[:] = ordered


def _groups(collected: list[pytest.Item]) -> list[list[pytest.Item]]:
    """The items in runs of one test each; an unmarked item is its own run."""
    groups: list[list[pytest.Item]] = []
    last: str | None = None
    for item in collected:
        key = items.test_key(item)
        if groups and key is not None and key == last:
            groups[-1].append(item)
        else:
            groups.append([item])
        last = key
    return groups


def fixtures_needed(item: pytest.Item) -> bool:
    """[Fixtures Once] Whether this item needs its fixtures: not when its check was started ahead
    and is ``detached``, unless a fixture takes ``request`` and may decide per item."""
    # start_following only ever starts an item's PlannedRun
    planned = cast("PlannedRun | None", item.config.stash[STATE].scheduler.ahead(item.nodeid))
    return planned is None or not planned.detached or bool(item_aware_fixtures(item))


def _following(item: pytest.Item) -> list[pytest.Item]:
    state = item.config.stash[STATE]
    collected = item.session.items
    if hasattr(item.config, "workerinput"):  # xdist: the items the controller sent this worker
        queued = xdist_queued(item.config)
        if queued is None:  # only the next item is known
            nxt = item.stash.get(NEXT, None)
            return [nxt] if nxt is not None else []
        return [collected[index] for index in queued[:LOOK_AHEAD] if index < len(collected)]
    if state.order is None:
        state.order = {it.nodeid: i for i, it in enumerate(collected)}
    index = state.order.get(item.nodeid)
    return [] if index is None else collected[index + 1 : index + 1 + LOOK_AHEAD]


__all__ = [
    "ATTEMPTED",
    "NEXT",
    "body_ahead",
    "fixtures_needed",
    "let_go_inputs",
    "repeats",
    "start_following",
    "wait_beside",
]
