"""[Handed To An Exporter] A module the test hands to ``torch.jit.trace``, ``trace_module``,
``torch.export.export`` or ``torch.onnx.export``, and its call, read from the exporter's bound
arguments: ``EXPORTERS`` names each public function the recorder patches and how to read it."""

from __future__ import annotations

from typing import Any


def signature(fn: Any) -> Any:
    import inspect

    return inspect.signature(fn)  # milliseconds for torch.onnx.export: once a process, not once a test


# Each exporter's bound arguments -> (module, args, kwargs, other methods named) or None.
def trace_inputs(bound: Any) -> Any:
    import torch

    func, kwarg_inputs = bound["func"], bound.get("example_kwarg_inputs")
    if not isinstance(func, torch.nn.Module):
        owner = getattr(func, "__self__", None)  # torch.jit.trace(model.forward, x)
        if not (isinstance(owner, torch.nn.Module) and getattr(func, "__name__", "") == "forward"):
            return None
        func = owner
    example = bound.get("example_inputs")
    if example is None:
        example = kwarg_inputs
    return _forward_call(func, example, isinstance(kwarg_inputs, dict), ())


def trace_module_inputs(bound: Any) -> Any:
    inputs = bound["inputs"]
    if not isinstance(inputs, dict) or "forward" not in inputs:
        return None  # only forward is checked; a module traced for other methods alone is not called
    others = tuple(str(name) for name in inputs if name != "forward")
    return _forward_call(bound["mod"], inputs["forward"], bool(bound.get("example_inputs_is_kwarg")), others)


def _forward_call(module: Any, example: Any, is_kwarg: bool, others: tuple[str, ...]) -> Any:
    """As ``torch.jit.trace_module`` reads a method's example: a dict of keyword arguments,
    or the positional arguments (a lone tensor or dict is one argument)."""
    import torch

    if not isinstance(module, torch.nn.Module) or example is None:
        return None
    if is_kwarg and isinstance(example, dict):
        return module, (), dict(example), others
    if isinstance(example, (torch.Tensor, dict)):
        return module, (example,), {}, others
    return module, tuple(example), {}, others


def export_inputs(bound: Any) -> Any:
    return bound["mod"], tuple(bound.get("args") or ()), dict(bound.get("kwargs") or {}), ()


def onnx_inputs(bound: Any) -> Any:
    import torch

    model, args, kwargs = bound["model"], bound.get("args", ()), bound.get("kwargs")
    if not isinstance(model, torch.nn.Module):
        return None
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    if kwargs is None and args and isinstance(args[-1], dict):  # torch.onnx reads a trailing dict as kwargs
        args, kwargs = args[:-1], args[-1]
    return model, args, dict(kwargs or {}), ()


def no_call(bound: Any) -> Any:
    return None


def handed_module(bound: Any) -> Any:
    """The module an exporter was handed (its first argument), whatever the exporter calls it;
    ``model.forward`` handed to ``torch.jit.trace`` is the model."""
    first = next(iter(bound.values()), None)
    owner = getattr(first, "__self__", None)
    return owner if getattr(first, "__name__", "") == "forward" and owner is not None else first


#: (module path, attribute, the name a call records it as ``via``, how to read its arguments)
EXPORTERS: tuple[tuple[str, str, str, Any], ...] = (
    ("torch.jit", "trace", "torch.jit.trace", trace_inputs),
    ("torch.jit", "trace_module", "torch.jit.trace_module", trace_module_inputs),
    ("torch.jit", "script", "torch.jit.script", no_call),
    ("torch.export", "export", "torch.export.export", export_inputs),
    ("torch.onnx", "export", "torch.onnx.export", onnx_inputs),
)
