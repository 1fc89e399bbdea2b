"""Stateful modules: every artifact starts each example from the module's own initial state.

A forward that updates a buffer (a running sum, a step counter) makes each call depend on
the calls before it. Eager restarts from its initial state on every input, so the
artifact must too, or it would be judged on a longer history than eager. Exporters that
run forward (``torch.jit.trace``) leave the exported module with the state *after* that
run, which would then be saved: the state is put back right after the export, before
the artifact is saved and loaded.

[One Home] Every snapshot of a module's state and its restore is taken here: eager's copy
(``eager.Eager``), the module an export runs (``exporting.py``), an artifact's module between
inputs (``search.py``, ``side_effects.py``) and the float64 copy (``noise.py``).
"""

from __future__ import annotations

from typing import Any

import torch


def snapshot(module: Any, *, parameters: bool = False) -> dict[str, torch.Tensor] | None:
    """A copy of ``module``'s buffers (with ``parameters``: its whole ``state_dict``), by name;
    None for an artifact that is not a module (ONNX: its outputs tell)."""
    if not isinstance(module, torch.nn.Module):
        return None
    tensors = module.state_dict() if parameters else dict(module.named_buffers())
    return {k: v.detach().clone() for k, v in tensors.items()}


def restore(
    module: Any,
    saved: dict[str, torch.Tensor] | None,
    *,
    parameters: bool = False,
    kept: dict[str, torch.Tensor] | None = None,
) -> None:
    """Put back what ``snapshot`` took: each tensor of the same name and shape that differs.

    [State After Every Input] ``kept``: filled with a copy of each tensor put back, as it was (the
    state a call left behind), at no extra comparison."""
    if saved is None or not isinstance(module, torch.nn.Module):
        return
    tensors = module.state_dict() if parameters else dict(module.named_buffers())
    with torch.no_grad():
        for k, v in tensors.items():
            old = saved.get(k)
            if old is not None and v.shape == old.shape and not torch.equal(v, old):
                if kept is not None:
                    kept[k] = v.detach().clone()
                v.copy_(old)


def reset_state(target: torch.nn.Module | None, initial: dict[str, torch.Tensor]) -> list[str]:
    """Copy the module's initial buffers into ``target``'s buffers of the same name.

    ``target`` is the module an artifact runs (``Backend.artifact_module``); None when it
    has none. A wrapper prefixes names (``module.total``), so a name matches by its dotted
    suffix. Returns the names reset.
    """
    if target is None or not initial:
        return []
    reset = []
    with torch.no_grad():
        for name, buf in target.named_buffers():
            source = initial.get(name)
            if source is None:
                source = next((v for k, v in initial.items() if name.endswith("." + k)), None)
            if (
                source is not None
                and source.shape == buf.shape
                and source.dtype == buf.dtype
                and not torch.equal(source, buf)
            ):
                buf.copy_(source)
                reset.append(name)
    return reset
