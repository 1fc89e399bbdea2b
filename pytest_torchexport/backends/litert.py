"""LiteRT (formerly TensorFlow Lite): ``litert_torch.convert`` to a ``.tflite``, run by ``ai_edge_litert``'s interpreter.

litert-torch 0.10.0's JAX-lowered ops often refuse symbolic sizes; the module is then converted
at the example's sizes, with a ``backend_note``. The converter downcasts 64-bit inputs and
outputs, so outputs are cast back to the dtypes recorded in their names. See docs/backends.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .._compat import pytree
from ..reference.compare import flatten
from .base import Backend, ExportContext, cpu_fallback, not_installed, on_cpu

#: the ``device_fallback`` message
_RUNS_ON = "the LiteRT interpreter runs on CPU (XNNPACK, as on a phone)"

FILENAME = "model.tflite"
INSTALL = 'pip install "pytest-torchexport[litert]"'
_OUTPUT = re.compile(r"out_(\d+)_(\w+)$")
_INPUT = re.compile(r"args_(\d+)$")


class LiteRtBackend(Backend["_Tflite"]):
    loads_without_python = True
    name = "litert"
    relowered = True
    specializes_small_dims = True

    def unavailable_reason(self) -> str | None:
        return not_installed("litert-torch or ai-edge-litert", INSTALL, _imports)

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _Tflite:
        convert, _ = _imports()
        module, args, kwargs = on_cpu(module, args, kwargs, ctx.device)
        adapter = _FlatCall(module, args, kwargs)
        tensors = tuple(t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        dynamic = _dynamic_shapes(ctx, tensors)
        model = None
        if dynamic is not None:
            try:
                model = convert(adapter, tensors, dynamic_shapes=dynamic)
            except Exception as exc:  # noqa: BLE001 - the static conversion below shows if the model is at fault
                lines = [line for line in str(exc).strip().splitlines() if line.strip()]
                ctx.notes.append(
                    f"litert-torch could not convert with the declared dynamic dims ({type(exc).__name__}: "
                    f"{lines[0][:200] if lines else ''}): converted at the example's sizes instead, so the .tflite "
                    "has static shapes; the interpreter resizes inputs at run time where its ops allow it"
                )
        if model is None:
            model = convert(adapter, tensors)
        return _Tflite(model.model_content(), cpu_fallback(ctx.device, _RUNS_ON))

    def save(self, artifact: _Tflite, directory: Path) -> list[Path]:
        path = directory / FILENAME
        path.write_bytes(artifact.content)
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> _Tflite:
        return _Tflite((directory / FILENAME).read_bytes(), cpu_fallback(ctx.device, _RUNS_ON))

    def run(self, artifact: _Tflite, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        device = next((t.device for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
        outputs = artifact([t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)])
        if device is not None and device.type != "cpu":
            outputs = [t.to(device) for t in outputs]
        return outputs

    def input_shapes(self, artifact: _Tflite) -> list[tuple[Any, ...]] | None:
        return [tuple(int(n) if n >= 0 else None for n in detail["shape_signature"]) for detail in artifact.inputs]

    def device_fallback(self, artifact: _Tflite) -> str | None:
        return artifact.fallback


def _imports() -> tuple[Any, Any]:
    from ai_edge_litert.interpreter import Interpreter
    from litert_torch import convert

    return convert, Interpreter


def _dynamic_shapes(ctx: ExportContext, tensors: tuple[torch.Tensor, ...]) -> dict[str, Any] | None:
    """``torch.export`` dynamic shapes for the adapter's ``*tensors``."""
    plan = ctx.plan
    leaves = [leaf for _, leaf in sorted(plan.tensors.items())]
    if len(leaves) != len(tensors) or not any(isinstance(e, str) for leaf in leaves for e in leaf.shape):
        return None
    dims = {
        name: torch.export.Dim.AUTO if name in ctx.relaxed else torch.export.Dim(name, min=max(d.min, 0), max=d.max)
        for name, d in plan.dims.items()
    }
    # torch.export binds ``forward(self, *tensors)`` to one input, so the shapes are one tuple.
    return {
        "tensors": tuple(
            {ax: dims[e] for ax, e in enumerate(leaf.shape) if isinstance(e, str) and e in dims} or None
            for leaf in leaves
        )
    }


class _FlatCall(torch.nn.Module):
    """The module taking the call's tensors by position and returning its tensors named
    ``out_<index>_<dtype>``, so their dtypes can be restored."""

    def __init__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.module = module
        self.leaves, self.spec = pytree.tree_flatten((args, kwargs))
        self.slots = [i for i, v in enumerate(self.leaves) if isinstance(v, torch.Tensor)]

    def forward(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        values = list(self.leaves)
        for i, t in zip(self.slots, tensors):
            values[i] = t
        args, kwargs = pytree.tree_unflatten(values, self.spec)
        outputs: dict[str, Any] = {}
        for path, leaf in flatten(self.module(*args, **kwargs))[0]:
            if leaf is None:
                continue
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(
                    f"a LiteRT model returns tensors: output {path or '(the output)'} is a {type(leaf).__name__}"
                )
            outputs[f"out_{len(outputs):04d}_{str(leaf.dtype).removeprefix('torch.')}"] = leaf
        return outputs


class _Tflite:
    """A ``.tflite`` in the LiteRT interpreter, fed torch tensors."""

    def __init__(self, content: bytes, fallback: str | None) -> None:
        _, interpreter = _imports()
        self.content = content
        self.fallback = fallback
        self.interpreter = interpreter(model_content=content)
        self.runner = self.interpreter.get_signature_runner()
        details = self.runner.get_input_details()
        # Sort by the index in the name: args_10 would sort before args_2.
        self.names = sorted(details, key=lambda n: int(m.group(1)) if (m := _INPUT.match(n)) else 0)
        self.inputs = [details[n] for n in self.names]

    def __call__(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(tensors) != len(self.names):
            raise RuntimeError(f"the .tflite takes {len(self.names)} inputs but the call has {len(tensors)} tensors")
        feed = {
            name: t.detach().cpu().contiguous().numpy().astype(detail["dtype"], copy=False)
            for name, t, detail in zip(self.names, tensors, self.inputs)
        }
        results = self.runner(**feed)
        outputs = []
        for name in sorted(results):
            match = _OUTPUT.match(name)
            value = torch.from_numpy(results[name].copy())
            dtype = getattr(torch, match.group(2), None) if match else None
            outputs.append(value.to(dtype) if isinstance(dtype, torch.dtype) else value)
        return outputs
