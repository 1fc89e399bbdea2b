"""Where a mismatch starts: the first module whose artifact output differs from eager's.

Runs once, on the search's final shrunk failing input; the search itself is not slowed.

Each submodule of the artifact is run on **the input eager gave that submodule**
(recorded by forward hooks), and its output is compared with eager's output of that
submodule, with the check's own tolerances (``compare.py``). So an error upstream does
not smear downstream: a module differs only if *it* computes differently. The walk goes
down one level at a time: among the children called (in execution order), the first
that differs is entered, until a module differs and none of its children do; that
module's own code (the glue between its children) is where the artifact diverges.

How the artifact's submodules are reached, per kind of artifact (the backend says which it
has: ``Backend.artifact_module``, ``exported_program``, ``onnx_model``):

- TorchScript (``trace``, ``script``): every submodule of a ``ScriptModule`` that ran is
  callable on its own, with the ``.code`` of what was recorded (the excerpt);
- ``torch.export`` (``export``): ``torch.export.unflatten`` gives the module tree back
  under the same qualified names, each an ``InterpreterModule`` whose graph is the
  excerpt. An unflattened submodule may take other arguments than the call's (a size
  placeholder, keyword arguments dropped): then its value in one FX-interpreter run of
  the program is used, its nodes grouped by ``nn_module_stack`` (as for ONNX, below);
- ONNX (``onnx``, ``onnx-legacy``): a graph's pieces cannot run alone, so each node is
  mapped to its module (the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata,
  the legacy exporter's scoped node names ``/blocks.2/act/Gelu``), each module's output
  value (the one value its nodes hand to nodes outside it) becomes an extra output of a
  copy of the model, and one run at the failing input gives them all. These values are
  computed from the artifact's *own* upstream values, so the first module in execution
  order that differs is where the error starts (upstream ones agree), not an isolated
  verdict (``method`` says which). A module that hands on several values is looked
  through: its children are compared instead;
- anything else (AOTInductor, ...): not available; ``unavailable()`` says why.

A child fed nested tensors by eager (``nn.TransformerEncoder``'s fast path) or whose
artifact counterpart raises on eager's input is skipped: not comparable alone.

One level costs one eager forward (hooks record the inputs and outputs of the children
called directly) and one call per child compared, so eager's side holds one level's
activations at a time; the in-graph runs keep one value per module (its output),
never every intermediate value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import pytree, quiet_torch
from ..backends.base import Backend, OnnxModelSource
from ..reference.compare import Comparison
from .artifact_side import FAILED, artifact_side, scripted_module
from .eager_side import EagerSide, nested

#: Lines of the artifact's code shown in the failure message (the report keeps more).
MESSAGE_LINES = 8
#: Lines of the artifact's code kept in the report's ``artifact_excerpt``.
EXCERPT_LINES = 40


@dataclass
class Located:
    module: str  # qualified name; "" is the top-level module's own code
    cls: str
    max_abs_err: float
    excerpt: str
    walked: list[tuple[str, float]] = field(default_factory=list)  # (module, max abs err) on the way down
    compared: int = 0
    seconds: float = 0.0
    method: str = "isolated"
    #: [Introduced Or Carried] True: the module's output differs given eager's own input to it (it
    #: introduces the error); False: the artifact's input to it already differs (it carries the
    #: error from upstream); None where that cannot be told.
    introduced: bool | None = None
    input_err: float | None = None  # with introduced False: how far the artifact's input to it is from eager's
    enters: tuple[str, str] | None = None  # with introduced False: (whose own code adds the error, the module it feeds)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "module": self.module,
            "class": self.cls,
            "max_abs_err": self.max_abs_err,
            "artifact_excerpt": self.excerpt,
            "walked": [{"module": m, "max_abs_err": e} for m, e in self.walked],
            "compared_modules": self.compared,
            "seconds": round(self.seconds, 4),
            "method": self.method,
        }
        if self.introduced is not None:
            data["introduced"] = self.introduced
        if self.input_err is not None:
            data["input_max_abs_err"] = self.input_err
        if self.enters is not None:
            data["enters"] = {"in": self.enters[0], "before": self.enters[1]}
        return data


def unavailable(backend: Backend, artifact: Any) -> str | None:
    """Why this artifact's submodules cannot be run on their own, or None."""
    if scripted_module(backend, artifact) is not None or backend.exported_program(artifact) is not None:
        return None
    if isinstance(backend, OnnxModelSource) and backend.onnx_model(artifact) is not None:
        return None
    return "its submodules cannot be run on their own inputs (TorchScript, torch.export and ONNX artifacts can)"


def locate(
    backend: Backend,
    artifact: Any,
    module: torch.nn.Module,
    args: Any,
    kwargs: Any,
    *,
    judge: Callable[[Any, Any], Comparison],
    top_error: float,
) -> Located | None:
    """The first diverging module of ``backend``'s ``artifact`` against eager ``module`` at ``args``/``kwargs``.

    ``judge(expected, actual)`` is the check's own comparison. None when the artifact's
    submodules are not reachable. ``top_error`` is the whole output's error, reported when
    no submodule differs on its own input (module ``""``: the top level's own code).
    """
    t0 = time.perf_counter()
    with quiet_torch():
        side = artifact_side(backend, artifact, module, args, kwargs)
    if side is None:
        return None
    eager = EagerSide(module, args, kwargs)
    walked, givens, compared = _walk(eager, side, judge)
    # No submodule differs on its own input: the top level's own code diverges.
    parent, worst = walked[-1] if walked else ("", top_error)
    method = side.method_of(parent) if walked else side.method
    given = givens[-1] if givens else (args, kwargs)
    introduced, input_err = _introduced(side, parent, method, given, judge)
    enters = _enters(side, walked, givens, judge) if introduced is False else None
    return Located(
        module=parent,
        cls=type(eager.modules[parent]).__name__,
        max_abs_err=float(worst or 0.0),
        excerpt=_clip(side.excerpt(parent)),
        walked=walked,
        compared=compared,
        seconds=time.perf_counter() - t0,
        method=method,
        introduced=introduced,
        input_err=input_err,
        enters=enters,
    )


def _walk(
    eager: EagerSide,
    side: Any,
    judge: Callable[[Any, Any], Comparison],
) -> tuple[list[tuple[str, float]], list[tuple[Any, Any]], int]:
    """Down one level at a time, into the first child (in execution order) whose artifact output
    differs on eager's input to it: the modules walked with their errors, eager's input to each,
    and how many children were compared."""
    parent, compared = "", 0
    walked: list[Any] = []
    givens: list[tuple[Any, Any]] = []  # eager's input to each module walked
    while True:
        children, calls = eager.level(parent, side)
        found = None
        for name in children:  # execution order
            if name not in calls:
                continue
            sub_args, sub_kwargs, expected = calls[name]
            if nested((sub_args, sub_kwargs, expected)):
                # Eager's fast path (nn.TransformerEncoder with a padding mask) hands its
                # layers nested tensors, which no artifact takes: not comparable alone.
                continue
            actual = side.output(name, sub_args, sub_kwargs)
            if actual is FAILED:
                continue
            compared += 1
            cmp = judge(expected, actual)
            if not cmp.ok:
                found = (name, cmp.max_abs)
                givens.append((sub_args, sub_kwargs))
                break
        if found is None:
            return walked, givens, compared
        parent = found[0]
        walked.append(found)


def _enters(
    side: Any,
    walked: list[tuple[str, float]],
    givens: list[tuple[Any, Any]],
    judge: Callable[[Any, Any], Comparison],
) -> tuple[str, str] | None:
    """Where a carried error enters: (the module whose own code adds it, the module it feeds), from the
    outermost module walked whose input already differs; ``""`` is the top level's own code."""
    for depth, ((name, _), given) in enumerate(zip(walked, givens)):
        introduced, _ = _introduced(side, name, "in-graph", given, judge)
        if introduced is False:
            return (walked[depth - 1][0] if depth else "", name)
    return None


def _introduced(
    side: Any,
    name: str,
    method: str,
    given: tuple[Any, Any],
    judge: Callable[[Any, Any], Comparison],
) -> tuple[bool | None, float | None]:
    """[Introduced Or Carried] Whether module ``name`` introduces the error: (introduced, input error).

    Run in isolation (or the top level, given the call's own inputs) the module was fed
    eager's input and still differs: it introduces it. In the artifact's own run (``in-graph``)
    its input is the artifact's upstream value: the values entering its nodes from outside are
    taken in a second run and matched, by shape and dtype, with eager's input to it. One that
    differs from every eager input it could be means the error came in upstream (the parent's
    own code between its children, for one); all agreeing means the module introduces it."""
    if method != "in-graph" or not name:
        return True, None
    try:
        with quiet_torch():
            entering = side.entering(name)
    except Exception:  # noqa: BLE001 - the artifact's second run may raise anything; localisation explains, never a verdict
        return None, None
    expected = [v for v in pytree.tree_leaves(given) if isinstance(v, torch.Tensor)]
    matched, carried, worst = False, False, 0.0
    for value in entering:
        if not isinstance(value, torch.Tensor):
            continue
        candidates = [e for e in expected if e.shape == value.shape and e.dtype == value.dtype]
        if not candidates:
            continue  # a weight, a constant, a value the graph reshaped: not one of the module's inputs
        matched = True
        errors = [judge(e, value) for e in candidates]
        if not any(cmp.ok for cmp in errors):
            carried, worst = True, max(worst, min(cmp.max_abs for cmp in errors))
    if not matched:
        return None, None
    return (False, worst) if carried else (True, None)


def _clip(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > EXCERPT_LINES:
        lines = [*lines[:EXCERPT_LINES], f"... ({len(lines) - EXCERPT_LINES} more lines)"]
    return "\n".join(lines)
