"""[As Called] What a recorded call holds on to: its arguments cloned at the call, and, for the
module, its size (against the copy budget), its fingerprint (a change after the call) and each
submodule's mode and state (put back on a live module checked in place of a copy)."""

from __future__ import annotations

from typing import Any

from ..options import environment

#: Copies taken "as called" hold at most this many bytes of parameters and buffers in all
#: (per test): past it the live module is checked and a change after the call is reported.
#: ``TORCHEXPORT_COPY_LIMIT`` (earlier ``TORCHEXPORT_COPY_BUDGET``) sets it.
COPY_BUDGET = int(environment("TORCHEXPORT_COPY_LIMIT", str(2 << 30)))


def module_bytes(module: Any) -> int:
    import torch

    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def fingerprint(module: Any) -> tuple[Any, ...]:
    """Which objects the module is made of: a replaced submodule or tensor changes it."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return (id(module),)
    subs = tuple((name, id(m), type(m).__name__) for name, m in module.named_modules())
    tensors = tuple((name, t.data_ptr(), t.shape) for name, t in module.state_dict(keep_vars=True).items())
    return subs + tensors


def state_of(module: Any) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each submodule's mode and the state_dict, as ``Call.put_back`` restores them."""
    from ..reference import eager

    modes = {name: sub.training for name, sub in module.named_modules(remove_duplicate=False)}
    return modes, eager.snapshot(module, parameters=True) or {}


def nbytes(value: Any) -> int:
    import torch

    from .._compat import pytree

    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch

    from .._compat import pytree

    def clone(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            # Outside inference mode, so tensors recorded under inference_mode() come out
            # as normal tensors the checks can use freely.
            with torch.inference_mode(False):
                return value.detach().clone()
        return value

    a, k = pytree.tree_map(clone, (tuple(args), dict(kwargs)))
    return tuple(a), dict(k)
