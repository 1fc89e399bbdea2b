"""AOTInductor: ``torch.export`` then ``aoti_compile_and_package`` into a ``.pt2`` package.

The package is the only artifact (there is no separate in-memory one), so the loaded
package is what is validated.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from .base import Backend, ExportContext

FILENAME = "model_aoti.pt2"


class AotiBackend(Backend):
    name = "aoti"
    relowered = True
    specializes_small_dims = True

    def unavailable_reason(self) -> str | None:
        try:
            import torch._inductor as inductor
        except ImportError as exc:  # pragma: no cover
            return f"torch._inductor does not import: {exc}"
        for attr in ("aoti_compile_and_package", "aoti_load_package"):
            if not hasattr(inductor, attr):
                return f"torch {torch.__version__} has no torch._inductor.{attr}"
        if shutil.which("c++") is None and shutil.which("g++") is None:
            return "AOTInductor needs a C++ compiler (c++/g++) on PATH"
        return None

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        return torch.export.export(
            module, args, kwargs or None, dynamic_shapes=ctx.dynamic_shapes(module), strict=False
        )

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        import torch._inductor

        path = directory / FILENAME
        torch._inductor.aoti_compile_and_package(artifact, package_path=str(path))
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        import torch._inductor

        return torch._inductor.aoti_load_package(str(directory / FILENAME))

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if isinstance(artifact, torch.export.ExportedProgram):
            # In memory there is only the exported program; the compiled package is the
            # artifact under test, so the round trip is judged on the loaded one.
            artifact = artifact.module()
        with torch.no_grad():
            return artifact(*args, **kwargs)
