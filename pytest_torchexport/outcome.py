"""Outcomes, settled in one place.

[One Writer] A check's status and verdict message are written here only: a stage that
ends the check raises ``Stop`` with its ``Outcome`` (torch.testing's ``ErrorMeta``: the
failure as data, raised once), the search returns its ``Outcome``, and the pipeline, the
runner (time limits, crashes) and the xfail rule hand theirs to ``settle``. A record and
one exception, imported by every stage; this module imports none of them, so the engine
has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from .report import Result


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: its status, the message a person reads, and the likely cause in a
    few words where one was found (the report's cause column)."""

    status: str
    message: str
    cause: str | None = None


class Stop(Exception):
    """Ends one backend's check early with its ``Outcome``: no later stage runs."""

    def __init__(self, status: str, message: str, cause: str | None = None) -> None:
        super().__init__(status)
        self.outcome = Outcome(status, message, cause)


def settle(result: Result, outcome: Outcome) -> None:
    """Write ``outcome`` into ``result``: the one place a status or verdict message is written."""
    result.status = outcome.status
    result.message = outcome.message
    result.likely_cause = outcome.cause


def xfail(result: Result, reason: str | None) -> None:
    """Apply ``xfail=``'s ``reason`` for this backend (None: not marked): a failure is expected,
    a pass is an xpass (strict)."""
    if reason is None or result.status in ("skipped", "nondeterministic"):
        return
    if result.failed:
        result.extra["xfail_of"] = result.status
        settle(result, Outcome("xfail", f"expected failure ({reason}): {result.message}", result.likely_cause))
    else:
        settle(result, Outcome(
            "xpass",
            f"{result.backend} passed but is marked xfail ({reason!r}); "
            f"the defect may be fixed: remove {result.backend!r} from xfail=",
        ))
