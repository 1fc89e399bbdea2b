"""What the search found: the shrunk failure (read by the cause experiments and the message)
and the search's statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..inputs.strategies import Draw
from ..reference.compare import Compared, Comparison, flatten


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
    # What the cause experiments in causes.py found; None where not tested.
    small_dims_blamed: bool | None = None  # growing dims of size 0/1 makes it pass
    baked_scalars: list[tuple[str, Any, Any]] = field(default_factory=list)  # (name, recorded, failing)
    noise: Any = None  # noise.NoiseVerdict
    far_scale: float | None = None  # the input's scale factor, when it passes at the recorded scale
    diverges_at: Any = None  # localize.Located
    no_localization: str | None = None  # why diverges_at is missing
    runtime_optimizer: Any = None  # causes.RuntimeOptimizer
    shipped_step: Any = None  # causes.ShippedStep
    #: [State After Every Input] The outputs matched but the artifact's state did not:
    #: (updated buffer names, "buffers" or "second call").
    state: tuple[list[str], str] | None = None


#: Entries kept in ``Stats.per_input``: enough for the default search and the first shrink
#: steps, while keeping the HTML report small.
PER_INPUT = 50


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
    reference_s: float = 0.0  # eager's forwards in the search
    compare_s: float = 0.0  # output comparisons, float64 oracle runs included
    vacuous: dict[str, list[Any]] = field(default_factory=dict)
    compared: Compared | None = None  # over the inputs compared; None until one is
    sizes: dict[str, list[int]] = field(default_factory=dict)  # dim -> [min, max] over the inputs tried
    #: One entry per input tried (at most PER_INPUT) for the report's plot: greatest error,
    #: tolerance there, verdict, sizes, and the float64 errors where the oracle ran. No extra runs.
    per_input: list[dict[str, Any]] = field(default_factory=list)

    def note_input(self, entry: dict[str, Any]) -> None:
        if len(self.per_input) < PER_INPUT:
            self.per_input.append(entry)

    def cover(self, sizes: tuple[tuple[str, int], ...]) -> None:
        """Widen each dim's [min, max] to one input's size (the report's ``sizes``, docs/report.md)."""
        for name, size in sizes:
            low, high = self.sizes.get(name, (size, size))
            self.sizes[name] = [min(low, size), max(high, size)]

    def count(self, comparison: Comparison) -> None:
        """Add one input's ``compared`` (how much of its outputs the comparison read)."""
        if self.compared is None:
            self.compared = Compared()
        self.compared.add(comparison.compared)


def track_vacuous(stats: Stats, outputs: object) -> None:
    for path, leaf in flatten(outputs)[0]:
        if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point() or leaf.numel() == 0:
            continue
        # One aminmax pass because outputs can be large; max(|min|, |max|) is the greatest |x|
        # and still propagates NaN.
        t = leaf.detach().float()
        low, high = torch.aminmax(t)
        near_zero = bool(torch.maximum(low.abs(), high.abs()) < 1e-6)
        constant = bool(high == low)
        value = float(t.flatten()[0])
        seen = stats.vacuous.setdefault(path, [True, True, value])
        seen[0] = seen[0] and near_zero
        seen[1] = seen[1] and constant and value == seen[2]
