"""``torch.jit.trace``: records one run; the TorchScript artifact replays it."""

from __future__ import annotations

from typing import Any

import torch

from ._jit import TorchScriptBackend
from .base import ExportContext


class TraceBackend(TorchScriptBackend):
    name = "trace"
    # Shapes are not declared: a trace is as dynamic as the ops it recorded, which is what
    # the examples at other sizes find out.
    dynamic = False

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        with torch.no_grad():
            if kwargs:
                # trace takes either positional or keyword examples: bind all by name.
                names = ctx.plan.param_names
                merged = {**dict(zip(names, args)), **kwargs}
                return torch.jit.trace(module, example_kwarg_inputs=merged, strict=False, check_trace=False)
            return torch.jit.trace(module, args, strict=False, check_trace=False)
