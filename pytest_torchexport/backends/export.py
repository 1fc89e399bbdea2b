"""``torch.export.export`` with dynamic shapes; round trip through a ``.pt2`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Backend, ExportContext

FILENAME = "model.pt2"


class ExportBackend(Backend):
    name = "export"

    def unavailable_reason(self) -> str | None:
        from .._compat import missing_attr

        missing = missing_attr(torch, "export.export") or missing_attr(torch, "export.save")
        return f"torch {torch.__version__} has no torch.export.{missing}" if missing else None

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        program = torch.export.export(
            module, args, kwargs or None, dynamic_shapes=ctx.plan.export_dynamic_shapes(module), strict=False
        )
        return Exported(program)

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        path = directory / FILENAME
        torch.export.save(artifact.program, str(path))
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        return Exported(torch.export.load(str(directory / FILENAME)))

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact.module(*args, **kwargs)


class Exported:
    """An ``ExportedProgram`` and its runnable module, built once (``.module()`` is not free)."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.module = program.module()
