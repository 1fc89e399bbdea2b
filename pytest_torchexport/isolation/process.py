"""[This Process] What belongs to the operating-system process, not to a session or a check.

Session state is never a module global (``glue/state.py``): two pytest sessions in one
process (pytester) must not share it, so the session owns it and hands it down. A few facts
are about the process itself and outlive every session in it:

- what its interpreter has paid of the first uses a check's child would pay (``Warmup``):
  what is imported stays imported whichever session imported it;
- the pipes of the children it forked and has not yet reaped (``runner.Child``), which a new
  child must close and a wait must read, whoever started them (and the pipes held children
  wait on, which only this process may write);
- in a forked child, the write end of the pipe it reports its stages on (``runner.stage``,
  called from any stage without a handle: the child is the process);
- the standalone loader it spawned (``loader.start``), which its forked children reach too.

A forked child inherits them by fork, which is what each needs (``Process.forked``): the
record of what its parent paid, its own channel, no sibling's pipe, the parent's loader.

``THIS`` is the package's one module-level mutable object, documented as the exception to
"no module globals outside constants" (``tests/test_module_state.py`` holds the rule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .warmup import Warmup


@dataclass
class Process:
    """The facts of one OS process (module doc); a forked child's copy is its own."""

    warmup: Warmup = field(default_factory=Warmup)
    #: read end -> ``runner.Child`` started here and not yet waited for
    children: dict[int, Any] = field(default_factory=dict)
    #: [Held] the write ends of the pipes held children wait on (``runner.Child``)
    gates: set[int] = field(default_factory=set)
    #: in a forked check child: the write end of the pipe to its parent; None elsewhere
    channel: int | None = None
    #: the standalone loader (``loader.Loader``) this process, or the parent it was forked from, started
    loader: Any = None

    def forked(self, channel: int) -> None:
        """In a child just forked: its siblings' pipes are not its to hold open, and it reports
        on ``channel``. What the parent paid (``warmup``) and its loader stay: the child has them."""
        for fd in [*self.children, *self.gates]:
            os.close(fd)
        self.children.clear()
        self.gates.clear()
        self.channel = channel


#: [This Process] The one process-wide record (module doc); never rebound.
THIS = Process()


__all__ = ["THIS", "Process"]
