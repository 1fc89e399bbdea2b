"""Save/load shared by the two TorchScript backends (trace and script)."""

from __future__ import annotations

import linecache
import typing
from pathlib import Path
from typing import Any

import torch

from .._compat import torchscript_unavailable
from .base import Backend, ExportContext

FILENAME = "model.pt"  # shared by trace and script


class TorchScriptBackend(Backend[torch.jit.ScriptModule]):
    loads_without_python = True

    def unavailable_reason(self) -> str | None:
        # TorchScript is deprecated from torch 2.14; _compat probes whether it still works.
        return torchscript_unavailable(self.name)

    def save(self, artifact: torch.jit.ScriptModule, directory: Path) -> list[Path]:
        path = directory / FILENAME
        torch.jit.save(artifact, str(path))
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> torch.jit.ScriptModule:
        return torch.jit.load(str(directory / FILENAME), map_location=ctx.device)

    def run(self, artifact: torch.jit.ScriptModule, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with torch.no_grad():
            return artifact(*args, **kwargs)


def method_artifact(compiled: torch.jit.ScriptModule, method: str, module_name: str) -> torch.jit.ScriptModule:
    """[Another Method] A ScriptModule whose ``forward`` calls ``compiled.<method>``.

    The ``forward`` is generated source, registered in ``linecache`` because TorchScript
    compiles only source it can read.
    """
    try:
        arguments = list(getattr(compiled, method).schema.arguments)[1:]
    except Exception as exc:  # noqa: BLE001 - re-raised with what it means for the check
        raise RuntimeError(
            f"the compiled {module_name} has no method {method!r} (the method the test called): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    names = [f"a{i}_{a.name}" for i, a in enumerate(arguments)]
    params = ", ".join(f"{n}: {a.type.annotation_str}" for n, a in zip(names, arguments))
    source = f"def forward(self, {params}):\n    return self.module.{method}({', '.join(names)})\n"
    filename = f"<torchexport {module_name}.{method} {len(linecache.cache)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "torch": torch,
        "Tensor": torch.Tensor,
        **{k: getattr(typing, k) for k in typing.__all__},
    }
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own one-line forward
    cls = type(f"{module_name}_{method}", (torch.nn.Module,), {"forward": namespace["forward"]})
    wrapper = cls()
    wrapper.module = compiled
    return torch.jit.script(wrapper.eval())
