"""[Verdict Key] Everything the verdict cache reads of one check: the cache never sees the
engine's objects, so a key rests only on the fields of ``CheckFacts``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..options import Options
from .store import Cache


class CallDigests(NamedTuple):
    """A memo of one recorded call's digest, shared by the backends that check it. Keyed by
    (``call``, module id): the module is kept alive while the memo lives."""

    memo: dict[tuple[Hashable, int], str]
    call: Hashable


@dataclass(frozen=True)
class CheckFacts:
    """One check as the cache sees it: every field but ``NOT_KEYED`` is in the key."""

    backend: str
    spec: Any  # a "module:Class" string or an object
    device: str
    test: str | None  # keyed: the CI search is derandomized per test
    nodeid: str | None
    options: Options  # every field is keyed; ``compare=``'s file is hashed too
    module: Any  # an nn.Module, or a ``MethodCall``; keyed where ``as_called`` is None
    inputs: Any  # ``InputPlan.tree``
    #: a stateful module's calls, replayed in order (None: only the recorded call)
    sequence: list[tuple[tuple[Any, ...], dict[str, Any]]] | None
    #: [Memory Budget] whether drawn sizes are bounded (a narrower search)
    size_budget: bool = True
    #: [As Called] the module's digest taken at the test's call (``fingerprint.module_digest``),
    #: keyed in place of ``module``, which may be the live module as the body left it
    as_called: str | None = None
    method: str = "forward"  # the method checked (a ``MethodCall`` module names it too)
    store: Cache | None = None  # None: no cache
    digests: CallDigests | None = None


#: The fields of ``CheckFacts`` left out of the key.
NOT_KEYED = frozenset({"store", "digests"})


__all__ = ["NOT_KEYED", "CallDigests", "CheckFacts"]
