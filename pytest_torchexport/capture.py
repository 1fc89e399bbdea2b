"""Record the outermost ``nn.Module`` calls a test makes.

Submodule calls made inside a recorded call are not separate records: the model is what
the test called, its layers are part of it. Works under ``no_grad``, ``inference_mode``
and plain mode; arguments are cloned at call time, so a test that mutates its inputs
afterwards does not change the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Call:
    module: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        # A scripted module's type is RecursiveScriptModule; its original_name is the class.
        return getattr(self.module, "original_name", None) or type(self.module).__name__


class Recorder:
    """``with Recorder() as rec: test_body()`` then ``rec.calls``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._depth = 0
        self._original: Any = None

    def __enter__(self) -> Recorder:
        import torch

        original = torch.nn.Module.__call__
        recorder = self

        def __call__(module: Any, *args: Any, **kwargs: Any) -> Any:
            # A torch.jit.trace/torch.export run inside the test body calls forward too:
            # that is the test building its model, not the call it checks.
            if recorder._depth == 0 and not _exporting(torch):
                recorder.calls.append(Call(module, *_snapshot(args, kwargs)))
            recorder._depth += 1
            try:
                return original(module, *args, **kwargs)
            finally:
                recorder._depth -= 1

        self._original = original
        # Patching the class attribute reaches every module, scripted ones included,
        # without hooks that users' own hooks could interleave with.
        torch.nn.Module.__call__ = __call__  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.nn.Module.__call__ = self._original  # type: ignore[method-assign]

    def pick(self, name: str | None) -> Call | None:
        if name is None:
            return self.calls[0] if self.calls else None
        for call in self.calls:
            if call.name == name:
                return call
        return None


def _exporting(torch: Any) -> bool:
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    for check in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, check, None)
        if fn is not None and fn():
            return True
    return False


def _snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch
    import torch.utils._pytree as pytree

    def clone(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            # Outside inference mode, so tensors recorded under inference_mode() come out
            # as normal tensors the checks can use freely.
            with torch.inference_mode(False):
                return value.detach().clone()
        return value

    a, k = pytree.tree_map(clone, (tuple(args), dict(kwargs)))
    return tuple(a), dict(k)
