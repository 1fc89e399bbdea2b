"""ExecuTorch: ``torch.export``, lowered to XNNPACK, written to a ``.pte``, run by its C++ runtime.

ExecuTorch plans memory ahead of time, so every dynamic dim needs an upper bound. The runtime
rejects a larger input with only an error code, so ``run`` checks inputs against the sizes the
``.pte`` records first. The runtime is CPU-only. See docs/backends.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._compat import deserialize_pte, pytree, quiet_torch, reorder_kwargs
from .base import Backend, ExportContext, cpu_fallback, keywords_bound, not_installed, on_cpu, to_cpu
from .export import program_input_shapes

if TYPE_CHECKING:
    from executorch.runtime import Method, Program

FILENAME = "model.pte"
#: the ``device_fallback`` message
_RUNS_ON = "executorch's runtime runs on CPU (XNNPACK, as on a phone)"
INSTALL = 'pip install "pytest-torchexport[executorch]"'
LOWERED = "the size is outside what the program was lowered for"


class ExecutorchBackend(Backend["Pte"]):
    loads_without_python = True
    name = "executorch"
    relowered = True
    shares_capture = True
    specializes_small_dims = True

    def unavailable_reason(self) -> str | None:
        def imports() -> None:
            # torchao, imported by the lowering, prints from C++.
            with quiet_torch(fds=True):
                _imports()

        return not_installed("executorch", INSTALL, imports)

    def export(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Pte:
        to_edge_transform_and_lower, partitioner, _ = _imports()
        module, args, kwargs = on_cpu(module, args, kwargs, ctx.device)
        module = keywords_bound(module, kwargs)
        program = ctx.exported_program(module, args, kwargs)
        lowered = to_edge_transform_and_lower(program, partitioner=[partitioner()]).to_executorch()
        buffer = bytes(lowered.buffer)
        # Loaded on first run, so a program that cannot load is a load_error, as on a device.
        pte = Pte(buffer, None, *pte_meta(buffer))
        # The .pte does not record which sizes torch.export fixed.
        pte.export_shapes = program_input_shapes(program)
        pte.fallback = cpu_fallback(ctx.device, _RUNS_ON)
        return pte

    def input_shapes(self, artifact: Pte) -> list[tuple[Any, ...]] | None:
        return artifact.export_shapes

    def device_fallback(self, artifact: Pte) -> str | None:
        return artifact.fallback

    def save(self, artifact: Pte, directory: Path) -> list[Path]:
        assert artifact.buffer is not None, "save takes the artifact export made, which holds its bytes"
        path = directory / FILENAME
        path.write_bytes(artifact.buffer)
        return [path]

    def load(self, directory: Path, ctx: ExportContext) -> Pte:
        path = directory / FILENAME
        pte = Pte(None, _load(path), *pte_meta(path.read_bytes()))
        pte.fallback = cpu_fallback(ctx.device, _RUNS_ON)
        return pte

    def run(self, artifact: Pte, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = next((t.device for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
        inputs = artifact.flat_inputs(to_cpu(args), to_cpu(kwargs))
        outside = artifact.outside_limits(inputs)
        if outside:
            raise RuntimeError(f"ExecuTorch cannot run {outside}")
        method = artifact.method
        try:
            with quiet_torch(fds=True) as captured:
                outputs = method.execute(inputs)
        except RuntimeError as exc:
            raise RuntimeError(explain_runtime_error(exc, captured.stdout, inputs, limits=artifact.limits)) from exc
        outputs = artifact.unflatten(list(outputs))
        if device is not None and device.type != "cpu":
            outputs = pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, outputs)
        return outputs


def _imports() -> tuple[Any, Any, Any]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    return to_edge_transform_and_lower, XnnpackPartitioner, Runtime


def _load(source: bytes | Path) -> _Loaded:
    """The ``forward`` method of a program, loaded by the runtime."""
    try:
        with quiet_torch(fds=True) as captured:
            runtime = _imports()[2].get()
            program = runtime.load_program(source if isinstance(source, bytes) else str(source))
            method = program.load_method("forward")
    except RuntimeError as exc:
        # The reason (a missing kernel) is in the log, not the exception.
        raise RuntimeError(explain_runtime_error(exc, captured.stdout, [], stage="load")) from exc
    # The method borrows the program's memory: keep the program alive beside it.
    return _Loaded(program, method)


class _Loaded:
    def __init__(self, program: Program, method: Method) -> None:
        self.program = program
        self.method = method


def pte_meta(data: bytes) -> tuple[Any, Any, list[Any] | None]:
    """A ``.pte``'s input and output pytree specs and each flat input's ``(sizes, static)`` limit."""
    try:
        from executorch.exir.schema import Tensor, TensorShapeDynamism

        plan = deserialize_pte(data).program.execution_plan[0]
        meta = plan.container_meta_type
        limits = []
        for index in plan.inputs:
            value = plan.values[index].val
            is_tensor = isinstance(value, Tensor)
            limits.append(
                (tuple(value.sizes), value.shape_dynamism == TensorShapeDynamism.STATIC) if is_tensor else None
            )
        return pytree.treespec_loads(meta.encoded_inp_str), pytree.treespec_loads(meta.encoded_out_str), limits
    except Exception:  # noqa: BLE001 - a private reader; fall back to flat inputs and outputs
        return None, None, None


class Pte:
    """A lowered program, the runtime's method and the call's structure."""

    def __init__(
        self,
        buffer: bytes | None,
        loaded: _Loaded | None,
        in_spec: pytree.TreeSpec | None,
        out_spec: pytree.TreeSpec | None,
        limits: list[Any] | None,
    ) -> None:
        self.buffer = buffer
        self.loaded = loaded
        self.in_spec = in_spec
        self.out_spec = out_spec
        self.limits = limits
        self.export_shapes: list[tuple[Any, ...]] | None = None
        self.fallback: str | None = None  # for device_fallback()

    @property
    def method(self) -> Method:
        if self.loaded is None:
            assert self.buffer is not None, "a Pte made without its bytes comes loaded"
            self.loaded = _load(self.buffer)
        return self.loaded.method

    def flat_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The call's leaves in the program's order, tensors contiguous."""
        if self.in_spec is not None and kwargs:
            kwargs = reorder_kwargs(kwargs, self.in_spec)
        leaves = pytree.tree_leaves((args, kwargs))
        return [leaf.contiguous() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]

    def outside_limits(self, inputs: list[Any]) -> str | None:
        """Why an input does not fit the sizes the file records, or None."""
        if self.limits is None or len(self.limits) != len(inputs):
            return None
        for i, (value, limit) in enumerate(zip(inputs, self.limits)):
            if limit is None or not isinstance(value, torch.Tensor):
                continue
            sizes, static = limit
            shape = tuple(value.shape)
            if static and shape != sizes:
                return f"input {i} of shape {shape}: {LOWERED} (the static shape {sizes}: the export fixed these sizes)"
            if not static and (len(shape) != len(sizes) or any(n > bound for n, bound in zip(shape, sizes))):
                return f"input {i} of shape {shape}: {LOWERED} (memory planned for at most {sizes})"
        return None

    def unflatten(self, outputs: list[Any]) -> Any:
        if self.out_spec is None:
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        return pytree.tree_unflatten(outputs, self.out_spec)


_BOUNDED = re.compile(r"maximum capacity of (\d+) elements to (\d+) elements")
_STATIC = re.compile(r"resize a static tensor\. Expected shape \(([^)]*)\), but received \(([^)]*)\)")
_INPUT = re.compile(r"at input (\d+)")
_MISSING = re.compile(r"Missing operator: \[\d+\] (\S+)")
_LOG_LINE = re.compile(r"^\[([\w.]+:\d+)\] (.*)$")


def log_reasons(log: str, limit: int = 4) -> list[str]:
    """Readable lines of the runtime's log, one per code location."""
    seen, reasons = set(), []
    for line in log.splitlines():
        match = _LOG_LINE.match(line.strip())
        if not match or match.group(1) in seen:
            continue
        seen.add(match.group(1))
        message = match.group(2).strip()
        if re.search(r"[A-Za-z]{3}", message) and not message.startswith("dtype:"):
            reasons.append(message)
    return reasons[:limit]


def explain_runtime_error(
    exc: BaseException, log: str, inputs: list[Any], stage: str = "run", limits: list[Any] | None = None
) -> str:
    """The runtime's exception explained from its log."""
    index = _INPUT.search(log)
    which = "an input"
    if index and int(index.group(1)) < len(inputs) and isinstance(inputs[int(index.group(1))], torch.Tensor):
        which = f"input {index.group(1)} of shape {tuple(inputs[int(index.group(1))].shape)}"
    static, bounded, missing = _STATIC.search(log), _BOUNDED.search(log), sorted(set(_MISSING.findall(log)))
    if missing:
        headline = f"ExecuTorch cannot {stage} the program: its runtime has no kernel for {', '.join(missing)} ({exc})"
    elif static:
        headline = (
            f"ExecuTorch cannot run shape ({static.group(2)}): {LOWERED} "
            f"(the static shape ({static.group(1)}): the export fixed these sizes)"
        )
    elif bounded:
        headline = (
            f"ExecuTorch rejected {which}: {LOWERED} "
            f"(memory planned for at most {bounded.group(1)} elements, the input has {bounded.group(2)})"
        )
    else:
        headline = f"ExecuTorch failed to {stage} the program: {exc}"
        # Within the limits but not the lowered size: worth mentioning.
        for i, (value, limit) in enumerate(zip(inputs, limits or [])):
            if limit is not None and isinstance(value, torch.Tensor) and tuple(value.shape) != limit[0]:
                headline += f"; the program was lowered with input {i} of at most {limit[0]}, this input is {tuple(value.shape)}"
                break
    details = "\n".join(f"  runtime: {line}" for line in log_reasons(log))
    return headline + (f"\n{details}" if details else "")
