"""Outcomes, settled in one place; and what the stages hand each other (the shrunk failure, the statistics).

[One Writer] A check's status and verdict message are written here only: a stage that
ends the check raises ``Stop`` with its ``Outcome`` (torch.testing's ``ErrorMeta``: the
failure as data, raised once), the search returns its ``Outcome``, and the pipeline, the
runner (time limits, crashes) and the xfail rule hand theirs to ``settle``. Plain records
and one exception, imported by every stage and by ``messages.py``; this module imports
none of them, so the engine has no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .report import Result

if TYPE_CHECKING:  # torch-free at import: the runner settles timeouts in the plugin's process
    from .compare import Comparison
    from .strategies import Draw


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


@dataclass
class Failure:
    status: str
    draw: Draw
    args: Any
    kwargs: Any
    comparison: Comparison | None = None
    error: BaseException | None = None
    path: frozenset[tuple[str, int]] | None = None
    guard: str | None = None  # a torch.export guard the input violates, though the artifact ran
    # What the cause experiments found (causes.test_causes): None where not tested.
    small_dims_blamed: bool | None = None  # growing the dims of size 0/1 to their export size makes it pass
    baked_scalars: list[tuple[str, Any, Any]] = field(default_factory=list)  # (name, recorded, failing)
    noise: Any = None  # the float64 oracle's noise.NoiseVerdict on this input, where it ran
    far_scale: float | None = None  # the input's scale factor, when it passes at the recorded scale
    diverges_at: Any = None  # localize.Located: the first module whose artifact output differs
    no_localization: str | None = None  # why diverges_at is missing, where localisation was tried
    runtime_optimizer: Any = None  # causes.RuntimeOptimizer: the input passes with onnxruntime's optimizer off


@dataclass
class Stats:
    examples: int = 0
    failed: int = 0
    rejected: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    paths: dict[frozenset[tuple[str, int]], int] = field(default_factory=dict)
    failing_paths: dict[frozenset[tuple[str, int]], int] = field(default_factory=dict)
    run_s: float = 0.0
    vacuous: dict[str, list[Any]] = field(default_factory=dict)


def track_vacuous(stats: Stats, outputs: Any) -> None:
    import torch

    from .compare import flatten

    for path, leaf in flatten(outputs)[0]:
        if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point() or leaf.numel() == 0:
            continue
        t = leaf.detach().float()
        near_zero = bool(t.abs().max() < 1e-6)
        constant = bool(t.max() == t.min())
        value = float(t.flatten()[0])
        seen = stats.vacuous.setdefault(path, [True, True, value])
        seen[0] = seen[0] and near_zero
        seen[1] = seen[1] and constant and value == seen[2]
