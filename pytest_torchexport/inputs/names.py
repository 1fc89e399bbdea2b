"""Which input is which: each leaf of the example call named after ``forward``'s parameters
(``x``, ``mask``, ``ids_1``, ``args_0`` for a position of ``*args``), as ONNX input names,
``dynamic=`` keys and messages name it."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch

from ..errors import InvalidArgument

#: One step of a pytree key path as ``keystr`` writes it: ``[0]``, ``['x']``, ``["x"]``, ``.field``.
_PATH_PART = re.compile(r"""\[(?:'([^']*)'|"([^"]*)"|(-?\d+))\]|\.(\w+)""")


def forward_params(module: torch.nn.Module) -> list[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def var_positional(module: torch.nn.Module) -> str | None:
    """The name of forward's ``*args`` parameter, if it has one."""
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    return next((p.name for p in sig.parameters.values() if p.kind is p.VAR_POSITIONAL), None)


def leaf_name(path: str, param_names: list[str], var_positional: str | None) -> str:
    # path looks like "[0][1]['x']" over (args, kwargs), or "[0][0].a" through a registered
    # dataclass's field; name it after forward's parameter.
    parts = [next(g for g in groups if g) for groups in _PATH_PART.findall(path)]
    if not parts:
        return "input"
    head = parts[0]
    rest = parts[1:]
    if head == "0" and rest:
        idx = int(rest[0])
        if idx < len(param_names):
            base = param_names[idx]
        else:  # a position of *args: named after it, as ONNX input names and in messages
            base = f"{var_positional}_{idx - len(param_names)}" if var_positional else f"arg{idx}"
        rest = rest[1:]
    elif head == "1" and rest:
        base, rest = rest[0], rest[1:]
    else:
        base = "input"
    return "_".join([base, *rest]) if rest else base


def dedupe(names: dict[int, str]) -> None:
    seen: dict[str, int] = {}
    for i, name in names.items():
        if name in seen:
            seen[name] += 1
            names[i] = f"{name}_{seen[name]}"
        else:
            seen[name] = 0


def resolve_input(key: Any, paths: list[str], names: dict[int, str], tensor_idx: list[int], params: list[str]) -> int:
    if isinstance(key, int):
        candidates = [i for i in tensor_idx if paths[i].startswith(f"[0][{key}]")]
    else:
        candidates = [i for i in tensor_idx if names[i] == key or paths[i] == f"[1]['{key}']"]
        if not candidates and key in params:
            pos = params.index(key)
            candidates = [i for i in tensor_idx if paths[i].startswith(f"[0][{pos}]")]
    if len(candidates) != 1:
        raise InvalidArgument(
            f"dynamic= names input {key!r}, which is not one tensor input; "
            f"tensor inputs: {', '.join(names[i] for i in tensor_idx)}"
        )
    return candidates[0]
