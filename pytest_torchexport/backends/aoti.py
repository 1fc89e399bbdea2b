"""AOTInductor: ``torch.export``, then ``aoti_compile_and_package`` into a ``.pt2`` package.

Compilation happens at export, so its errors and time count as the export's.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._compat import aoti_compile_and_package, aoti_load_package, aoti_unavailable
from .base import Backend, ExportContext, keywords_bound

if TYPE_CHECKING:
    from .._compat import AOTICompiledModel

FILENAME = "model_aoti.pt2"


class AotiBackend(Backend["_Package"]):
    loads_without_python = True
    name = "aoti"
    relowered = True
    shares_capture = True
    specializes_small_dims = True

    def unavailable_reason(self) -> str | None:
        missing = aoti_unavailable()
        if missing:
            return missing
        if shutil.which("c++") is None and shutil.which("g++") is None:
            return "AOTInductor needs a C++ compiler (c++/g++) on PATH"
        return None

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _Package:
        module = keywords_bound(module, kwargs)
        program = ctx.exported_program(module, args, kwargs)
        package = Path(ctx.scratch or tempfile.mkdtemp(prefix="torchexport-aoti-")) / FILENAME
        aoti_compile_and_package(program, package_path=str(package))
        if ctx.device.startswith("cuda"):
            # [Crash Preflight] Load lazily, after the saved copy has loaded in a fresh process:
            # AOTInductor's CUDA loader can crash its process (torch 2.11), which on CUDA is the test's.
            return _Package(package, None)
        return _Package(package, aoti_load_package(str(package)))

    def save(self, artifact: _Package, directory: Path) -> list[Path]:
        path = directory / FILENAME
        shutil.copyfile(artifact.path, path)
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> _Package:
        path = directory / FILENAME
        return _Package(path, aoti_load_package(str(path)))

    def run(self, artifact: _Package, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact.runner(*args, **kwargs)


class _Package:
    """The package's path and its runner, loaded on first use when ``runner`` is None."""

    def __init__(self, path: Path, runner: AOTICompiledModel | None) -> None:
        self.path = path
        self._runner = runner

    @property
    def runner(self) -> AOTICompiledModel:
        if self._runner is None:
            self._runner = aoti_load_package(str(self.path))
        return self._runner
