"""[Not The Test's Call] Which frames are the test's own: the caller of a module (past
``torch.compile``'s and fx's wrappers), torch's own code, torch tracing or compiling, and the
call a ``forward`` (or another method) was bound to, rebuilt from its frame as it starts."""

from __future__ import annotations

import functools
import os
from typing import Any


def caller(module: Any, frame: Any) -> Any:
    """The frame that called ``module``: past ``OptimizedModule.__call__`` for a module
    ``torch.compile`` returned, so ``torch.compile(model)(x)`` is the test's call."""
    if frame.f_code.co_name == "__call__" and type(module).__name__ == "OptimizedModule" and frame.f_back is not None:
        return frame.f_back
    # An fx.GraphModule (and its subclasses: torchvision's feature extractors) is called through
    # fx's _WrappedCall, whose frame is torch's: the test's call is the one that called it.
    # fx's _WrappedCall.__call__ under GraphModule's call_wrapped, both torch's frames.
    fx = os.path.join("fx", "graph_module.py")
    while frame.f_back is not None and frame.f_code.co_name in ("__call__", "call_wrapped") and frame.f_code.co_filename.endswith(fx):
        frame = frame.f_back
    return frame


_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08
_MISSING = object()


def bound_call(module: Any, code: Any, local: dict[str, Any], function: Any = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """[Direct Forward] The call ``forward`` was bound to, rebuilt from its parameters as it
    starts: positional parameters positionally, keyword-only ones by name; trailing
    parameters left at their defaults are left out, as the test left them."""
    names = code.co_varnames
    n, k = code.co_argcount, code.co_kwonlyargcount
    args = [local[name] for name in names[1:n]]
    kwargs = {name: local[name] for name in names[n:n + k]}
    star = n + k
    varargs = code.co_flags & _CO_VARARGS and local[names[star]]
    function = function or getattr(type(module), "forward", None)
    if getattr(function, "__code__", None) is code:
        if not varargs:
            for default in reversed(function.__defaults__ or ()):
                if not args or args[-1] is not default:
                    break
                args.pop()
        for name, default in (function.__kwdefaults__ or {}).items():
            if kwargs.get(name, _MISSING) is default:
                del kwargs[name]
    if varargs:
        args += list(varargs)
    if code.co_flags & _CO_VARKEYWORDS:
        kwargs.update(local[names[star + (1 if code.co_flags & _CO_VARARGS else 0)]])
    return tuple(args), kwargs


def tracing(torch: Any) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    for check in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, check, None)
        if fn is not None and fn():
            return True
    return False


def in_torch(filename: str) -> bool:
    """Torch's own code, but not ``torch.testing`` (suites built on torch's TestCase call from there)."""
    torch_dir = _torch_dir()
    return filename.startswith(torch_dir) and not filename.startswith(torch_dir + "testing" + os.sep)


@functools.lru_cache(maxsize=1)
def _torch_dir() -> str:
    import torch

    return os.path.dirname(torch.__file__) + os.sep
