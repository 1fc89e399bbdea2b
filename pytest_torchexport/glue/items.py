"""One pytest item per (backend, device) of a marked test, however the test was marked.

Test functions are parametrized (markers.py); unittest methods and tests marked after
collection are cloned here. A row's test id drops xdist's ``@<group>`` suffix ([Group Suffix]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from .._compat import fixtureinfo, unittest_excinfo, unittest_item_class
from ..options import Options, resolve_devices

#: The pseudo-fixture a marked test function is parametrized over.
TARGET = "_torchexport_target"
#: Set on an item whose test body already ran (its recording is reused).
REUSE = pytest.StashKey[bool]()
_CLONED = pytest.StashKey["Target"]()


@dataclass(frozen=True)
class Target:
    """What one torchexport item checks."""

    backend: str
    device: str
    id: str  # torchexport-<backend>[-<device>]
    #: A usage error in the marker's options: the item fails with it; ``target()`` skips it.
    error: str | None = None

    def __repr__(self) -> str:  # shown in --collect-only and failure headers
        return self.id


def targets(options: Options) -> list[Target]:
    devices = resolve_devices(options.devices)
    return [
        Target(backend, device, f"torchexport-{backend}" + (f"-{device}" if len(devices) > 1 else ""))
        for device in devices
        for backend in options.backends
    ]


def target(item: pytest.Item) -> Target | None:
    cloned = item.stash.get(_CLONED, None)
    if cloned is not None:
        return cloned if cloned.error is None else None
    params = getattr(getattr(item, "callspec", None), "params", {})
    value = params.get(TARGET)
    return value if isinstance(value, Target) and value.error is None else None


def usage_error(item: pytest.Item) -> str | None:
    """The usage error of an item whose marker options are wrong (``Target.error``)."""
    value = item.stash.get(_CLONED, None) or getattr(getattr(item, "callspec", None), "params", {}).get(TARGET)
    return value.error if isinstance(value, Target) else None


def attach(item: pytest.Item, t: Target) -> None:
    """Make ``item`` check ``t`` (an item no parametrization made)."""
    item.stash[_CLONED] = t


def test_key(item: pytest.Item) -> str | None:
    """The test an item belongs to: ``test_x[a-torchexport-onnx]`` belongs to ``test_x[a]``."""
    t = target(item)
    return None if t is None else without_target(item.nodeid, t)


def without_target(nodeid: str, t: Target) -> str:
    """``nodeid`` without ``t``'s id: ``test_x[torchexport-onnx]`` -> ``test_x``."""
    if nodeid.endswith(f"[{t.id}]"):
        return nodeid[: -len(t.id) - 2]
    if nodeid.endswith(f"-{t.id}]"):
        return nodeid[: -len(t.id) - 2] + "]"
    return nodeid


def without_group_suffix(item: pytest.Item, rows: list[dict[str, Any]]) -> None:
    """[Group Suffix] Strip ``--dist loadgroup``'s suffix from the rows' ids."""
    suffix = _group_suffix(item)
    if suffix:
        for row in rows:
            _without_group(row, suffix, item)


def _group_suffix(item: pytest.Item) -> str | None:
    """[Group Suffix] The ``@<group>`` suffix ``--dist loadgroup`` added to the node id, if any;
    rows drop it so baselines match serial runs."""
    if not getattr(item.config.option, "loadgroup", False):  # set on workers only
        return None
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    suffix = "@" + "_".join(sorted(names)) if names else None
    return suffix if suffix and item.nodeid.endswith(suffix) else None


def _without_group(row: dict[str, Any], suffix: str, item: pytest.Item) -> None:
    nodeid = row.get("nodeid")
    if not isinstance(nodeid, str) or not nodeid.endswith(suffix):
        return
    row["nodeid"] = nodeid = nodeid[: -len(suffix)]
    t = target(item)
    if t is None or not str(row.get("test", "")).endswith(suffix):
        return
    # The suffix kept test_key from removing our id: recompute it.
    row["test"] = without_target(nodeid, t)


def body_error(item: pytest.Item) -> BaseException | None:
    """The error a unittest body recorded instead of raising (pytest keeps it on the item)."""
    infos = unittest_excinfo(item)
    return infos[0].value if infos else None


def cannot_clone(item: pytest.Item) -> str | None:
    if not isinstance(item, pytest.Function):
        return f"it is a {type(item).__name__} item, not a Python test function"
    if type(item) not in (pytest.Function, unittest_item_class()):
        return f"its item type {type(item).__name__} (from a plugin) cannot be copied per backend"
    return None


def clone(item: pytest.Function, t: Target) -> pytest.Function:
    """A copy of ``item`` that checks ``t``: same function, fixtures, markers; id + ``[t.id]``."""
    name = f"{item.name[:-1]}-{t.id}]" if item.name.endswith("]") else f"{item.name}[{t.id}]"
    cls = _clone_class(type(item))
    new = cls.from_parent(
        item.parent, name=name, base=item.originalname, fixtureinfo=fixtureinfo(item), keywords=dict(item.keywords)
    )
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        new.callspec = callspec  # the test's own parameters, for its fixtures
    for mark in item.own_markers:  # markers a conftest added to the item
        if mark not in new.own_markers:
            new.own_markers.append(mark)
    new.stash[_CLONED] = t
    return new


@functools.lru_cache(maxsize=8)  # one per item class: pytest's Function, unittest's TestCaseFunction
def _clone_class(base: type[pytest.Function]) -> type[pytest.Function]:
    """A subclass whose item name carries the torchexport id but which looks up the test
    function by its own name."""

    class Clone(base):  # type: ignore[misc, valid-type]
        def __init__(self, *, base: str, **kwargs: object) -> None:
            self._torchexport_base = base
            super().__init__(**kwargs)
            self.originalname = base

        # Private pytest methods, listed in _compat.FUNCTION_OVERRIDES.
        def _getobj(self) -> Callable[..., object]:
            instance = self.instance
            owner = instance if instance is not None else self.parent.obj
            return getattr(owner, self._torchexport_base)

        def _getinstance(self) -> object:
            if base is not pytest.Function:  # a unittest.TestCase is built with its method's name
                return self.parent.obj(self._torchexport_base)
            return super()._getinstance()

        def runtest(self) -> None:
            if self.stash.get(REUSE, False):
                return  # [Body Once] the body ran in this test's first item
            super().runtest()

    Clone.__name__ = Clone.__qualname__ = base.__name__
    return Clone
