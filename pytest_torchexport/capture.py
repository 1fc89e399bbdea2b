"""Record the outermost ``nn.Module`` calls a test makes (contract section 1).

What counts as the test's call, and why:

- Submodule calls made inside a recorded call are part of it: the model is what the test
  called, its layers are part of it.
- [Not The Test's Call] A call made while an ``nn.Module`` is being constructed (a
  ``weight_norm`` parametrization evaluated in ``__init__``, a grid precomputed by an
  ``fx.GraphModule``), by torch's own code (``torch.jit.trace``'s ``check_trace`` re-running
  a module, ``torch.export``, a parametrization read), or while torch is tracing or
  compiling, is not what the test is about. Checking such a module gave green items that
  proved nothing (a ``ParametrizationList`` exported in place of the model).
- A module the test hands to ``torch.jit.trace``, ``torch.export.export`` or
  ``torch.onnx.export`` counts as called with those inputs; a module handed to
  ``torch.jit.script`` and then called is recorded as the Python module it came from.
- [As Called] The first time the test calls a module, a private copy of it is taken before
  the call runs (within a memory budget), so a body that later scripts, traces or replaces
  submodules in place does not change what is checked. Past the budget, or where the
  module refuses a copy, the live module is kept with a fingerprint, and a change is a
  ``changed_after_call`` finding instead.

Works under ``no_grad``, ``inference_mode`` and plain mode; arguments are cloned at call
time, so a test that mutates its inputs afterwards does not change the record.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

#: Copies taken "as called" hold at most this many bytes of parameters and buffers in all
#: (per test): past it the live module is checked and a change after the call is reported.
COPY_BUDGET = int(os.environ.get("TORCHEXPORT_COPY_BUDGET", 2 << 30))
#: Calls of one module recorded per test (a loop over a data set calls it thousands of times),
#: and the bytes of their arguments: the sequence a stateful module is replayed over.
MAX_CALLS = 64
MAX_CALL_BYTES = 256 << 20


@dataclass
class Call:
    module: Any  # the module as the test called it: a private copy where one was taken
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    via: str | None = None  # "torch.jit.trace" etc. when the test handed the module to an exporter
    live: Any = None  # the test's own module object (identity: which calls are of one module)
    fingerprint: tuple[Any, ...] | None = None  # where no copy was taken: to detect a later change
    training: bool = False  # the module's mode at the call

    @property
    def name(self) -> str:
        # A scripted module's type is RecursiveScriptModule; its original_name is the class.
        return getattr(self.module, "original_name", None) or type(self.module).__name__

    def changed_since(self) -> str | None:
        """Why the live module differs from when it was called, where no copy was taken."""
        if self.fingerprint is None:
            return None
        if fingerprint(self.live) != self.fingerprint:
            return (
                f"{self.name} was changed by the test body after it was called (submodules replaced, "
                "scripted or traced in place, or parameters reassigned), and it was too large to copy at the "
                f"call ({_gib(module_bytes(self.live))} > budget {_gib(COPY_BUDGET)}): the module as the body "
                "left it was checked"
            )
        return None


@dataclass
class Recording:
    """What one run of a test body called, shared by the test's backend items."""

    calls: list[Call] = field(default_factory=list)
    error: BaseException | None = None  # the body's own exception, re-raised by every item
    selection: Any = None  # recorded.Selection: which call replays, found by the test's first item

    def pick(self, name: str | None) -> Call | None:
        """The call to check: the first the test made, or the first of class ``name``."""
        for call in self.calls:
            if name is None or call.name == name:
                return call
        return None

    def calls_of(self, call: Call) -> list[Call]:
        return [c for c in self.calls if c.live is call.live]

    def others(self, call: Call) -> list[str]:
        """Class names of the other top-level modules the test called."""
        seen = {call.name}
        names = []
        for c in self.calls:
            if c.live is not call.live and c.name not in seen:
                seen.add(c.name)
                names.append(c.name)
        return names


class Recorder:
    """``with Recorder() as rec: test_body()`` then ``rec.recording``."""

    def __init__(self, copy_budget: int = COPY_BUDGET) -> None:
        self.recording = Recording()
        self._depth = 0
        self._patched: list[tuple[Any, str, Any]] = []
        self._copies: dict[int, Call] = {}  # id(live module) -> its first call
        self._scripted: dict[int, Any] = {}  # id(scripted module) -> the Python module it came from
        self._held: dict[int, tuple[int, int]] = {}  # id(module) -> (calls recorded, bytes of their arguments)
        self._budget = copy_budget

    def __enter__(self) -> Recorder:
        import torch

        original = torch.nn.Module.__call__
        recorder = self

        def __call__(module: Any, *args: Any, **kwargs: Any) -> Any:
            if recorder._depth == 0 and recorder._is_test_call(torch, sys._getframe(1)):
                recorder._record(module, args, kwargs)
            recorder._depth += 1
            try:
                return original(module, *args, **kwargs)
            finally:
                recorder._depth -= 1

        # Patching the class attribute reaches every module, scripted ones included,
        # without hooks that users' own hooks could interleave with.
        self._patch(torch.nn.Module, "__call__", __call__)
        self._patch_exporters(torch)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, value in reversed(self._patched):
            setattr(owner, attr, value)
        self._patched.clear()

    def _patch(self, owner: Any, attr: str, value: Any) -> None:
        self._patched.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    # -- what counts as the test's call ------------------------------------------------
    def _is_test_call(self, torch: Any, caller: Any) -> bool:
        if _tracing(torch):
            return False
        if _in_torch(caller.f_code.co_filename):
            return False  # torch's own machinery: check_trace, export, a parametrization
        frame = caller
        for _ in range(64):  # a constructor anywhere up the stack: building, not testing
            if frame is None:
                break
            if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), torch.nn.Module):
                return False
            frame = frame.f_back
        return True

    def _record(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], via: str | None = None) -> None:
        module = self._scripted.get(id(module), module)
        inner = getattr(module, "_orig_mod", None)  # torch.compile's OptimizedModule: the user's module
        if inner is not None and type(module).__name__ == "OptimizedModule":
            module = inner
        count, held = self._held.get(id(module), (0, 0))
        size = _bytes((args, kwargs))
        if count >= MAX_CALLS or (count and held + size > MAX_CALL_BYTES):
            return
        self._held[id(module)] = (count + 1, held + size)
        a, k = _snapshot(args, kwargs)
        first = self._copies.get(id(module))
        call = Call(module, a, k, via=via, live=module, training=bool(getattr(module, "training", False)))
        if first is None:
            self._copies[id(module)] = call
            self._take_copy(call)
        else:
            call.module, call.fingerprint = first.module, first.fingerprint
        self.recording.calls.append(call)

    def _take_copy(self, call: Call) -> None:
        import torch

        from .eager import copy_module

        size = module_bytes(call.live)
        # A ScriptModule is kept as it is: its deep copy loses the method schemas that name its
        # inputs, and the body can change it only by attribute assignment, which the
        # fingerprint sees.
        if size <= self._budget and not isinstance(call.live, torch.jit.ScriptModule):
            with torch.inference_mode(False):  # a body under inference_mode() would copy inference tensors
                copied = copy_module(call.live)
            if copied is not call.live:
                self._budget -= size
                call.module = copied
                return
        call.fingerprint = fingerprint(call.live)

    # -- modules handed to exporters ----------------------------------------------------
    def _patch_exporters(self, torch: Any) -> None:
        recorder = self

        def wrap(owner: Any, attr: str, inputs: Any) -> None:
            fn = getattr(owner, attr, None)
            if fn is None:
                return

            def handed(*args: Any, **kwargs: Any) -> Any:
                if recorder._depth == 0 and args and isinstance(args[0], torch.nn.Module):
                    try:
                        a, k = inputs(*args[1:], **kwargs)
                    except Exception:  # noqa: BLE001 - an unusual call: let the exporter complain
                        a = None
                    if a is not None:
                        recorder._record(args[0], a, k, via=f"{owner.__name__}.{attr}")
                recorder._depth += 1
                try:
                    out = fn(*args, **kwargs)
                finally:
                    recorder._depth -= 1
                if attr == "script" and args and isinstance(args[0], torch.nn.Module):
                    recorder._scripted[id(out)] = args[0]
                return out

            handed.__wrapped__ = fn  # type: ignore[attr-defined]
            recorder._patch(owner, attr, handed)

        def trace_inputs(example_inputs: Any = None, *rest: Any, example_kwarg_inputs: Any = None, **_: Any) -> Any:
            if example_kwarg_inputs is not None:
                return (), dict(example_kwarg_inputs)
            if isinstance(example_inputs, torch.Tensor):
                return (example_inputs,), {}
            return (tuple(example_inputs), {}) if example_inputs is not None else (None, None)

        def export_inputs(args: Any = (), kwargs: Any = None, *rest: Any, **_: Any) -> Any:
            return tuple(args), dict(kwargs or {})

        def onnx_inputs(args: Any = (), f: Any = None, *rest: Any, kwargs: Any = None, **_: Any) -> Any:
            args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
            if kwargs is None and args and isinstance(args[-1], dict):  # torch.onnx reads a trailing dict as kwargs
                args, kwargs = args[:-1], args[-1]
            return args, dict(kwargs or {})

        def no_call(*_: Any, **__: Any) -> Any:
            return None, None

        import torch.export
        import torch.jit
        import torch.onnx

        wrap(torch.jit, "trace", trace_inputs)
        wrap(torch.jit, "script", no_call)
        wrap(torch.export, "export", export_inputs)
        wrap(torch.onnx, "export", onnx_inputs)


def _tracing(torch: Any) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    for check in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, check, None)
        if fn is not None and fn():
            return True
    return False


_TORCH_DIR: str | None = None


def _in_torch(filename: str) -> bool:
    """Torch's own code, but not ``torch.testing`` (suites built on torch's TestCase call from there)."""
    global _TORCH_DIR
    if _TORCH_DIR is None:
        import torch

        _TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
    return filename.startswith(_TORCH_DIR) and not filename.startswith(_TORCH_DIR + "testing" + os.sep)


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


def _bytes(value: Any) -> int:
    import torch
    import torch.utils._pytree as pytree

    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


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
