"""``torch.jit.script``: compiles forward's Python source, control flow included.

TorchScript types an unannotated parameter as ``Tensor``, so errors are rewritten to name the
parameter and the annotation that fixes it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from .._compat import script_has_method
from ._jit import TorchScriptBackend, method_artifact
from .base import ExportContext, MethodCall


class ScriptBackend(TorchScriptBackend):
    name = "script"

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> torch.jit.ScriptModule:
        if isinstance(module, torch.jit.ScriptModule):
            return module
        if isinstance(module, MethodCall):
            return _script_method(module)
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:  # noqa: BLE001 - re-raised, with a hint
            hint = _hint(_untyped(module, args, kwargs))
            if hint:
                raise _prefixed(exc, hint) from exc
            raise
        # A Tensor parameter the call passes something else would refuse every call.
        arguments = _schema(scripted)
        typed_tensor = {a.name for a in arguments if isinstance(a.type, torch.TensorType)}
        refused = [
            (name, value)
            for name, value in _bound(arguments, args, kwargs)
            if name in typed_tensor and not isinstance(value, torch.Tensor)
        ]
        if refused:
            raise TypeError(f"the scripted module cannot take the call: {_hint(refused)}")
        return scripted

    def save(self, artifact: torch.jit.ScriptModule, directory: Path) -> list[Path]:
        try:
            return super().save(artifact, directory)
        except Exception as exc:  # noqa: BLE001 - re-raised, explained
            # An unannotated `mask=None` is a Tensor parameter defaulting to an undefined tensor,
            # which torch.jit.save cannot write.
            none_default = [
                a.name
                for a in _schema(artifact)
                if isinstance(a.type, torch.TensorType) and a.has_default_value() and a.default_value is None
            ]
            if not none_default:
                raise
            names = ", ".join(repr(n) for n in none_default)
            fixes = ", ".join(f"`{n}: Optional[Tensor] = None`" for n in none_default)
            raise _prefixed(
                exc,
                f"torch.jit.script typed forward's parameter {names} as Tensor, since it defaults to None "
                f"without a type annotation, and torch.jit.save cannot write a Tensor parameter that "
                f"defaults to None; annotate: {fixes}",
            ) from exc


def _script_method(call: MethodCall) -> torch.jit.ScriptModule:
    """[Another Method] The method the test called, from ``torch.jit.script(model)``."""
    name, method = call.original_name, call.method
    try:
        scripted = torch.jit.script(call.module)
    except Exception as exc:  # noqa: BLE001 - re-raised, with a hint
        raise _prefixed(
            exc, f"torch.jit.script({name}) fails, so {name}.{method} (the method the test called) has no scripted form"
        ) from exc
    if not script_has_method(scripted, method):
        raise RuntimeError(
            f"torch.jit.script({name}) does not reach {name}.{method}, the method the test called: TorchScript "
            f"compiles forward, what forward calls, and methods marked @torch.jit.export, and {method} is none of "
            f"them, so the scripted module has no {method}. Mark it @torch.jit.export to script it, or drop script "
            "with backends=[...]"
        )
    return method_artifact(scripted, method, name)


def _schema(scripted: Any) -> list[Any]:
    """forward's schema arguments, without ``self``."""
    try:
        return list(scripted.forward.schema.arguments)[1:]
    except AttributeError:  # a ScriptModule without a compiled forward
        return []


def _bound(arguments: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    values = dict(zip((a.name for a in arguments), args))
    values.update(kwargs)
    return list(values.items())


def _untyped(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Unannotated parameters (Tensor to TorchScript) that the call passes a non-tensor."""
    try:
        signature = inspect.signature(module.forward)
        bound = signature.bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return []
    return [
        (name, value)
        for name, value in bound.items()
        if signature.parameters[name].annotation is inspect.Parameter.empty
        and signature.parameters[name].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and not isinstance(value, torch.Tensor)
    ]


def _hint(untyped: list[tuple[str, Any]]) -> str:
    if not untyped:
        return ""
    parts = ", ".join(f"{name!r} as Tensor, but the call passes {_kind(value)}" for name, value in untyped)
    fixes = ", ".join(f"`{name}: {annotation(value)}`" for name, value in untyped)
    return (
        f"torch.jit.script typed forward's parameter {parts} (a parameter without a type annotation is a "
        f"Tensor to TorchScript); annotate: {fixes}"
    )


def _kind(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def annotation(value: object) -> str:
    """The TorchScript annotation of a call's value: ``{"x": t}`` -> ``Dict[str, Tensor]``."""
    if value is None:
        return "Optional[Tensor]"
    if isinstance(value, torch.Tensor):
        return "Tensor"
    if isinstance(value, (bool, int, float, str)):
        return type(value).__name__
    if isinstance(value, dict):
        key, item = next(iter(value.items()), ("", None))
        return f"Dict[{annotation(key)}, {annotation(item) if value else 'Tensor'}]"
    if isinstance(value, list):
        return f"List[{annotation(value[0]) if value else 'Tensor'}]"
    if isinstance(value, tuple):
        return f"Tuple[{', '.join(annotation(v) for v in value)}]" if value else "Tuple[()]"
    return type(value).__name__


def _prefixed(exc: BaseException, hint: str) -> BaseException:
    """``exc`` with ``hint`` prepended, of the same type if possible."""
    text = f"{hint}\n{exc}"
    try:
        return type(exc)(text)
    except Exception:  # noqa: BLE001 - an exception class with another constructor
        return RuntimeError(text)
