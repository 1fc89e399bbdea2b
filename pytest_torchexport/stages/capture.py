"""[Shared Capture] torch.export's capture of a recorded call, made once for every backend that lowers it.

``export``, ``onnx`` (the dynamo exporter's first strategy), ``aoti`` and ``executorch`` all start
the same way: ``torch.export.export`` of the call, non-strict, with the plan's dynamic shapes, at
the export example (dims of size 0 or 1 grown to 2). That capture costs as much as a small
model's whole lowering (``benchmarks/bench_phases.py``), and before issue 54 each backend's child
paid it again. Here it is made once per recorded call and device, in the test's process after
eager's shared prelude and before the first of those backends' children is forked; each child
inherits the program by fork, its own copy-on-write, and starts from it
(``ExportContext.exported_program``; ``torch.onnx.export`` given the program skips its capture).

A capture that fails is kept as its error: every backend raises that one, never captures again
with the same arguments. Where the error is a constraint violation, the capture with the
violated dims left to torch (what ``exporting.build`` retries with) is made here too. What still
captures on its own (``capture: "own"`` on the row): a check whose export asks for other
arguments (the recorded size 0 or 1, ``assumptions.py``), the ONNX exporter's fallbacks after the
shared capture failed (strict, draft export: other captures), inline checks (they share no
prelude either), a CUDA check (made in the test's process, it would initialise CUDA there), and a
test with only one such backend (nothing to share: its capture stays in the child, under its time
limit).

The time limit: the capture runs here, outside any child, so each sharing check's child counts
its seconds as spent (``runner.Child(spent=...)``). Memory: the program holds a copy of the
module's weights in the test's process for as long as the test's checks are being started.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._compat import quiet_torch
from ..backends.base import Captured, capture_program, keywords_bound, load_backend
from ..cache import sources
from ..reference.eager import copy_module
from .exporting import export_inputs, violated_dims
from .prelude import Prelude


@dataclass
class SharedCapture:
    """The captures of one recorded call on one device, by the dims left to torch, and the files read."""

    captures: dict[frozenset[str], Captured] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.captures.values())


def shares(spec: Any) -> bool:
    """Whether the backend ``spec`` (as registered) starts from the shared capture."""
    try:
        backend = load_backend(spec)
    except Exception:  # noqa: BLE001 - the check itself reports an unloadable backend
        return False
    return bool(getattr(backend, "shares_capture", False)) and bool(getattr(backend, "dynamic", True))


def worth_sharing(registered: Mapping[str, Any], names: Iterable[str]) -> bool:
    """Two or more of the call's backends start from the capture: one alone captures in its child."""
    return sum(1 for name in names if name in registered and shares(registered[name])) >= 2


def share(store: dict[Hashable, SharedCapture], key: Hashable, prelude: Prelude, device: str) -> SharedCapture:
    """The shared capture of ``key``'s call (made now, the first time), in the test's process."""
    if key not in store:
        store[key] = _capture(prelude, device)
    return store[key]


class _Files:
    sources: list[str] | None = None


def _capture(prelude: Prelude, device: str) -> SharedCapture:
    plan = prelude.plan
    args, kwargs, _, _ = export_inputs(plan, load_backend("pytest_torchexport.backends.export:ExportBackend"), device)
    files = _Files()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a check's child: OpenMP's pool must not be started before a fork (runner.py)
    try:
        with sources.collecting(files):
            module = keywords_bound(copy_module(prelude.eager.module), kwargs)
            shared = SharedCapture()
            first = _timed(module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=frozenset()))
            shared.captures[frozenset()] = first
            relaxed = violated_dims(first.error, plan) if first.error is not None else frozenset()
            if relaxed:  # what exporting.build exports with next: made here too
                shared.captures[relaxed] = _timed(module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=relaxed))
    finally:
        torch.set_num_threads(threads)
    shared.sources = list(files.sources or ())
    return shared


def _timed(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic: Any) -> Captured:
    t0 = time.perf_counter()
    # As exporting.export_once exports: under no_grad, torch's noise kept quiet, the files it reads collected.
    with quiet_torch(fds=True), torch.no_grad(), sources.reading():
        try:
            program = capture_program(module, args, kwargs, dynamic)
        except Exception as exc:  # noqa: BLE001 - a failed capture is every sharing backend's export_error
            return Captured(error=exc, seconds=time.perf_counter() - t0)
    return Captured(program=program, seconds=time.perf_counter() - t0)


__all__ = ["SharedCapture", "share", "shares", "worth_sharing"]
