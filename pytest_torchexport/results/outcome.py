"""Outcomes, settled in one place.

[One Writer] A check's status, verdict message and likely cause are written here only: a
stage that ends the check raises ``Stop`` with its ``Outcome`` (torch.testing's
``ErrorMeta``: the failure as data, raised once), the search returns its ``Outcome``, and
the pipeline, the runner (time limits, crashes), the xfail rule and the rows made before
any check ran (``row``) hand theirs to ``settle``. A record and one exception, imported by
every stage; this module imports none of them, so the engine has no import cycle.

[Data Until Written] The cause and its kind travel as fields (``Outcome.cause``,
``Outcome.kind``, then ``Result.likely_cause``/``cause_kind`` and the report's keys): no
stage reads a message to learn what another one knew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from .report import CauseKind, Result, Status


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: its status, the message a person reads, and the likely cause in a
    few words where one is known (the report's ``likely_cause`` and cause column), with its
    kind (``cause_kind``)."""

    status: Status
    message: str
    cause: str | None = None
    kind: CauseKind | None = None


class Stop(Exception):
    """Ends one backend's check early with its ``Outcome``: no later stage runs.

    ``written``: the message as a function of the check's header (``report.tag``), where
    the outcome is shared by the checks of several backends ([Eager Once], prelude.py):
    each check's message is written with its own header, never rewritten from another's."""

    def __init__(
        self, status: Status, message: str, cause: str | None = None, kind: CauseKind | None = None,
        *, written: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(status)
        self.outcome = Outcome(status, message, cause, kind)
        self.written = written

    def outcome_for(self, header: str) -> Outcome:
        """The outcome with the message written for the check whose header is ``header``."""
        if self.written is None:
            return self.outcome
        return dataclasses.replace(self.outcome, message=self.written(header))


def settle(result: Result, outcome: Outcome) -> None:
    """Write ``outcome`` into ``result``: the one place a status, verdict message or cause is written."""
    result.status = outcome.status
    result.message = outcome.message
    result.likely_cause = outcome.cause
    result.cause_kind = outcome.kind


def row(outcome: Outcome, *, backend: str, device: str, nodeid: str | None, test: str | None, module: str = "") -> Result:
    """A result settled before any check ran (nothing to check, a usage error, the test body's outcome)."""
    result = Result(backend=backend, device=device, status=outcome.status, module=module, nodeid=nodeid, test=test)
    settle(result, outcome)
    return result


def add_note(result: Result, note: str) -> None:
    """Append ``note`` to the verdict's message; the status and cause stay."""
    settle(result, Outcome(result.status, result.message + note, result.likely_cause, result.cause_kind))


def xfail(result: Result, reason: str | None) -> None:
    """Apply ``xfail=``'s ``reason`` for this backend (None: not marked): a failure is expected,
    a pass is an xpass (strict)."""
    if reason is None or result.status in ("skipped", "nondeterministic"):
        return
    if result.failed:
        result.extra["xfail_of"] = result.status
        settle(result, Outcome(
            "xfail", f"expected failure ({reason}): {result.message}", result.likely_cause, result.cause_kind,
        ))
    else:
        settle(result, Outcome(
            "xpass",
            f"{result.backend} passed but is marked xfail ({reason!r}); "
            f"the defect may be fixed: remove {result.backend!r} from xfail=",
            f"the defect may be fixed: remove {result.backend!r} from xfail=",
            "xpass",
        ))
