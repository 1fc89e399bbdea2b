"""``torch.compile`` (inductor). Nothing to save: the round trip does not apply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .base import Backend, ExportContext


class CompileBackend(Backend[Callable[..., Any]]):
    name = "compile"
    relowered = True
    saveable = False

    def unavailable_reason(self) -> str | None:
        return None if hasattr(torch, "compile") else f"torch {torch.__version__} has no torch.compile"

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> Callable[..., Any]:
        compiled = torch.compile(module, dynamic=bool(ctx.plan.dims), fullgraph=False)
        # torch.compile is lazy: compile now, so export time and export errors land here.
        with torch.no_grad():
            compiled(*args, **kwargs)
        return compiled

    def save(self, artifact: Callable[..., Any], directory: Path) -> list[Path]:
        return []

    def load(self, directory: Path, ctx: ExportContext) -> Callable[..., Any]:
        raise NotImplementedError("torch.compile artifacts are not saved")

    def run(self, artifact: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact(*args, **kwargs)
