"""Stateful modules: every artifact starts each example from the module's own initial state.

A forward that updates a buffer (a running sum, a step counter) makes each call depend on
the calls before it. Eager restarts from its initial state on every input, so the
artifact must too, or it would be judged on a longer history than eager. Exporters that
run forward (``torch.jit.trace``) leave the exported module with the state *after* that
run, which would then be saved: the state is put back right after the export, before
the artifact is saved and loaded.
"""

from __future__ import annotations

import torch


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
            if source is not None and source.shape == buf.shape and source.dtype == buf.dtype and not torch.equal(source, buf):
                buf.copy_(source)
                reset.append(name)
    return reset
