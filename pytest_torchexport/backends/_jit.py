"""Save/load shared by the two TorchScript backends (trace and script)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Backend, ExportContext

FILENAME = "model.pt"  # shared by trace and script


class TorchScriptBackend(Backend):
    loads_without_python = True

    def unavailable_reason(self) -> str | None:
        # Removed names or calls that raise (TorchScript is deprecated from torch 2.14):
        # the version logic lives in _compat.
        from .._compat import torchscript_unavailable

        return torchscript_unavailable(self.name)

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        path = directory / FILENAME
        torch.jit.save(artifact, str(path))
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        return torch.jit.load(str(directory / FILENAME), map_location=ctx.device)

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact(*args, **kwargs)
