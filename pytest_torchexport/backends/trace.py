"""``torch.jit.trace``: records one run; the TorchScript artifact replays it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from ._jit import TorchScriptBackend
from .base import ExportContext


class TraceBackend(TorchScriptBackend):
    name = "trace"
    # Shapes are not declared: a trace is as dynamic as the ops it recorded, which is what
    # the examples at other sizes find out.
    dynamic = False

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        if isinstance(module, torch.jit.ScriptModule):
            ctx.notes.append(
                "the module is already a ScriptModule: torch.jit.trace returns it unchanged, so this checks the "
                "scripted module, not a trace"
            )
        with torch.no_grad():
            if not kwargs and not ctx.plan.scalars:
                return torch.jit.trace(module, args, strict=False, check_trace=False)
            # trace takes tensors only: Python scalars stay as recorded (what a user who
            # traces such a model does by hand), keywords become positions.
            wrapper = _TensorsOnly(module, ctx.plan)
            return _Flat(torch.jit.trace(wrapper, _tensors(args, kwargs), strict=False, check_trace=False))

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        scripted = artifact.scripted if isinstance(artifact, _Flat) else artifact
        return super().save(scripted, directory)

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        loaded = super().load(directory, ctx)
        return _Flat(loaded) if ctx.plan.scalars or ctx.plan.kwargs else loaded

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            if isinstance(artifact, _Flat):
                return artifact.scripted(*_tensors(args, kwargs))
            return artifact(*args, **kwargs)


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))


class _Flat:
    """A traced artifact that takes the call's tensor leaves, in order."""

    def __init__(self, scripted: Any) -> None:
        self.scripted = scripted


class _TensorsOnly(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, plan: Any) -> None:
        super().__init__()
        self.module = module
        self.plan = plan

    def forward(self, *tensors: torch.Tensor) -> Any:
        values = list(self.plan.leaves)
        for index, tensor in zip(sorted(self.plan.tensors), tensors):
            values[index] = tensor
        args, kwargs = pytree.tree_unflatten(values, self.plan.spec)
        return self.module(*args, **kwargs)
