"""TensorRT through ``torch_tensorrt``: an engine built for an NVIDIA GPU, saved as an ExportedProgram.

``torch_tensorrt.compile(module, ir="dynamo", inputs=[torch_tensorrt.Input(min_shape,
opt_shape, max_shape, dtype)])`` captures the module with ``torch.export`` and builds
TensorRT engines for what it supports (PyTorch runs the rest). A declared dynamic dim
becomes an optimisation profile: its range (at least 1: TensorRT has no empty dims) is
``min``/``max`` and the example's size is ``opt``; every other dim is the example's.
``torch_tensorrt.save(..., output_format="exported_program", arg_inputs=example)`` writes
the program with the engines serialized inside it, and ``torch_tensorrt.load`` reads it
back (the ``tensorrt::execute_engine`` op needs ``torch_tensorrt`` imported, so a failed
standalone load is a finding, as for a ``.pt2``).

CUDA only: without a GPU the backend is ``skipped`` with the reason (a failure under
``--torchexport-require=tensorrt``). On the ``cpu`` device of a machine with a GPU the
engine still runs on the GPU: inputs go there, outputs come back, and a ``device_fallback``
finding says so.

[No TF32] torch_tensorrt lets TensorRT use TF32 for float32 layers by default, a 1e-3
relative rounding that would pass for (or hide) an export defect: ``settings`` passes
``disable_tf32=True``, as eager runs with TF32 off during a check (engine/pipeline.py). A subclass
sets other ``CompilationSettings`` (``enabled_precisions``, ...) to check what it serves.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._compat import pytree
from .base import Backend, ExportContext, not_installed, positional_adapter

FILENAME = "model_trt.ep"
INSTALL = 'pip install "pytest-torchexport[tensorrt]"'
#: The device TensorRT engines run on (tests without a GPU point it at "cpu", with a fake torch_tensorrt).
GPU = "cuda"


class TensorRtBackend(Backend):
    name = "tensorrt"
    relowered = True
    specializes_small_dims = True  # torch_tensorrt captures through torch.export
    #: Keyword arguments of ``torch_tensorrt.compile`` (its ``CompilationSettings``): [No TF32].
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

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
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

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        import torch_tensorrt

        path = directory / FILENAME
        torch_tensorrt.save(
            artifact.module, str(path), output_format="exported_program", arg_inputs=list(artifact.example)
        )
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        import torch_tensorrt

        program = torch_tensorrt.load(str(directory / FILENAME))
        return _Engine(program.module(), None, _fallback(ctx.device))

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = next((t.device for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
        tensors = [t.to(GPU) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        with torch.no_grad():
            outputs = artifact.module(*tensors)
        if device is not None:
            outputs = _to(outputs, device)
        return outputs

    def device_fallback(self, artifact: Any) -> str | None:
        return artifact.fallback


def _named_positions(
    module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """The call's tensors as named positional parameters ``input_0, input_1, ...``.

    torch_tensorrt keys the ``dynamic_shapes`` it builds from the ``Input`` profiles by
    ``forward``'s parameter names (``_tracer.get_dynamic_shapes_args``): a ``*tensors``
    adapter would bind them all to one name. The adapter's signature names each one.
    """
    adapter, tensors = positional_adapter(module, args, kwargs)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(len(tensors))]
    type(adapter).forward.__signature__ = inspect.Signature(params)
    return adapter, tensors


def _to(tree: Any, device: Any) -> Any:
    return pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def _fallback(device: str) -> str | None:
    if device.startswith(GPU):
        return None
    return f"TensorRT engines run on {GPU}: the {device} inputs ran there and the outputs came back"


def _profiles(plan: Any, tensors: tuple[torch.Tensor, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(min_shape, max_shape) per tensor input: a declared dim's range, the example's size elsewhere."""
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
    """The compiled (or loaded) module and, in memory, the example ``torch_tensorrt.save`` retraces with."""

    def __init__(self, module: Any, example: tuple[torch.Tensor, ...] | None, fallback: str | None) -> None:
        self.module = module
        self.example = example
        self.fallback = fallback
