"""The optional stages of a check, and the one seam they plug into.

The core of a check (``engine/pipeline.py``'s ``_pipeline``) is: export, save and load, side
effects, the search on the shared inputs, the verdict. Every other part is an ``OptionalStage`` in
``OPTIONAL``: prepared in the test's process before the check's child is forked, begun before
the search (so a slow one, a fresh process or a C++ runtime, works beside it) and joined after
it, once the search's verdict is known. A stage writes what it found on the row, and may end the
check with a ``Stop``, which wins over the search's verdict: an artifact a deployment cannot
load fails however well it ran here. See docs/architecture.md, "The optional stages".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .cpp_load import CppLoad
from .latency import Latency
from .standalone import Standalone
from .static_sizes import StaticSizes

if TYPE_CHECKING:
    from ..options import Options
    from ..results.outcome import Outcome
    from .check import Check


class OptionalStage(Protocol):
    """One optional part of a check."""

    #: The stage's name, as the docs and the row's keys use it.
    name: str

    def prepare(self, backend: str, spec: object, options: Options) -> None:
        """In the test's process, before the child is forked: start what every check shares."""

    def begin(self, check: Check) -> None:
        """After the export, before the search: start the stage's work, beside the search where it can."""

    def join(self, check: Check, verdict: Outcome | None) -> None:
        """After the search (``verdict``: its outcome; None when the search raised): read what the
        stage found onto the row; raise ``Stop`` to end the check with the stage's own verdict."""


#: Every optional stage, in the order they begin and join: a load that fails outranks a pass,
#: and the findings after a pass (sizes, latency) come last, where the search budget allows.
OPTIONAL: tuple[OptionalStage, ...] = (Standalone(), CppLoad(), StaticSizes(), Latency())

__all__ = ["OPTIONAL", "OptionalStage"]
