"""The ``Check``: what one (backend, device) check holds, shared by every stage after the prelude.

Stages write what the report shows into ``check.result`` and what later stages need into its
fields; only ``outcome.py`` settles the verdict. ``run`` and ``compare`` are the one way an
artifact is called and judged. See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._compat import quiet_torch
from ..backends.base import Backend, ExportContext
from ..cache import sources
from ..inputs.specs import InputPlan
from ..inputs.strategies import Draw
from ..options import Options
from ..reference.compare import Comparison, compare
from ..reference.eager import Eager, EagerCall, run_artifact
from ..results.report import Result, tag
from .session import Session


@dataclass
class Recorded:
    """The recorded call: its draw, its inputs on the check's device, and eager's run of them."""

    draw: Draw
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: EagerCall

    @property
    def outputs(self) -> Any:
        return self.call.outputs


@dataclass
class Artifacts:
    """What the export stage hands the search."""

    runnable: Any  # the loaded artifact, or the in-memory one when there is no round trip
    in_memory: Any  # the artifact before save/load, for round-trip blame; None without a round trip
    export_draw: Draw  # the input the export ran on
    ctx: ExportContext


@dataclass(eq=False)
class Check:
    """One backend on one device, from the export on."""

    session: Session
    options: Options  # as the prelude left them (examples may be cut)
    spec: Any  # the backend as registered, for the standalone loader
    backend: Backend
    eager: Eager
    plan: InputPlan  # as the prelude left it (sizes within the budget)
    scratch: Path
    result: Result
    recorded: Recorded
    changed_state: list[str]  # buffers the recorded call updated
    mutates_input: bool = False  # the recorded call writes into its inputs
    steps: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None  # the test's calls, replayed where state changes
    artifacts: Artifacts | None = None  # set by exporting.build
    export_sizes: dict[str, int] = field(default_factory=dict)  # dims the export grew from 0/1, at their export size
    artifact_dir: str | None = None  # where --torchexport-keep-artifacts put the saved files
    compiled: list[tuple[str, str]] = field(default_factory=list)  # submodules compiled in place: (path, how)
    post: Any = None  # backends.base.PostProcessing: steps after the export
    scale_budget: float | None = None  # [ONNX As Shipped] error allowed, a fraction of each output's scale
    scale_floor: dict[str, float] | None = None  # each output's scale on the recorded call (compare.py)
    shared: Any = None  # [One Search] shared_search.SharedInputs
    #: [Shared Capture] torch.export's captures of the call (capture.py), by relaxed dims
    captures: dict[frozenset[str], Any] = field(default_factory=dict)
    clock: Any = None  # [Search Budget] search_budget.BudgetClock
    failure: Any = None  # search/failure.Failure: the shrunk failing input a bundle keeps
    loading: Any = None  # standalone.Loading: the [Crash Preflight] request
    cpp: Any = None  # cpp_load.Started: the C++ runner, read after the verdict
    header: str = field(init=False)  # the [backend=.., device=..] tag every message names
    rtol: float | None = field(init=False)
    atol: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.header = tag(self.result)
        self.rtol = self.options.tolerance("rtol", self.name)
        self.atol = self.options.tolerance("atol", self.name)

    @property
    def name(self) -> str:
        return self.result.backend

    @property
    def device(self) -> str:
        return self.result.device

    @property
    def mutates_state(self) -> bool:
        return bool(self.changed_state)

    def run(self, artifact: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Run ``artifact`` on fresh inputs with eager's RNG seed: (outputs, inputs after)."""
        with quiet_torch():
            return run_artifact(lambda a, k: self.backend.run(artifact, a, k), args, kwargs)

    def compare(self, expected: Any, actual: Any, *, custom: bool = True) -> Comparison:
        """Compare with the check's tolerances and, unless ``custom`` is False, the user's ``compare=``."""
        return compare(
            expected,
            actual,
            relowered=self.backend.relowered,
            rtol=self.rtol,
            atol=self.atol,
            compare_fn=sources.watched(self.options.compare) if custom else None,
            scale_budget=self.scale_budget,
            scale_floor=self.scale_floor,
        )


__all__ = ["Artifacts", "Check", "Recorded"]
