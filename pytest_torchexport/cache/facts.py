"""[Verdict Key] What the verdict cache reads of one check, and all it reads.

The engine builds a ``CheckFacts`` for each check (``engine/pipeline.py``'s ``PendingCheck``)
and hands it to ``reuse.Reuse``: the cache sits below the engine (``tests/test_layers.py``)
and never sees the engine's objects, so what a key rests on is the list of fields below,
not whatever attributes a check happens to carry.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..options import Options
from .store import Cache


class CallDigests(NamedTuple):
    """The digest of one recorded call (its module tree and inputs), computed once for all the
    backends that check it (``fingerprint.py``).

    ``memo`` is shared by the checks of one test (``prelude.EagerOnce.keys``), keyed by
    (``call``, the module's id); ``call`` names which of the test's recorded calls this is. The
    call's module (kept alive by the recording or the ``check()`` call) and its inputs do not
    change while the memo lives."""

    memo: dict[tuple[Hashable, int], str]
    call: Hashable


@dataclass(frozen=True)
class CheckFacts:
    """One check as the cache sees it.

    Every field is in the key (``fingerprint.check_key``) but the two that say where it is
    kept and how it is computed (``NOT_KEYED``); a test changes each keyed field and sees the
    key change."""

    backend: str  # the name the backend is registered under
    spec: Any  # the backend as registered: a "module:Class" string or an object
    device: str
    test: str | None  # the CI search is derandomized per test and backend
    nodeid: str | None
    options: Options  # every field, resolved; ``compare=``'s file is hashed too
    module: Any  # the nn.Module checked (a ``MethodCall`` for another method)
    inputs: Any  # the recorded call's inputs as planned (``InputPlan.tree``)
    #: the test's calls of a stateful module, in order, replayed by the check (None: the recorded call only)
    sequence: list[tuple[tuple[Any, ...], dict[str, Any]]] | None
    #: [Memory Budget] whether drawn sizes are bounded (``TORCHEXPORT_SIZE_LIMITS``): a pass found
    #: within the budget is a narrower search than one asked for without it
    size_budget: bool = True
    store: Cache | None = None  # where verdicts are kept and looked up; None: no cache
    digests: CallDigests | None = None  # None: the call's digest is computed for this check alone


#: The fields of ``CheckFacts`` that are not in the key: where the entry lives, and a memo of it.
NOT_KEYED = frozenset({"store", "digests"})


__all__ = ["NOT_KEYED", "CallDigests", "CheckFacts"]
