"""[One Check] What one (backend, device) check holds, and the two things every stage does with it.

``engine/pipeline.py``'s ``_pipeline`` builds a ``Check`` once eager's prelude is in (``prelude.py``), and every
later stage takes it: ``exporting.build(check)``, ``standalone.step(check)``,
``side_effects.check_side_effects(check)``, ``Search(check)``, ``latency.record(check)``
(torch.testing's ``Pair``: one object per unit, so its methods take few arguments).
Stages write what the report shows into ``check.result`` and what a later stage needs into
the check's own fields, never notes in ``result.extra`` or in a finding's text; the verdict
is settled by ``outcome.py`` alone.

``run`` is the one way an artifact is called (the inputs as eager had them, the same RNG
seed, torch's noise kept quiet) and ``compare`` the one way its outputs are judged (the
check's ``rtol``/``atol`` and the user's ``compare=``). This module imports no stage.
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
    """The recorded call: the draw that gives it, its inputs on the check's device, eager's run of them."""

    draw: Draw
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: EagerCall  # its outputs, its inputs after the call, the lines it ran

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
    options: Options  # as the prelude left them (examples cut to the time limit)
    spec: Any  # the backend as registered ("module:Class" or an object): the standalone loader imports it
    backend: Backend
    eager: Eager
    plan: InputPlan  # as the prelude left it (an assumed batch dim held, sizes within the budget)
    scratch: Path
    result: Result
    recorded: Recorded
    changed_state: list[str]  # buffers the recorded call updated
    mutates_input: bool = False  # the recorded call writes into its inputs
    steps: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None  # the test's calls, replayed where state changes
    artifacts: Artifacts | None = None  # once exported (exporting.build)
    export_sizes: dict[str, int] = field(default_factory=dict)  # dims the export grew from 0/1, at their export size
    artifact_dir: str | None = None  # where --torchexport-keep-artifacts put the saved files
    compiled: list[tuple[str, str]] = field(default_factory=list)  # [Compiled Parts] (path, what) at the call
    post: Any = None  # backends.base.PostProcessing: the steps after the export (ONNX as shipped)
    scale_budget: float | None = None  # [ONNX As Shipped] error allowed, a fraction of each output's scale
    scale_floor: dict[str, float] | None = None  # each output's scale on the recorded call (compare.py)
    shared: Any = None  # [One Search] shared_search.SharedInputs: the inputs every backend tries, eager's run of each
    #: [Shared Capture] torch.export's capture of the call, made in the test's process (capture.py), by relaxed dims
    captures: dict[frozenset[str], Any] = field(default_factory=dict)
    clock: Any = None  # [Search Budget] search_budget.BudgetClock: its time against the budget, from its exports' end
    failure: Any = None  # search/failure.Failure: the search's shrunk failing input, which a bundle keeps (bundle.py)
    loading: Any = None  # standalone.Loading: [Crash Preflight]'s request, answered before the load in this process
    cpp: Any = None  # cpp_load.Started: the C++ runner started beside the search, read after the verdict
    header: str = field(init=False)  # the [backend=.., device=..] (module) tag every message names
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

    def run(self, artifact: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        """``artifact`` on fresh copies of the inputs, with the RNG seed eager ran with:
        (outputs, the inputs after the call). Raises what the artifact raises."""
        with quiet_torch():
            return run_artifact(lambda a, k: self.backend.run(artifact, a, k), args, kwargs)

    def compare(self, expected: Any, actual: Any, *, custom: bool = True) -> Comparison:
        """``actual`` against ``expected`` with the check's tolerances and, unless ``custom`` is
        False (a like-with-like comparison of two artifacts), the user's ``compare=``."""
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
