"""Where a mismatch starts: the first module whose artifact output differs from eager's.

Runs once, on the search's final shrunk failing input; the search itself is not slowed.

Each submodule of the artifact is run on **the input eager gave that submodule**
(recorded by forward hooks), and its output is compared with eager's output of that
submodule, with the check's own tolerances (``compare.py``). So an error upstream does
not smear downstream: a module differs only if *it* computes differently. The walk goes
down one level at a time: among the children called (in execution order), the first
that differs is entered, until a module differs and none of its children do; that
module's own code (the glue between its children) is where the artifact diverges.

How the artifact's submodules are reached, per kind of artifact:

- TorchScript (``trace``, ``script``): every submodule of a ``ScriptModule`` that ran is
  callable on its own, with the ``.code`` of what was recorded (the excerpt);
- ``torch.export`` (``export``): ``torch.export.unflatten`` gives the module tree back
  under the same qualified names, each an ``InterpreterModule`` whose graph is the
  excerpt;
- anything else (ONNX, AOTInductor, ...): not available; ``unavailable()`` says why.

One level costs two eager forwards (one to learn which children run, one to record
their inputs and outputs) and one call per child compared, so memory holds only one
level's activations at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from ._compat import quiet_torch
from .compare import Comparison

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "class": self.cls,
            "max_abs_err": self.max_abs_err,
            "artifact_excerpt": self.excerpt,
            "walked": [{"module": m, "max_abs_err": e} for m, e in self.walked],
            "compared_modules": self.compared,
            "seconds": round(self.seconds, 4),
        }


def unavailable(artifact: Any) -> str | None:
    """Why this artifact's submodules cannot be run on their own, or None."""
    scripted = getattr(artifact, "scripted", artifact)
    program = getattr(artifact, "program", None)
    if not isinstance(scripted, torch.jit.ScriptModule) and not isinstance(program, torch.export.ExportedProgram):
        return "its submodules cannot be run on their own inputs (only TorchScript and torch.export artifacts can)"
    return None


def locate(
    artifact: Any, module: torch.nn.Module, args: Any, kwargs: Any, judge: Callable[[Any, Any], Comparison],
    top_error: float,
) -> Located | None:
    """The first diverging module of ``artifact`` against eager ``module`` at ``args``/``kwargs``.

    ``judge(expected, actual)`` is the check's own comparison. None when the artifact's
    submodules are not reachable. ``top_error`` is the whole output's error, reported when
    no submodule differs on its own input (module ``""``: the top level's own code).
    """
    t0 = time.perf_counter()
    with quiet_torch():
        modules = _submodules(artifact)
    if modules is None:
        return None
    art_names = set(modules)
    prefix = _prefix(module, art_names)
    eager_modules = dict(module.named_modules())
    parent, walked, compared, worst = "", [], 0, None
    while True:
        children = _called_children(module, eager_modules, parent, args, kwargs)
        found = None
        if children:
            calls = _record(module, eager_modules, children, args, kwargs)
            for name in children:  # execution order
                target = modules.get(prefix + name)
                if target is None or name not in calls:
                    continue
                sub_args, sub_kwargs, expected = calls[name]
                actual = _call(target, sub_args, sub_kwargs)
                if actual is _FAILED:
                    continue
                compared += 1
                cmp = judge(expected, actual)
                if not cmp.ok:
                    found = (name, cmp.max_abs)
                    break
        if found is None:
            break
        parent, worst = found
        walked.append(found)
    if not walked:
        # No submodule differs on its own input: the top level's own code diverges.
        parent, worst = "", top_error
    excerpt = _excerpt(modules.get(prefix + parent))
    return Located(
        module=parent,
        cls=type(eager_modules[parent]).__name__,
        max_abs_err=float(worst or 0.0),
        excerpt=excerpt,
        walked=walked,
        compared=compared,
        seconds=time.perf_counter() - t0,
    )


# -- the artifact's side ---------------------------------------------------------------------


def _submodules(artifact: Any) -> dict[str, Any] | None:
    """Qualified name -> a callable submodule of the artifact, or None when there are none."""
    scripted = getattr(artifact, "scripted", artifact)  # trace's wrapper for calls with keywords
    if isinstance(scripted, torch.jit.ScriptModule):
        return {name: sub for name, sub in scripted.named_modules() if _has_forward(sub)}
    program = getattr(artifact, "program", None)
    if isinstance(program, torch.export.ExportedProgram):
        tree = torch.export.unflatten(program)
        return dict(tree.named_modules())
    return None


def _has_forward(sub: Any) -> bool:
    try:
        sub.code  # noqa: B018 - raises where the trace never called the submodule
    except Exception:  # noqa: BLE001
        return False
    return True


def _prefix(module: torch.nn.Module, art_names: set[str]) -> str:
    """The artifact may wrap the module (keywords bound, tensors only): its names start ``module.``."""
    first = next((name for name, _ in module.named_modules() if name), None)
    if first is None or first in art_names:
        return ""
    return "module." if f"module.{first}" in art_names else ""


_FAILED = object()


def _call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run an artifact submodule on eager's input to it; ``_FAILED`` when it cannot take it."""
    a, k = _clone((args, kwargs))
    with torch.no_grad(), quiet_torch():
        try:
            return target(*a, **k)
        except Exception:  # noqa: BLE001 - a traced forward takes tensors only, positionally
            pass
        tensors = [v for v in pytree.tree_leaves((a, k)) if isinstance(v, torch.Tensor)]
        try:
            return target(*tensors)
        except Exception:  # noqa: BLE001 - a calling convention the artifact does not keep
            return _FAILED


def _excerpt(target: Any) -> str:
    if target is None:
        return ""
    try:
        text = target.code  # TorchScript: what was recorded
    except Exception:  # noqa: BLE001
        graph = getattr(target, "graph", None)
        text = str(graph) if graph is not None else ""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > EXCERPT_LINES:
        lines = [*lines[:EXCERPT_LINES], f"... ({len(lines) - EXCERPT_LINES} more lines)"]
    return "\n".join(lines)


# -- eager's side ---------------------------------------------------------------------------


def _clone(tree: Any) -> Any:
    return pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, tree)


def _forward(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
    from .eager import seed_rng

    a, k = _clone((args, kwargs))
    with torch.random.fork_rng(devices=[]), torch.no_grad(), quiet_torch():
        seed_rng(0, "cpu")
        module(*a, **k)


def _called_children(
    module: torch.nn.Module, eager_modules: dict[str, torch.nn.Module], parent: str, args: Any, kwargs: Any
) -> list[str]:
    """The modules under ``parent`` called with no other called module between, in call order."""
    under = [n for n in eager_modules if n != parent and (parent == "" or n.startswith(parent + "."))]
    order: list[str] = []
    stack: list[str] = []
    handles = []

    def pre(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if not stack and name not in order:
                order.append(name)
            stack.append(name)

        return hook

    def post(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if stack and stack[-1] == name:
                stack.pop()

        return hook

    try:
        for name in under:
            handles.append(eager_modules[name].register_forward_pre_hook(pre(name)))
            handles.append(eager_modules[name].register_forward_hook(post(name), always_call=True))
        _forward(module, args, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _record(
    module: torch.nn.Module, eager_modules: dict[str, torch.nn.Module], names: list[str], args: Any, kwargs: Any
) -> dict[str, tuple[tuple[Any, ...], dict[str, Any], Any]]:
    """Each named module's first call: (its args, its kwargs, its output), as eager ran it."""
    calls: dict[str, tuple[tuple[Any, ...], dict[str, Any], Any]] = {}
    inputs: dict[str, tuple[Any, Any]] = {}
    handles = []

    def pre(name: str) -> Callable[..., None]:
        def hook(_: Any, a: Any, k: Any) -> None:
            if name not in inputs:
                inputs[name] = _clone((a, k))  # before forward: an in-place op must not change it

        return hook

    def post(name: str) -> Callable[..., None]:
        def hook(_: Any, a: Any, k: Any, out: Any) -> None:
            if name not in calls and name in inputs:
                calls[name] = (*inputs[name], _clone(out))  # a residual `x += ...` later must not either

        return hook

    try:
        for name in names:
            handles.append(eager_modules[name].register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(eager_modules[name].register_forward_hook(post(name), with_kwargs=True))
        _forward(module, args, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return calls
