"""[Not The Test's Call] Which frames are the test's own: the caller of a module (past
``torch.compile``'s and fx's wrappers), torch's own code, torch tracing or compiling, a
library's code and the module a library builds for itself ([Built By A Library]), and the
call a ``forward`` (or another method) was bound to, rebuilt from its frame as it starts."""

from __future__ import annotations

import functools
import os
from typing import Any

from ..results.explain import is_plugin_file, is_user_file


def caller(module: Any, frame: Any) -> Any:
    """The frame that called ``module``: past ``OptimizedModule.__call__`` for a module
    ``torch.compile`` returned, so ``torch.compile(model)(x)`` is the test's call."""
    if frame.f_code.co_name == "__call__" and type(module).__name__ == "OptimizedModule" and frame.f_back is not None:
        return frame.f_back
    # An fx.GraphModule (and its subclasses: torchvision's feature extractors) is called through
    # fx's _WrappedCall, whose frame is torch's: the test's call is the one that called it.
    # fx's _WrappedCall.__call__ under GraphModule's call_wrapped, both torch's frames.
    fx = os.path.join("fx", "graph_module.py")
    while (
        frame.f_back is not None
        and frame.f_code.co_name in ("__call__", "call_wrapped")
        and frame.f_code.co_filename.endswith(fx)
    ):
        frame = frame.f_back
    return frame


_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08
_MISSING = object()


def bound_call(
    module: Any, code: Any, local: dict[str, Any], function: Any = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """[Direct Forward] The call ``forward`` was bound to, rebuilt from its parameters as it
    starts: positional parameters positionally, keyword-only ones by name; trailing
    parameters left at their defaults are left out, as the test left them."""
    names = code.co_varnames
    n, k = code.co_argcount, code.co_kwonlyargcount
    args = [local[name] for name in names[1:n]]
    kwargs = {name: local[name] for name in names[n : n + k]}
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


def library(filename: str) -> bool:
    """Code the test did not write: an installed package's (transformers' ``save_pretrained``,
    its fp16 probe), the stdlib's, torch's or this plugin's. Where a file comes from decides
    (``results.explain.is_user_file``), never a list of names; a suite's own helpers (transformers'
    test mixins, a conftest) are the test's."""
    return _library(filename)


@functools.lru_cache(maxsize=4096)
def _library(filename: str) -> bool:
    return not is_user_file(filename)


def first_argument(frame: Any) -> Any:
    """What a frame's first parameter holds (``self`` of a method), or None."""
    code = frame.f_code
    return frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None


def builder(module: Any, init: Any) -> Any:
    """[Built By A Library] The frame that builds ``module``, from the frame of its
    ``nn.Module.__init__`` as it starts: past every frame whose first parameter is ``module``
    (its classes' ``__init__``, a decorator's wrapper that keeps ``self``)."""
    frame = init.f_back
    while frame is not None and first_argument(frame) is module:
        frame = frame.f_back
    return frame


def library_entry(frame: Any) -> Any:
    """[Built By A Library] The library call the test's code made that ``frame`` (a library's)
    runs in: the outermost of the library frames above it, up to the first frame of the test's
    own code; None where no frame of the test's is found (nothing to tell the library from), or
    where this plugin's own code built it (a ``--torchexport-model`` item's body: the plugin calls
    the model for the test, as the test would)."""
    entry = frame
    for _ in range(64):
        if is_plugin_file(entry.f_code.co_filename):
            return None
        above = entry.f_back
        if above is None:
            return None
        if not library(above.f_code.co_filename):
            return entry
        entry = above
    return None


def inside(caller: Any, frame_id: int, code: Any) -> bool:
    """[Built By A Library] Whether ``caller`` runs inside the library call (``frame_id``,
    ``code``: a frame is known by its id while it runs) that built the module, with only library
    frames between: the library calls a module it built for its own purposes, never held by the
    test. A test's callback on the way (user code) makes the call the test's."""
    frame = caller
    for _ in range(64):
        if frame is None or not library(frame.f_code.co_filename):
            return False
        if id(frame) == frame_id and frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def test_code(frame: Any) -> bool:
    """[Another Method] Whether ``frame`` is the test's own code calling a module's method: not a
    library's (``save_pretrained`` calling ``gather_sharded_state_dict_for_save`` on the model it
    saves), not a module's own method (a module's code calling its own or its parts' methods)."""
    import torch

    return not library(frame.f_code.co_filename) and not isinstance(first_argument(frame), torch.nn.Module)
