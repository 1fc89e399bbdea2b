"""TensorRT through ``torch_tensorrt``: an engine built for an NVIDIA GPU, saved as an ExportedProgram.

A declared dynamic dim becomes an optimisation profile (at least 1: TensorRT has no empty dims).
CUDA only; on the ``cpu`` device the engine still runs on the GPU. TF32 is disabled because its
rounding could hide an export defect.
See docs/backends.md.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .._compat import pytree
from .base import Backend, ExportContext, not_installed, positional_adapter

if TYPE_CHECKING:
    from typing import TypeVar

    from ..inputs.specs import InputPlan

    #: A value returned in its own shape (``_to``).
    _Tree = TypeVar("_Tree")

FILENAME = "model_trt.ep"
INSTALL = 'pip install "pytest-torchexport[tensorrt]"'
#: The device TensorRT engines run on (tests without a GPU change it).
GPU = "cuda"


class TensorRtBackend(Backend["_Engine"]):
    name = "tensorrt"
    relowered = True
    specializes_small_dims = True  # torch_tensorrt captures through torch.export
    #: Keyword arguments of ``torch_tensorrt.compile``.
    settings: ClassVar[dict[str, Any]] = {"disable_tf32": True}

    def unavailable_reason(self) -> str | None:
        reasons = []
        if not torch.cuda.is_available():
            reasons.append(
                "TensorRT runs on NVIDIA GPUs only and CUDA is not available here (torch.cuda.is_available() is False)"
            )
        missing = not_installed("torch-tensorrt", INSTALL, lambda: importlib.import_module("torch_tensorrt"))
        if missing:
            reasons.append(missing)
        return "; ".join(reasons) or None

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _Engine:
        import torch_tensorrt

        module, args, kwargs = module.to(GPU), _to(args, GPU), _to(kwargs, GPU)
        adapter, tensors = _named_positions(module, args, kwargs)
        inputs = [
            torch_tensorrt.Input(
                min_shape=low, opt_shape=tuple(t.shape), max_shape=high, dtype=t.dtype, name=f"input_{i}"
            )
            for i, (t, (low, high)) in enumerate(zip(tensors, _profiles(ctx.plan, tensors)))
        ]
        compiled = torch_tensorrt.compile(adapter, ir="dynamo", inputs=inputs, **self.settings)
        return _Engine(compiled, tensors, _fallback(ctx.device))

    def save(self, artifact: _Engine, directory: Path) -> list[Path]:
        import torch_tensorrt

        assert artifact.example is not None, "save takes the artifact export made, which holds its example"
        path = directory / FILENAME
        torch_tensorrt.save(
            artifact.module, str(path), output_format="exported_program", arg_inputs=list(artifact.example)
        )
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> _Engine:
        import torch_tensorrt

        program = torch_tensorrt.load(str(directory / FILENAME))
        return _Engine(program.module(), None, _fallback(ctx.device))

    def run(self, artifact: _Engine, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = next((t.device for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
        tensors = [t.to(GPU) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        with torch.no_grad():
            outputs = artifact.module(*tensors)
        if device is not None:
            outputs = _to(outputs, device)
        return outputs

    def device_fallback(self, artifact: _Engine) -> str | None:
        return artifact.fallback


def _named_positions(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """The call's tensors as named positional parameters ``input_0, input_1, ...``.

    torch_tensorrt keys dynamic shapes by parameter name, so ``*tensors`` would not work.
    """
    adapter, tensors = positional_adapter(module, args, kwargs)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(len(tensors))]
    type(adapter).forward.__signature__ = inspect.Signature(params)
    return adapter, tensors


def _to(tree: _Tree, device: torch.device | str) -> _Tree:
    return pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def _fallback(device: str) -> str | None:
    if device.startswith(GPU):
        return None
    return f"TensorRT engines run on {GPU}: the {device} inputs ran there and the outputs came back"


def _profiles(plan: InputPlan, tensors: tuple[torch.Tensor, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(min_shape, max_shape) per tensor input."""
    leaves = [leaf for _, leaf in sorted(plan.tensors.items())]
    profiles = []
    for i, t in enumerate(tensors):
        entries = leaves[i].shape if i < len(leaves) and len(leaves[i].shape) == t.dim() else tuple(t.shape)
        low, high = [], []
        for entry, size in zip(entries, t.shape):
            dim = plan.dims.get(entry) if isinstance(entry, str) else None
            low.append(max(dim.min, 1) if dim else int(size))
            high.append(max(dim.max, int(size)) if dim else int(size))
        profiles.append((tuple(low), tuple(high)))
    return profiles


class _Engine:
    """The module, and the example ``torch_tensorrt.save`` retraces with."""

    def __init__(self, module: torch.nn.Module, example: tuple[torch.Tensor, ...] | None, fallback: str | None) -> None:
        self.module = module
        self.example = example
        self.fallback = fallback
