"""From a test's ``torchexport`` markers to its options and its items.

The closest marker wins, over the session's defaults. A bad option fails only that test,
through one ``[torchexport-marker]`` item, so the session goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..errors import InvalidArgument
from ..options import Options
from ..results.outcome import Outcome, row
from . import items
from .state import STATE, State

if TYPE_CHECKING:
    from ..results.report import Result

MARKER = "torchexport"
WARNED = pytest.StashKey[bool]()


def marker_options(node: pytest.Item) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    # Farthest first (module, class, function), so the closest marker wins.
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            raise pytest.UsageError(
                f"{node.nodeid}: @pytest.mark.torchexport takes keyword options only, got {mark.args!r}"
            )
        merged.update(mark.kwargs)
    return merged


def resolve(state: State, marker: dict[str, Any], nodeid: str) -> Options:
    try:
        given = {**state.defaults, **marker}
        if str(state.defaults.get("budget", "")).strip().lower() == "off":
            given["budget"] = "off"  # [Search Budget] --torchexport-budget=off overrides any marker
        return Options.build(valid_backends=tuple(state.backends), **given)
    except InvalidArgument as exc:
        raise pytest.UsageError(f"{nodeid}: {exc}") from None


def options_of(item: pytest.Item) -> Options:
    """The item's options: its markers over the session's defaults."""
    return resolve(item.config.stash[STATE], marker_options(item), item.nodeid)


#: The id of the one item of a test whose marker options are wrong.
MARKER_ERROR_ID = "torchexport-marker"


def targets(state: State, node: pytest.Item) -> list[items.Target] | None:
    """The (backend, device) items of a marked test; for a bad option, one item that fails with it."""
    try:
        options = resolve(state, marker_options(node), node.nodeid)
    except pytest.UsageError as exc:
        return [items.Target("marker", "cpu", MARKER_ERROR_ID, error=str(exc))]
    return items.targets(options)


def usage_row(item: pytest.Item, message: str) -> Result:
    """The ``usage_error`` row of a test whose marker options are wrong: nothing was checked."""
    test = item.nodeid.replace(f"[{MARKER_ERROR_ID}]", "").replace(f"-{MARKER_ERROR_ID}]", "]")
    why = message.split(": ", 1)[-1]
    verdict = Outcome(
        "usage_error", f"The torchexport marker cannot be honoured, so nothing was checked\n{message}", why, "usage"
    )
    return row(verdict, backend="marker", device="cpu", nodeid=item.nodeid, test=test)


def parametrize(metafunc: pytest.Metafunc) -> None:
    """A marked test function's items: one parameter per (backend, device)."""
    state = metafunc.config.stash[STATE]
    if metafunc.definition.get_closest_marker(MARKER) is None and not state.auto:
        return
    found = targets(state, metafunc.definition)
    if found is None:
        return
    # pytest does not copy markers a conftest added to the definition to its items: pass them on.
    decorated = getattr(metafunc.function, "pytestmark", [])
    added = [m for m in metafunc.definition.own_markers if m.name == MARKER and m not in decorated]
    metafunc.fixturenames.append(items.TARGET)
    metafunc.parametrize(items.TARGET, [pytest.param(t, id=t.id, marks=added) for t in found])


def expand(config: pytest.Config, collected: list[pytest.Item]) -> None:
    """Clone marked items that were not parametrized into one item per (backend, device);
    warn about those that cannot be cloned."""
    state = config.stash[STATE]
    out: list[pytest.Item] = []
    changed = False
    for item in collected:
        marked = item.get_closest_marker(MARKER) is not None
        if (
            items.target(item) is not None
            or items.usage_error(item) is not None
            or not (marked or (state.auto and isinstance(item, pytest.Function)))
        ):
            out.append(item)
            continue
        why = items.cannot_clone(item)
        if why:
            if marked and not item.stash.get(WARNED, False):
                item.stash[WARNED] = True
                item.warn(
                    pytest.PytestCollectionWarning(
                        f"{item.nodeid} is marked torchexport but will not be checked: {why}. "
                        "Mark a test function, a test class's method or a unittest.TestCase method instead, "
                        "or check the module explicitly with the torchexport fixture."
                    )
                )
            out.append(item)
            continue
        found = targets(state, item)
        if found is None:
            out.append(item)
            continue
        out.extend(items.clone(item, t) for t in found)  # type: ignore[arg-type]  # targets() finds none for a non-Function
        changed = True
    if changed:
        collected[:] = out


class LateMarkers:
    """A second pass for markers added by a ``trylast`` conftest hook, after everyone else."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        expand(config, items)
        config.stash[STATE].pending = items_per_test(items)


def items_per_test(collected: list[pytest.Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in collected:
        key = items.test_key(item)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = [
    "MARKER",
    "MARKER_ERROR_ID",
    "LateMarkers",
    "expand",
    "items_per_test",
    "marker_options",
    "options_of",
    "parametrize",
    "resolve",
    "usage_row",
]
