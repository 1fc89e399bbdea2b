"""OpenVINO: ``openvino.convert_model`` from the module, compiled for ``CPU``, saved as ``.xml``/``.bin``.

The CPU plugin's default precision depends on the machine, so ``config`` pins it to ``f32``,
and the IR is saved without float16 compression. ``convert_model`` traces with
``torch.jit.trace``, with the ``trace`` backend's limits. See docs/backends.md.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .._compat import pytree, torchscript_unavailable
from ..reference.compare import flatten
from .base import Backend, ExportContext, cpu_fallback, not_installed, on_cpu

if TYPE_CHECKING:
    import openvino as ov

    from ..inputs.specs import InputPlan

#: the ``device_fallback`` message
_RUNS_ON = "openvino is compiled for its CPU plugin here"

FILENAME = "model.xml"
INSTALL = 'pip install "pytest-torchexport[openvino]"'
#: Where the output's non-tensor leaves are kept in the IR's runtime info.
RT_INFO = ["torchexport", "outputs"]


class OpenVinoBackend(Backend["_Compiled"]):
    loads_without_python = True
    name = "openvino"
    relowered = True
    #: The CPU plugin's properties at compile time.
    config: ClassVar[dict[str, str]] = {"INFERENCE_PRECISION_HINT": "f32"}
    #: The OpenVINO device the model is compiled for.
    target: ClassVar[str] = "CPU"

    def unavailable_reason(self) -> str | None:
        missing = not_installed("openvino", INSTALL, lambda: importlib.import_module("openvino"))
        if missing:
            return missing
        reason = torchscript_unavailable("trace")
        if reason:
            return f"openvino.convert_model captures a module with torch.jit.trace: {reason}"
        return None

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _Compiled:
        import openvino as ov

        module, args, kwargs = on_cpu(module, args, kwargs, ctx.device)
        adapter = _FlatCall(module, args, kwargs)
        tensors = adapter.tensors(args, kwargs)
        shapes = [ov.PartialShape(shape) for shape in _declared_shapes(ctx.plan, tensors)]
        with torch.no_grad():
            model = ov.convert_model(adapter, example_input=tuple(tensors), input=shapes)
        model.set_rt_info(json.dumps(adapter.output_leaves), RT_INFO)
        return _Compiled(model, self._compile(model), adapter.output_leaves, cpu_fallback(ctx.device, _RUNS_ON))

    def save(self, artifact: _Compiled, directory: Path) -> list[Path]:
        import openvino as ov

        path = directory / FILENAME
        ov.save_model(artifact.model, str(path), compress_to_fp16=False)  # float16 would change outputs
        return [path, path.with_suffix(".bin")]

    def load(self, directory: Path, ctx: ExportContext) -> _Compiled:
        import openvino as ov

        model = ov.Core().read_model(str(directory / FILENAME))
        leaves = json.loads(model.get_rt_info(RT_INFO).astype(str)) if model.has_rt_info(RT_INFO) else None
        return _Compiled(model, self._compile(model), leaves, cpu_fallback(ctx.device, _RUNS_ON))

    def run(self, artifact: _Compiled, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        device = next((t.device for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = artifact(tensors)
        if device is not None and device.type != "cpu":
            outputs = [t.to(device) if isinstance(t, torch.Tensor) else t for t in outputs]
        return outputs

    def input_shapes(self, artifact: _Compiled) -> list[tuple[Any, ...]] | None:
        return [
            tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            for port in artifact.model.inputs
        ]

    def device_fallback(self, artifact: _Compiled) -> str | None:
        return artifact.fallback

    def _compile(self, model: ov.Model) -> ov.CompiledModel:
        import openvino as ov

        return ov.Core().compile_model(model, self.target, dict(self.config))


def _declared_shapes(plan: InputPlan, tensors: list[torch.Tensor]) -> list[list[int]]:
    """Each tensor input's shape for ``convert_model``'s ``input=``, -1 for dynamic dims."""
    leaves = [leaf for _, leaf in sorted(plan.tensors.items())]
    shapes = []
    for i, tensor in enumerate(tensors):
        entries = leaves[i].shape if i < len(leaves) and len(leaves[i].shape) == tensor.dim() else tensor.shape
        shapes.append([-1 if isinstance(entry, str) else int(size) for entry, size in zip(entries, tensor.shape)])
    return shapes


class _FlatCall(torch.nn.Module):
    """The module taking the call's tensors by position and returning the output's tensors.
    ``output_leaves`` records each non-None leaf as ``{"output": i}`` or ``{"value": constant}``."""

    def __init__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.module = module
        self.leaves, self.spec = pytree.tree_flatten((args, kwargs))
        self.slots = [i for i, v in enumerate(self.leaves) if isinstance(v, torch.Tensor)]
        self.output_leaves: list[dict[str, Any]] = []

    def tensors(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        return [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = list(self.leaves)
        for i, t in zip(self.slots, tensors):
            values[i] = t
        args, kwargs = pytree.tree_unflatten(values, self.spec)
        outputs: list[Any] = []
        described: list[dict[str, Any]] = []
        for path, leaf in flatten(self.module(*args, **kwargs))[0]:
            if isinstance(leaf, torch.Tensor):
                described.append({"output": len(outputs)})
                outputs.append(leaf)
            elif leaf is not None:
                if not isinstance(leaf, (bool, int, float, str)):
                    raise TypeError(
                        f"an OpenVINO model returns tensors: output {path or '(the output)'} is a {type(leaf).__name__}"
                    )
                described.append({"value": leaf})
        self.output_leaves = described
        return tuple(outputs)


class _Compiled:
    """An OpenVINO model and its compiled form, fed torch tensors."""

    def __init__(
        self, model: ov.Model, compiled: ov.CompiledModel, leaves: list[dict[str, Any]] | None, fallback: str | None
    ) -> None:
        self.model = model
        self.compiled = compiled
        self.leaves = leaves
        self.fallback = fallback
        self.request = compiled.create_infer_request()

    def __call__(self, tensors: list[torch.Tensor]) -> list[Any]:
        if len(tensors) != len(self.model.inputs):
            raise RuntimeError(
                f"the OpenVINO model takes {len(self.model.inputs)} inputs but the call has {len(tensors)} tensors"
            )
        self.request.infer([_to_ov(t) for t in tensors])
        outputs = [_from_ov(self.request.get_output_tensor(i)) for i in range(len(self.compiled.outputs))]
        if self.leaves is None:
            return outputs
        return [outputs[leaf["output"]] if "output" in leaf else leaf["value"] for leaf in self.leaves]


def _to_ov(t: torch.Tensor) -> ov.Tensor:
    import openvino as ov

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: pass the bits
        return ov.Tensor(t.view(torch.int16).numpy(), list(t.shape), ov.Type.bf16)
    return ov.Tensor(t.numpy())


def _from_ov(tensor: ov.Tensor) -> torch.Tensor:
    import numpy as np
    import openvino as ov

    # Reading bf16 through numpy would cast it to float16, so read the bits.
    if tensor.element_type == ov.Type.bf16:
        return torch.from_numpy(np.array(tensor.data, copy=True).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(tensor.data, copy=True))
