"""``torch.export.export`` with dynamic shapes; round trip through a ``.pt2`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._compat import export_load, missing_attr
from .base import Backend, ExportContext, keywords_bound

FILENAME = "model.pt2"


class ExportBackend(Backend["Exported"]):
    name = "export"
    shares_capture = True
    specializes_small_dims = True

    def unavailable_reason(self) -> str | None:
        missing = missing_attr(torch, "export.export") or missing_attr(torch, "export.save")
        return f"torch {torch.__version__} has no torch.export.{missing}" if missing else None

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> Exported:
        return Exported(ctx.exported_program(keywords_bound(module, kwargs), args, kwargs))

    def save(self, artifact: Exported, directory: Path) -> list[Path]:
        path = directory / FILENAME
        torch.export.save(artifact.program, str(path))
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Exported:
        return Exported(export_load(str(directory / FILENAME)))

    def run(self, artifact: Exported, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact.module(*args, **kwargs)

    def input_shapes(self, artifact: Exported) -> list[tuple[Any, ...]] | None:
        return program_input_shapes(artifact.program)

    def artifact_module(self, artifact: Exported) -> torch.nn.Module:
        return artifact.module

    def exported_program(self, artifact: Exported) -> torch.export.ExportedProgram:
        return artifact.program


def program_input_shapes(program: torch.export.ExportedProgram) -> list[tuple[Any, ...]]:
    """User-input shapes of an ExportedProgram: ints where the export fixed a size."""
    user = set(program.graph_signature.user_inputs)
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                shapes.append(tuple(int(d) if isinstance(d, int) else None for d in val.shape))
    return shapes


class Exported:
    """An ``ExportedProgram`` and its runnable module, built once (``.module()`` is not free)."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.module = program.module()
