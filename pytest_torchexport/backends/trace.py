"""``torch.jit.trace``: records one run; the TorchScript artifact replays it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .._compat import pytree
from ._jit import TorchScriptBackend, method_artifact
from .base import ExportContext, MethodCall

if TYPE_CHECKING:
    from ..inputs.specs import InputPlan


class TraceBackend(TorchScriptBackend):
    name = "trace"
    # A trace is as dynamic as the ops it recorded; inputs at other sizes find out.
    dynamic = False

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> torch.jit.ScriptModule:
        if isinstance(module, torch.jit.ScriptModule):
            ctx.notes.append(
                "the module is already a ScriptModule: torch.jit.trace returns it unchanged, so this checks the "
                "scripted module, not a trace"
            )
        with torch.no_grad():
            if isinstance(module, MethodCall) and not _tensors_only(args, kwargs):
                # [Another Method] trace the method itself, as users do
                traced = torch.jit.trace_module(module.module, {module.method: args}, strict=False, check_trace=False)
                return method_artifact(traced, module.method, module.original_name)
            if not _tensors_only(args, kwargs):
                return torch.jit.trace(module, args, strict=False, check_trace=False)
            # trace takes tensors only: scalars and None stay as recorded, keywords become positions.
            wrapper = _TensorsOnly(module, ctx.plan)
            return torch.jit.trace(wrapper, _tensors(args, kwargs), strict=False, check_trace=False)

    def run(self, artifact: torch.jit.ScriptModule, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            if _tensors_only(args, kwargs):
                return artifact(*_tensors(args, kwargs))
            return artifact(*args, **kwargs)


def _tensors_only(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the call goes through ``_TensorsOnly``: ``torch.jit.trace`` takes only positional
    tensors. Decided from the call alone, since the standalone loader has no plan."""
    return bool(kwargs) or any(not isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves(args))


#: For the C++ load (stages/cpp_load.py), which must feed the saved file as run() does.
takes_tensors_only = _tensors_only


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))


class _TensorsOnly(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, plan: InputPlan) -> None:
        super().__init__()
        self.module = module
        self.plan = plan

    def forward(self, *tensors: torch.Tensor) -> Any:
        values = list(self.plan.leaves)
        for index, tensor in zip(sorted(self.plan.tensors), tensors):
            values[index] = tensor
        args, kwargs = pytree.tree_unflatten(values, self.plan.spec)
        return self.module(*args, **kwargs)
