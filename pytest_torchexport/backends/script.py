"""``torch.jit.script``: compiles forward's Python source, control flow included."""

from __future__ import annotations

from typing import Any

import torch

from ._jit import TorchScriptBackend
from .base import ExportContext


class ScriptBackend(TorchScriptBackend):
    name = "script"

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        if isinstance(module, torch.jit.ScriptModule):
            return module
        return torch.jit.script(module)
