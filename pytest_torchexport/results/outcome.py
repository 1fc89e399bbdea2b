"""Outcomes, settled in one place.

[One Writer] A check's verdict is written only by ``settle``: a stage that ends the check
raises ``Stop`` with its ``Outcome``. This module imports no stage, so there is no cycle.
[Data Until Written] The cause travels as fields, never parsed back from a message.
See docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from .report import CauseKind, Result, Status


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: its status, its message, and the likely cause and its kind where known."""

    status: Status
    message: str
    cause: str | None = None
    kind: CauseKind | None = None


class Stop(Exception):
    """Ends one backend's check early with its ``Outcome``: no later stage runs.

    ``written`` builds the message from a check's header where several backends share the
    outcome ([Eager Once]), so each message names its own check."""

    def __init__(
        self,
        status: Status,
        message: str,
        cause: str | None = None,
        kind: CauseKind | None = None,
        *,
        written: Callable[[str], str] | None = None,
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
    """Write ``outcome`` into ``result``: the one place a verdict is written."""
    result.status = outcome.status
    result.message = outcome.message
    result.likely_cause = outcome.cause
    result.cause_kind = outcome.kind


def row(
    outcome: Outcome, *, backend: str, device: str, nodeid: str | None, test: str | None, module: str = ""
) -> Result:
    """A result settled before any check ran."""
    result = Result(backend=backend, device=device, status=outcome.status, module=module, nodeid=nodeid, test=test)
    settle(result, outcome)
    return result


def add_note(result: Result, note: str) -> None:
    """Append ``note`` to the verdict's message; the status and cause stay."""
    settle(result, Outcome(result.status, result.message + note, result.likely_cause, result.cause_kind))


def xfail(result: Result, reason: str | None) -> None:
    """Apply ``xfail=``'s ``reason`` (None: not marked); a pass is a strict xpass."""
    if reason is None or result.status in ("skipped", "nondeterministic"):
        return
    if result.failed:
        result.extra["xfail_of"] = result.status
        settle(
            result,
            Outcome(
                "xfail",
                f"expected failure ({reason}): {result.message}",
                result.likely_cause,
                result.cause_kind,
            ),
        )
    else:
        settle(
            result,
            Outcome(
                "xpass",
                f"{result.backend} passed but is marked xfail ({reason!r}); "
                f"the defect may be fixed: remove {result.backend!r} from xfail=",
                f"the defect may be fixed: remove {result.backend!r} from xfail=",
                "xpass",
            ),
        )


#: The status of a check that died in each stage; any other stage is ``run_error``.
STAGE_STATUS: dict[str, Status] = {"export": "export_error", "save": "export_error", "load": "load_error"}


def exception_words(exc: BaseException) -> str:
    """An exception as ``TypeError: its first line``."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__


def model_raised(error: BaseException, stage: str, header: str) -> Outcome:
    """A usage error: the model raised on a call every check makes (docs/statuses.md)."""
    what = exception_words(error)
    return Outcome(
        "usage_error",
        f"The model raised in {stage} {header}, on a call every check makes (the recorded call, replayed in "
        f"eval mode under torch.no_grad(), or again under another seed to test determinism)\n{what}\n"
        "Make the recorded call run in eval mode under torch.no_grad() and under any seed",
        what,
        "usage",
    )


def unreadable(exc: BaseException, header: str) -> Outcome:
    """A usage error: the recorded call holds a value the plugin cannot read as an input."""
    what = exception_words(exc)
    return Outcome(
        "usage_error",
        f"The recorded call's inputs could not be read {header}\n{what}\n"
        "Each argument must be a tensor, a Python value, a container of them or a class registered with "
        "torch.utils._pytree; describe the inputs with inputs=[TensorSpec(...)] where they are not",
        f"inputs not readable ({what})",
        "usage",
    )


def plugin_raised(exc: BaseException, stage: str, header: str) -> Outcome:
    """The plugin's own code raised ``exc`` during ``stage``: the row fails with the stage's
    status, never a pass or a skip, and its message holds the traceback."""
    what = exception_words(exc)
    trace = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    shown = trace if len(trace) <= 40 else ["...", *trace[-40:]]
    return Outcome(
        STAGE_STATUS.get(stage, "run_error"),
        f"pytest-torchexport's own code raised {what} during {stage} {header}\n"
        "This is a bug in the plugin, not a verdict on the model: the check did not finish\n"
        + "\n".join(shown)
        + "\nPlease report it with this traceback; --torchexport-isolation=inline reproduces it in the test's process",
        f"a bug in pytest-torchexport ({what})",
        "plugin_error",
    )
