"""What the search found: the shrunk failure the cause experiments and the message read, and
the search's statistics (examples, paths taken, the largest error, vacuous outputs)."""

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
    # What the cause experiments found (causes.test_causes): None where not tested.
    small_dims_blamed: bool | None = None  # growing the dims of size 0/1 to their export size makes it pass
    baked_scalars: list[tuple[str, Any, Any]] = field(default_factory=list)  # (name, recorded, failing)
    noise: Any = None  # the float64 oracle's noise.NoiseVerdict on this input, where it ran
    far_scale: float | None = None  # the input's scale factor, when it passes at the recorded scale
    diverges_at: Any = None  # localize.Located: the first module whose artifact output differs
    no_localization: str | None = None  # why diverges_at is missing, where localisation was tried
    runtime_optimizer: Any = None  # causes.RuntimeOptimizer: the input passes with onnxruntime's optimizer off
    shipped_step: Any = None  # causes.ShippedStep: the first post-processing step after which the input fails
    #: [State After Every Input] (the buffers the input updated, "buffers" or "second call"): the
    #: outputs matched, the state the artifact kept did not
    state: tuple[list[str], str] | None = None


#: [Per Input] Entries kept per check: the default search's inputs (25 drawn, about 8 explicit)
#: and the first steps of a shrink; a 200-row HTML report of full plots stays near 2 MB.
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
    reference_s: float = 0.0  # eager's forwards in the search (the floor's other half)
    compare_s: float = 0.0  # the comparisons of outputs, the float64 oracle's runs included
    vacuous: dict[str, list[Any]] = field(default_factory=dict)
    compared: Compared | None = None  # over the inputs compared; None until one is
    sizes: dict[str, list[int]] = field(default_factory=dict)  # dim -> [min, max] over the inputs tried
    #: [Per Input] One entry per input tried, in order, at most PER_INPUT of them: its greatest
    #: error, the tolerance at that element, the verdict, its sizes and, where the float64 oracle
    #: judged it anyway (a failing plain comparison), eager's and the artifact's greatest error
    #: against float64. Numbers the comparison already made: the report's plot, no extra runs.
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


def track_vacuous(stats: Stats, outputs: Any) -> None:
    for path, leaf in flatten(outputs)[0]:
        if not isinstance(leaf, torch.Tensor) or not leaf.is_floating_point() or leaf.numel() == 0:
            continue
        # One pass (aminmax), not four: outputs can be hundreds of MB. The greatest |x| is
        # max(|min|, |max|) exactly, NaN propagating as it did through abs().max().
        t = leaf.detach().float()
        low, high = torch.aminmax(t)
        near_zero = bool(torch.maximum(low.abs(), high.abs()) < 1e-6)
        constant = bool(high == low)
        value = float(t.flatten()[0])
        seen = stats.vacuous.setdefault(path, [True, True, value])
        seen[0] = seen[0] and near_zero
        seen[1] = seen[1] and constant and value == seen[2]
