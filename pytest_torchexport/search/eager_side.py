"""[Localisation] Eager's side of the walk: what each submodule of eager's module is given and
gives back at the failing input, one level at a time (one eager forward a level, with hooks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._compat import pytree, quiet_torch


def nested(tree: Any) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_nested for v in pytree.tree_leaves(tree))


def clone(tree: Any) -> Any:
    return pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, tree)


def _forward(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
    from ..reference.eager import seed_rng

    a, k = clone((args, kwargs))
    with torch.random.fork_rng(devices=[]), torch.no_grad(), quiet_torch():
        seed_rng(0, "cpu")
        module(*a, **k)


Calls = dict[str, tuple[tuple[Any, ...], dict[str, Any], Any]]


class EagerSide:
    """Eager's module at the failing input: what each submodule is given and gives back."""

    def __init__(self, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        self.module, self.args, self.kwargs = module, args, kwargs
        self.modules = dict(module.named_modules())

    def children_calls(self, parent: str) -> tuple[list[str], Calls]:
        """The modules under ``parent`` called with no other called module between, in call
        order, and the first call of each: (its args, its kwargs, its output), as eager ran it.

        One eager forward; hooks on every module under ``parent`` keep a call stack, and only
        calls made with an empty stack (direct children) have their tensors kept.
        """
        under = [n for n in self.modules if n != parent and (parent == "" or n.startswith(parent + "."))]
        order: list[str] = []
        inputs: dict[str, tuple[Any, Any]] = {}
        calls: Calls = {}
        stack: list[str] = []
        handles = []

        def pre(name: str) -> Callable[..., None]:
            def hook(_: Any, a: Any, k: Any) -> None:
                if not stack and name not in order:
                    order.append(name)
                    inputs[name] = clone((a, k))  # before forward: an in-place op must not change it
                stack.append(name)

            return hook

        def post(name: str) -> Callable[..., None]:
            def hook(_: Any, a: Any, k: Any, out: Any) -> None:
                if stack and stack[-1] == name:
                    stack.pop()
                if not stack and name in inputs and name not in calls:
                    calls[name] = (*inputs[name], clone(out))  # a residual `x += ...` later must not either

            return hook

        try:
            for name in under:
                handles.append(self.modules[name].register_forward_pre_hook(pre(name), with_kwargs=True))
                handles.append(self.modules[name].register_forward_hook(post(name), with_kwargs=True, always_call=True))
            _forward(self.module, self.args, self.kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return order, calls

    def level(self, parent: str, side: Any) -> tuple[list[str], Calls]:
        """Called children the artifact side can compare; one it cannot is replaced by its own children."""
        order, calls = self.children_calls(parent)
        out: list[str] = []
        for name in order:
            if side.has(name):
                out.append(name)
            else:  # a module with several output values (ONNX): look at what it calls, in order
                deeper, deeper_calls = self.level(name, side)
                out += deeper
                calls.update(deeper_calls)
        return out, calls
