"""Record the outermost ``nn.Module`` calls a test makes (the model a marked test checks: docs/howto-module.md).

What counts as the test's call, and why:

- Submodule calls made inside a recorded call are part of it: the model is what the test
  called, its layers are part of it.
- [Not The Test's Call] A call made while an ``nn.Module`` is being constructed (a
  ``weight_norm`` parametrization evaluated in ``__init__``, a grid precomputed by an
  ``fx.GraphModule``), by torch's own code (``torch.jit.trace``'s ``check_trace`` re-running
  a module, ``torch.export``, a parametrization read), or while torch is tracing or
  compiling, is not what the test is about. Checking such a module gave green items that
  proved nothing (a ``ParametrizationList`` exported in place of the model).
- [Direct Forward] ``model.forward(x)`` skips ``__call__``, so the patched ``__call__``
  alone would record the model's first child (a stem ``Conv2d``) in its place. While the
  test's own code runs (no recorded call under way), a profile function watches for a
  function named ``forward`` of an ``nn.Module`` starting, and records it as ``model(x)``
  would be, with the arguments it was bound to. It is off inside every recorded call (the
  patched ``__call__`` pauses it), so a model's own layers cost nothing.
- [Another Method] ``model.forward_features(x)``, ``model.encode(x)``: a public method of an
  ``nn.Module`` (defined outside torch, given at least one tensor) that the test's own code
  calls is recorded as a call of that method (``Call.method``), the same way as a direct
  ``forward``: the method is what is checked, never the stem its first line calls.
- [Handed To An Exporter] A module the test (or a library helper it calls) hands to
  ``torch.jit.trace``, ``torch.jit.trace_module`` (its ``forward`` inputs),
  ``torch.export.export`` or ``torch.onnx.export`` counts as called with those inputs,
  recorded whole; so does calling what ``torch.compile(model)`` returned. The public names
  are patched, and the profile function catches the same functions called under a name a
  library imported before the test ran (``from torch.jit import trace_module``). A module
  handed to ``torch.jit.script`` and then called is recorded as the Python module it came
  from.
- [As Called] The first time the test calls a module, a private copy of it is taken before
  the call runs (within a memory budget), so a body that later scripts, traces or replaces
  submodules in place does not change what is checked. Past the budget, or where the
  module refuses a copy, the live module is kept with a fingerprint, and a change is a
  ``changed_after_call`` finding instead.
- [A Copy That Is Not The Module] The copy is the reference only if it is the module the
  test called: every submodule in the mode it had (``eager.as_called``), and, where the test
  called it in eval mode, the test's own outputs given back on the recorded call (kept at the
  call; the copy, which still holds the state the call started from, replays it once when
  its check is planned: ``Recording.verify``, for the checked module only). A copy that
  is not (torchvision's ``DualGraphModule``, whose ``__deepcopy__`` re-runs an ``__init__``
  that selects the train graph) is dropped: the live module is checked, its modes and state
  as at the call put back before the check (``Call.put_back``), and the row says why
  (a ``reference_copy`` finding).

Works under ``no_grad``, ``inference_mode`` and plain mode; arguments are cloned at call
time, so a test that mutates its inputs afterwards does not change the record. Where a
profiler is already installed (``cProfile``), direct ``forward`` calls are not seen.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from .._compat import compiled_original

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
    methods: tuple[str, ...] = ()  # other methods torch.jit.trace_module was handed inputs for (not checked)
    #: [Another Method] the method the test called ("forward_features"); "forward" for a call of the module
    method: str = "forward"
    #: [Raised In The Test] the exception the call raised in the test itself ("TypeError: ..."):
    #: a call the test expects to fail (a check that bad input is refused) is no example to serve
    raised: str | None = None
    #: [A Copy That Is Not The Module] why the live module is checked instead of a copy
    refused: str | None = None
    #: (each submodule's mode, the state_dict) at the call, put back on the live module before its check
    state: Any = None
    #: the test's own outputs of an eval-mode first call, until ``Recording.verify`` compares the copy's
    outputs: Any = None

    @property
    def name(self) -> str:
        # A scripted module's type is RecursiveScriptModule; its original_name is the class.
        return getattr(self.module, "original_name", None) or type(self.module).__name__

    @property
    def label(self) -> str:
        """What ``module=`` names this call by: ``ResNet``, or ``ResNet.forward_features``."""
        return self.name if self.method == "forward" else f"{self.name}.{self.method}"

    def checked(self) -> Any:
        """The module to check: the module, or for another method a module whose forward calls it."""
        if self.method == "forward":
            return self.module
        from ..backends.base import method_call

        # One wrapper a call: the prelude shared by the test's backends is keyed by the module's id.
        wrapper = self.__dict__.get("_wrapper")
        if wrapper is None or wrapper.module is not self.module:
            wrapper = self.__dict__["_wrapper"] = method_call(self.module, self.method)
        return wrapper

    def put_back(self) -> None:
        """The live module's modes and state as at the call, where no copy was kept."""
        if self.state is None:
            return
        from ..reference import stateful

        modes, saved = self.state
        for name, sub in self.live.named_modules(remove_duplicate=False):
            if name in modes and sub.training != modes[name]:
                sub.train(modes[name])  # its own train(): a module that switches graphs does so
        stateful.restore(self.live, saved, parameters=True)

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
    #: (ScriptModule, the Python module it was scripted or traced from): a module a helper
    #: traced in place is still inside the model that now holds its artifact
    compiled_from: list[tuple[Any, Any]] = field(default_factory=list)
    #: [Search Budget] the body's own wall seconds: the default budget is a multiple of it
    body_s: float | None = None

    def pick(self, name: str | None) -> Call | None:
        """The call to check: the first of an outermost module the test made, or the first of
        class ``name``."""
        if name is not None and "." in name:  # [Another Method] module="ResNet.forward_features"
            named = [c for c in self.calls if c.label == name]
        else:
            named = [c for c in (self.outermost() if name is None else self.calls) if name is None or c.name == name]
        # A module whose calls all raised in the test comes after one called with inputs it accepts.
        return next((c for c in named if not self.raised_only(c)), named[0] if named else None)

    def verify(self, call: Call) -> None:
        """[A Copy That Is Not The Module] Once, before ``call``'s module is checked: its copy
        replays the recorded call and gives the test's own outputs, or every call of the module
        is checked on the live module (its modes and state as at the call put back) instead."""
        import torch

        from ..reference import stateful
        from ..reference.compare import compare

        first = next((c for c in self.calls if c.live is call.live and c.outputs is not None), None)
        if first is None:
            return
        expected, first.outputs = first.outputs, None
        copy = first.module
        if copy is first.live:
            return
        before = stateful.snapshot(copy) or {}  # buffers: what a forward may update
        try:
            a, k = _snapshot(first.args, first.kwargs)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                mine = getattr(copy, first.method)(*a, **k)
            verdict = compare(expected, mine)
            why = None if verdict.ok else (
                f"its copy's outputs on the recorded call differ from the test's own "
                f"(greatest absolute difference {verdict.max_abs:.3g}{'; ' + verdict.problem if verdict.problem else ''})"
            )
        except Exception as exc:  # noqa: BLE001 - a copy that cannot replay the call is not the module either
            why = f"its copy raises on the recorded call ({type(exc).__name__}: {str(exc)[:200]})"
        stateful.restore(copy, before)
        if why is None:
            return
        from ..reference.eager import never_copy

        never_copy(first.live, why)  # eager's copy and each export's would be just as unlike it
        # The copy holds the state the call started from: what the live module is put back to.
        state, mark = _state(copy), fingerprint(first.live)
        for c in self.calls:
            if c.live is first.live:
                c.module, c.refused, c.state, c.fingerprint = c.live, why, state, mark

    def raised_only(self, call: Call) -> bool:
        """Every call of ``call``'s module raised in the test itself."""
        return all(c.raised for c in self.calls_of(call))

    def calls_of(self, call: Call) -> list[Call]:
        return [c for c in self.calls if c.live is call.live and c.method == call.method]

    def others(self, call: Call) -> list[str]:
        """Class names of the other outermost modules the test called (siblings, never a
        submodule of a module the test called)."""
        import torch

        seen = {call.label}
        names = []
        for c in self.outermost():
            if (c.live is not call.live or c.method != call.method) and c.label not in seen:
                seen.add(c.label)
                names.append(c.label)
        # Modules with no parameters of their own making (Dropout, Identity, an activation)
        # are no model anyone means to check: never suggested in module=.
        trivial = {c.label for c in self.calls
                   if isinstance(c.live, torch.nn.Module) and next(c.live.parameters(), None) is None
                   and next(c.live.buffers(), None) is None and not list(c.live.children())}
        return [n for n in names if n not in trivial]

    def outermost(self) -> list[Call]:
        """The calls of modules that are no submodule of another module the test called
        (a test that calls ``model(x)`` and ``model.encoder(x)`` is about ``model``)."""
        import torch

        modules = {id(c.live): c.live for c in self.calls}
        origin = {id(artifact): original for artifact, original in self.compiled_from}
        inner = set()
        for m in modules.values():
            if isinstance(m, torch.nn.Module):
                for sub in m.modules():
                    if sub is not m:
                        inner.add(id(origin.get(id(sub), sub)))
        return [c for c in self.calls if id(c.live) not in inner] or self.calls


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
        # [Direct Forward] the profile function, installed while no recorded call is under way
        self._profiling = False
        self._can_profile = False
        self._entered: Any = None  # the frame of the forward or exporter the profile saw start
        self._entered_module: Any = None  # the module handed to the exporter the profile saw start
        self._entered_call: Call | None = None  # the call a direct forward the profile saw start recorded
        self._unverified: set[int] = set()  # id(live) of copies whose call's outputs are still to be kept
        self._entries: dict[str, list[tuple[Any, str, Any]]] = {}  # function name -> (code, via, inputs)

    def __enter__(self) -> Recorder:
        import torch

        original = torch.nn.Module.__call__
        recorder = self

        def __call__(module: Any, *args: Any, **kwargs: Any) -> Any:
            # Paused first: the recording's own work is not the test's code to watch.
            paused = recorder._profiling and recorder._pause()
            recorded = None
            if recorder._depth == 0 and recorder._is_test_call(torch, _caller(module, sys._getframe(1))):
                recorded = recorder._record(module, args, kwargs)
            recorder._depth += 1
            try:
                out = original(module, *args, **kwargs)
                if recorded is not None:
                    recorder._keep_outputs(recorded, out)
                return out
            except BaseException as exc:
                if recorded is not None:  # [Raised In The Test] no example of how the model is served
                    recorded.raised = _said(exc)
                raise
            finally:
                recorder._depth -= 1
                if paused:
                    recorder._resume()

        # Patching the class attribute reaches every module, scripted ones included,
        # without hooks that users' own hooks could interleave with.
        self._patch(torch.nn.Module, "__call__", __call__)
        self._patch_exporters(torch)
        # Another profiler (cProfile) keeps its place: direct forward calls go unseen then.
        self._can_profile = sys.getprofile() is None
        self._resume()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pause()
        self._can_profile = False
        for owner, attr, value in reversed(self._patched):
            setattr(owner, attr, value)
        self._patched.clear()

    def _patch(self, owner: Any, attr: str, value: Any) -> None:
        self._patched.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    # -- [Direct Forward] the profile function --------------------------------------------
    def _pause(self) -> bool:
        if not self._profiling:
            return False
        sys.setprofile(None)
        self._profiling = False
        return True

    def _resume(self) -> None:
        if self._can_profile and not self._profiling:
            self._profiling = True
            sys.setprofile(self._profile)

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        # Called for every Python and C call while the test's own code runs: the two string
        # comparisons are all most events cost.
        if event == "call":
            if self._entered is None:
                code = frame.f_code
                name = code.co_name
                if name == "forward" or name in self._entries:
                    self._enter(frame, name)
                elif name[:1] != "_" and code.co_argcount > 1 and code.co_varnames[0] == "self":
                    self._enter_method(frame, name)
        elif event == "return" and frame is self._entered:
            self._entered = None
            if self._entered_call is not None:
                call, self._entered_call = self._entered_call, None
                self._keep_outputs(call, arg)
            self._depth -= 1
            if self._entered_module is not None:
                self._remember_output(self._entered_module, arg)
                self._entered_module = None

    def _enter(self, frame: Any, name: str) -> None:
        import torch

        code = frame.f_code
        if name == "forward":
            if not code.co_argcount:
                return
            local = frame.f_locals
            module = local.get(code.co_varnames[0])
            if not isinstance(module, torch.nn.Module):
                return
            # Entered, whoever called it: its own layers are part of it, not the test's calls.
            self._entered = frame
            self._depth += 1
            if self._is_test_call(torch, frame.f_back):
                args, kwargs = _bound_call(module, code, local)
                self._entered_call = self._record(module, args, kwargs)
            return
        for entry_code, via, inputs in self._entries[name]:
            if entry_code is code:
                self._entered = frame
                self._depth += 1
                bound = frame.f_locals
                self._entered_module = _handed_module(bound)
                if self._is_test_call(torch, frame.f_back):
                    self._hand(via, inputs, bound)
                return

    def _enter_method(self, frame: Any, name: str) -> None:
        """[Another Method] A public method of a module, given a tensor, called by the test."""
        code = frame.f_code
        if _in_torch(code.co_filename):
            return  # torch's own methods: train(), to(), state_dict(), ...
        import torch

        from .._compat import pytree

        local = frame.f_locals
        module = local.get("self")
        if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
            return
        import inspect

        function = getattr(type(module), name, None)
        try:
            target = inspect.unwrap(function) if function is not None else None
        except ValueError:
            target = function
        if getattr(target, "__code__", None) is not code:
            return  # a helper's method, or one bound elsewhere
        args, kwargs = _bound_call(module, code, local, target)
        if not any(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves((args, kwargs))):
            return  # model.reset_classifier(10): configures, does not compute
        caller = frame.f_back
        # A decorated method (@torch.no_grad(), @torch.inference_mode()): the test called the
        # decorator's wrapper, whose frame is torch's; the call is the test's if the wrapper's is.
        wrapper = getattr(function, "__code__", None) if function is not target else None
        for _ in range(3):
            if wrapper is None or caller is None:
                break
            if caller.f_code is wrapper:
                caller = caller.f_back
                break
            caller = caller.f_back
        else:
            caller = frame.f_back
        self._entered = frame
        self._depth += 1
        if caller is not None and self._is_test_call(torch, caller):
            self._entered_call = self._record(module, args, kwargs, method=name)

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

    def _record(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, via: str | None = None,
        methods: tuple[str, ...] = (), method: str = "forward",
    ) -> Call | None:
        module = self._scripted.get(id(module), module)
        inner = compiled_original(module)  # torch.compile's OptimizedModule: the user's module
        if inner is not None:
            module, via = inner, via or "torch.compile"
        count, held = self._held.get(id(module), (0, 0))
        size = _bytes((args, kwargs))
        if count >= MAX_CALLS or (count and held + size > MAX_CALL_BYTES):
            return None
        self._held[id(module)] = (count + 1, held + size)
        a, k = _snapshot(args, kwargs)
        first = self._copies.get(id(module))
        call = Call(module, a, k, via=via, live=module, training=bool(getattr(module, "training", False)),
                    methods=methods, method=method)
        if first is None:
            self._copies[id(module)] = call
            self._take_copy(call)
        else:
            call.module, call.fingerprint = first.module, first.fingerprint
        self.recording.calls.append(call)
        return call

    def _take_copy(self, call: Call) -> None:
        import torch

        from ..reference.eager import copy_as_called

        size = module_bytes(call.live)
        # A ScriptModule is kept as it is: its deep copy loses the method schemas that name its
        # inputs, and the body can change it only by attribute assignment, which the
        # fingerprint sees.
        if size <= self._budget and not isinstance(call.live, torch.jit.ScriptModule):
            with torch.inference_mode(False):  # a body under inference_mode() would copy inference tensors
                copied, call.refused = copy_as_called(call.live)
            if copied is not call.live:
                self._budget -= size
                call.module = copied
                if not any(m.training for m in call.live.modules()):
                    self._unverified.add(id(call.live))
                return
            if call.refused is not None:
                call.state = _state(call.live)
        call.fingerprint = fingerprint(call.live)

    def _keep_outputs(self, call: Call, out: Any) -> None:
        """[A Copy That Is Not The Module] The test's own outputs of the first eval-mode call of
        a copied module, for ``Recording.verify`` (not kept past ``MAX_CALL_BYTES``)."""
        if id(call.live) not in self._unverified:
            return
        self._unverified.discard(id(call.live))
        if _bytes(out) <= MAX_CALL_BYTES:
            call.outputs = _snapshot((out,), {})[0][0]

    # -- [Handed To An Exporter] ----------------------------------------------------------
    def _hand(self, via: str, inputs: Any, bound: Any) -> None:
        """Record the module an exporter was handed, from the exporter's bound arguments."""
        try:
            handed = inputs(bound)
        except (TypeError, ValueError, KeyError):  # an unusual call (a non-iterable example, ...): let the exporter complain
            handed = None
        if handed is not None:
            module, args, kwargs, methods = handed
            self._record(module, args, kwargs, via=via, methods=methods)

    def _remember_output(self, module: Any, out: Any) -> None:
        """A ScriptModule scripted or traced from ``module``: calling it is calling ``module``."""
        import torch

        if isinstance(module, torch.nn.Module) and isinstance(out, torch.jit.ScriptModule):
            self._scripted[id(out)] = module
            self.recording.compiled_from.append((out, module))

    def _patch_exporters(self, torch: Any) -> None:
        import torch.export
        import torch.jit
        import torch.onnx

        recorder = self

        def wrap(owner: Any, attr: str, via: str, inputs: Any) -> None:
            fn = getattr(owner, attr, None)
            if fn is None:
                return
            code = getattr(fn, "__code__", None)
            if code is not None:  # the profile function's way in: the same function under another name
                self._entries.setdefault(code.co_name, []).append((code, via, inputs))
            signature = _signature(fn)

            def handed(*args: Any, **kwargs: Any) -> Any:
                paused = recorder._profiling and recorder._pause()
                module = None
                if recorder._depth == 0:
                    try:
                        bound = signature.bind(*args, **kwargs)
                    except TypeError:
                        pass  # the exporter says what is wrong with the call
                    else:
                        bound.apply_defaults()
                        module = _handed_module(bound.arguments)
                        # Handed over while a module is constructed (an __init__ that traces its
                        # cell) is building, not testing, as a call there is.
                        if recorder._is_test_call(torch, sys._getframe(1)):
                            recorder._hand(via, inputs, bound.arguments)
                recorder._depth += 1
                try:
                    out = fn(*args, **kwargs)
                finally:
                    recorder._depth -= 1
                    if paused:
                        recorder._resume()
                if module is not None:
                    recorder._remember_output(module, out)
                return out

            handed.__wrapped__ = fn  # type: ignore[attr-defined]
            recorder._patch(owner, attr, handed)

        wrap(torch.jit, "trace", "torch.jit.trace", _trace_inputs)
        wrap(torch.jit, "trace_module", "torch.jit.trace_module", _trace_module_inputs)
        wrap(torch.jit, "script", "torch.jit.script", _no_call)
        wrap(torch.export, "export", "torch.export.export", _export_inputs)
        wrap(torch.onnx, "export", "torch.onnx.export", _onnx_inputs)


def _said(exc: BaseException) -> str:
    # One line of text, never the exception: it holds its traceback, and the traceback every
    # frame of the call with the test's tensors (a cache keyed on it kept them all alive).
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _signature(fn: Any) -> Any:
    import inspect

    return inspect.signature(fn)  # milliseconds for torch.onnx.export: once a process, not once a test


# Each exporter's bound arguments -> (module, args, kwargs, other methods named) or None.
def _trace_inputs(bound: Any) -> Any:
    import torch

    func, kwarg_inputs = bound["func"], bound.get("example_kwarg_inputs")
    if not isinstance(func, torch.nn.Module):
        owner = getattr(func, "__self__", None)  # torch.jit.trace(model.forward, x)
        if not (isinstance(owner, torch.nn.Module) and getattr(func, "__name__", "") == "forward"):
            return None
        func = owner
    example = bound.get("example_inputs")
    if example is None:
        example = kwarg_inputs
    return _forward_call(func, example, isinstance(kwarg_inputs, dict), ())


def _trace_module_inputs(bound: Any) -> Any:
    inputs = bound["inputs"]
    if not isinstance(inputs, dict) or "forward" not in inputs:
        return None  # only forward is checked; a module traced for other methods alone is not called
    others = tuple(str(name) for name in inputs if name != "forward")
    return _forward_call(bound["mod"], inputs["forward"], bool(bound.get("example_inputs_is_kwarg")), others)


def _forward_call(module: Any, example: Any, is_kwarg: bool, others: tuple[str, ...]) -> Any:
    """As ``torch.jit.trace_module`` reads a method's example: a dict of keyword arguments,
    or the positional arguments (a lone tensor or dict is one argument)."""
    import torch

    if not isinstance(module, torch.nn.Module) or example is None:
        return None
    if is_kwarg and isinstance(example, dict):
        return module, (), dict(example), others
    if isinstance(example, (torch.Tensor, dict)):
        return module, (example,), {}, others
    return module, tuple(example), {}, others


def _export_inputs(bound: Any) -> Any:
    return bound["mod"], tuple(bound.get("args") or ()), dict(bound.get("kwargs") or {}), ()


def _onnx_inputs(bound: Any) -> Any:
    import torch

    model, args, kwargs = bound["model"], bound.get("args", ()), bound.get("kwargs")
    if not isinstance(model, torch.nn.Module):
        return None
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    if kwargs is None and args and isinstance(args[-1], dict):  # torch.onnx reads a trailing dict as kwargs
        args, kwargs = args[:-1], args[-1]
    return model, args, dict(kwargs or {}), ()


def _no_call(bound: Any) -> Any:
    return None


def _handed_module(bound: Any) -> Any:
    """The module an exporter was handed (its first argument), whatever the exporter calls it;
    ``model.forward`` handed to ``torch.jit.trace`` is the model."""
    first = next(iter(bound.values()), None)
    owner = getattr(first, "__self__", None)
    return owner if getattr(first, "__name__", "") == "forward" and owner is not None else first


def _caller(module: Any, frame: Any) -> Any:
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


def _bound_call(module: Any, code: Any, local: dict[str, Any], function: Any = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


def _tracing(torch: Any) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    for check in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, check, None)
        if fn is not None and fn():
            return True
    return False


def _in_torch(filename: str) -> bool:
    """Torch's own code, but not ``torch.testing`` (suites built on torch's TestCase call from there)."""
    torch_dir = _torch_dir()
    return filename.startswith(torch_dir) and not filename.startswith(torch_dir + "testing" + os.sep)


@functools.lru_cache(maxsize=1)
def _torch_dir() -> str:
    import torch

    return os.path.dirname(torch.__file__) + os.sep


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


def _state(module: Any) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each submodule's mode and the state_dict, as ``Call.put_back`` restores them."""
    from ..reference import stateful

    modes = {name: sub.training for name, sub in module.named_modules(remove_duplicate=False)}
    return modes, stateful.snapshot(module, parameters=True) or {}


def _bytes(value: Any) -> int:
    import torch

    from .._compat import pytree

    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
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
