"""[Side By Side] Start the checks of a test's next items while its current item's check runs.

Each check runs in a one-thread child, so one item at a time would leave cores idle. The
next items' checks are [Held]: forked at once, let go as places free. See docs/howto-isolation.md.
"""

from __future__ import annotations

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
#: How many items ahead of the current one a check may start.
LOOK_AHEAD = 7


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
                break
            if scheduler.started_ahead(following.nodeid) or following.stash.get(ATTEMPTED, False):
                continue
            if options_of(following) != options:
                break
            candidates.append((following, target))
        # Longest first, so the short ones fill the other cores while it runs.
        candidates.sort(key=lambda c: scheduler.expected_s(c[1].backend, c[1].device), reverse=True)
        for following, _ in candidates:
            scheduler.start_ahead(
                following.nodeid, adapters.plan(following, recording, options, held=True), group=key or ""
            )
    scheduler.release_ahead()


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


__all__ = ["ATTEMPTED", "NEXT", "fixtures_needed", "repeats", "start_following", "wait_beside"]
