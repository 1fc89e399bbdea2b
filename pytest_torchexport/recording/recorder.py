"""Record the outermost ``nn.Module`` calls a test makes: the model a marked test checks.

``nn.Module.__call__`` and the exporters are patched; a profile function sees
``model.forward(x)`` and other public methods ([Another Method]). Calls made by torch, inside
an ``__init__``, or by a library for itself are not the test's. [As Called] The first call
takes a private copy of the module, so later changes by the body are not checked.
[A Copy That Is Not The Module] A copy that does not behave as the module is dropped.
See docs/howto-module.md.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import weakref
from typing import TYPE_CHECKING, Any

from .._compat import compiled_original, pytree, torch
from ..results.explain import is_plugin_file, is_user_file
from . import kinds
from .calls import COPY_BUDGET, Call, Recording, copy_of, fingerprint, module_bytes, nbytes, snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import CodeType, FrameType, ModuleType
    from typing import TypeAlias

    from .deferral import Deferral

    #: What an exporter was handed, read from its bound arguments: (module, args, kwargs, other methods).
    Handed: TypeAlias = tuple[object, tuple[Any, ...], dict[str, Any], tuple[str, ...]]
    #: A reader of an exporter's bound arguments (``EXPORTERS``).
    Reader: TypeAlias = Callable[[Mapping[str, Any]], Handed | None]

#: Calls of one module recorded per test, and the bytes of their arguments: a loop over a
#: data set may call it thousands of times.
MAX_CALLS = 64
MAX_CALL_BYTES = 256 << 20
#: Methods that are a Python loop over forward even when they call it once
#: (transformers' ``generate(max_new_tokens=1)``).
LOOPS = frozenset({"generate"})

__all__ = ["Call", "Recorder", "Recording"]


class Recorder:
    """``with Recorder() as rec: test_body()`` then ``rec.recording``."""

    def __init__(
        self, copy_budget: int = COPY_BUDGET, *, module: str | None = None, deferral: Deferral | None = None
    ) -> None:
        self.recording = Recording()
        self._module = module  # the marker's module= (None: the first outermost)
        self._deferral = deferral  # [As Called] None: no verdict cache, so no digest and no deferring
        self._depth = 0
        self._patched: list[tuple[Any, str, Any]] = []
        self._copies: dict[int, Call] = {}  # id(live module) -> its first call
        self._scripted: dict[int, Any] = {}  # id(scripted module) -> the Python module it came from
        self._held: dict[int, tuple[int, int]] = {}  # id(module) -> (calls recorded, argument bytes)
        self._budget = copy_budget
        # The profile function is installed only while no recorded call is under way.
        self._profiling = False
        self._can_profile = False
        self._entered: FrameType | None = None  # the frame of the forward or exporter the profile saw start
        self._entered_module: object = None  # the module handed to that exporter
        self._entered_call: Call | None = None  # the call that forward recorded
        self._constructing: FrameType | None = None  # the outermost constructor frame under way
        self._unverified: set[int] = set()  # id(live) of copies whose outputs are still to be kept
        self._entries: dict[str, list[tuple[CodeType, str, Reader]]] = {}  # function name -> (code, via, inputs)
        self._module_init: Any = None
        self._built: dict[int, tuple[Any, int, Any]] = {}  # modules a library built (``_building``)
        # Objects a recorded call returned: a later call handed one back is carrying state.
        self._returned: dict[int, Any] = {}

    def __enter__(self) -> Recorder:
        original = torch.nn.Module.__call__
        compiling = torch.compiler.is_compiling
        recorder = self

        def __call__(module: torch.nn.Module, *args: object, **kwargs: object) -> object:
            if compiling():
                # Inside the test's own torch.compile, dynamo traces this wrapper for each
                # submodule call. Nothing there is the test's call, and the recorder's
                # bookkeeping would be a mutation dynamo records and replays after the graph,
                # slowing the compile and adding work to every call of the compiled code.
                return original(module, *args, **kwargs)
            # The recording's own work is not the test's code: pause the profile function.
            paused = recorder._profiling and recorder._pause()
            recorded = None
            outer = recorder._entered_call
            if recorder._depth == 0 and recorder._is_test_call(torch, caller(module, sys._getframe(1)), module):
                recorded = recorder._record(module, args, kwargs)
            elif recorder._depth == 1 and outer is not None and outer.method != "forward" and module is outer.live:
                # A method the test called runs its module's forward: a possible loop (``_unroll``).
                recorded = recorder._record(module, args, kwargs, inside=outer)
            recorder._depth += 1
            try:
                out = original(module, *args, **kwargs)
                if recorded is not None:
                    recorder._keep_outputs(recorded, out, inside=outer if recorded.within else None)
                return out
            except BaseException as exc:
                if recorded is not None:  # [Raised In The Test]
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
        self._module_init = getattr(torch.nn.Module.__init__, "__code__", None)
        # Leave another profiler (cProfile) in place; direct forward calls go unseen then.
        self._can_profile = sys.getprofile() is None
        self._resume()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pause()
        self._can_profile = False
        for owner, attr, value in reversed(self._patched):
            setattr(owner, attr, value)
        self._patched.clear()

    def _patch(self, owner: object, attr: str, value: object) -> None:
        self._patched.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    # -- the profile function
    def _pause(self) -> bool:
        if not self._profiling:
            return False
        sys.setprofile(None)
        self._profiling = False
        return True

    def _resume(self) -> None:
        if self._can_profile and not self._profiling:
            self._profiling = True
            sys.setprofile(self._profile if self._constructing is None else self._wait)

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        # Called for every call the test's code makes: keep the common path cheap.
        if event == "call":
            if self._entered is None:
                code = frame.f_code
                name = code.co_name
                if name == "forward" or name in self._entries:
                    self._enter(frame, name)
                elif code is self._module_init:
                    self._building(frame)
                    self._construct(frame)
                elif name[:1] != "_" and code.co_argcount > 1 and code.co_varnames[0] == "self":
                    self._enter_method(frame, name)
        elif event == "return" and frame is self._entered:
            self._entered = None
            if self._entered_call is not None:
                call, self._entered_call = self._entered_call, None
                if not self._unroll(call):
                    self._keep_outputs(call, arg)
            self._depth -= 1
            if self._entered_module is not None:
                self._remember_output(self._entered_module, arg)
                self._entered_module = None

    def _construct(self, init: FrameType) -> None:
        """Watch only for the end of the constructor that ``init`` (``nn.Module.__init__``) runs in.

        No call made inside a module's constructor is the test's (``_is_test_call``), and a
        constructor that builds its submodules, or generates code as e3nn's do, makes
        hundreds of thousands of calls: the full profile function tripled their cost."""
        module = first_argument(init)
        outer, frame = None, init.f_back
        while frame is not None and first_argument(frame) is module:
            outer, frame = frame, frame.f_back
        if outer is not None:
            self._constructing = outer
            sys.setprofile(self._wait)

    def _wait(self, frame: FrameType, event: str, arg: object) -> None:
        # The profile function while a constructor runs: as cheap as one can be.
        if frame is self._constructing and event == "return":
            self._constructing = None
            sys.setprofile(self._profile)

    def _enter(self, frame: FrameType, name: str) -> None:
        code = frame.f_code
        if name == "forward":
            if not code.co_argcount:
                return
            local = frame.f_locals
            module = local.get(code.co_varnames[0])
            if not isinstance(module, torch.nn.Module):
                return
            # Entered whoever called it, so its own layers are not recorded as the test's calls.
            self._entered = frame
            self._depth += 1
            if self._is_test_call(torch, frame.f_back, module):
                args, kwargs = bound_call(module, code, local)
                self._entered_call = self._record(module, args, kwargs)
            return
        for entry_code, via, inputs in self._entries[name]:
            if entry_code is code:
                self._entered = frame
                self._depth += 1
                bound = frame.f_locals
                self._entered_module = handed_module(bound)
                if self._is_test_call(torch, frame.f_back):
                    self._hand(via, inputs, bound)
                return

    def _enter_method(self, frame: FrameType, name: str) -> None:
        """[Another Method] Record a public method of a module, given a tensor, called by the test."""
        code = frame.f_code
        if in_torch(code.co_filename):
            return  # torch's own methods: train(), to(), state_dict(), ...

        local = frame.f_locals
        module = local.get("self")
        if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
            return

        function = getattr(type(module), name, None)
        try:
            target = inspect.unwrap(function) if function is not None else None
        except ValueError:
            target = function
        if getattr(target, "__code__", None) is not code:
            return  # a helper's method, or one bound elsewhere
        args, kwargs = bound_call(module, code, local, target)
        if not any(isinstance(leaf, torch.Tensor) for leaf in pytree.tree_leaves((args, kwargs))):
            return  # model.reset_classifier(10): configures, does not compute
        # A decorated method: the test called the outermost wrapper, so look past the wrappers.
        wrappers = _wrapper_codes(function, target)
        caller = frame.f_back
        while caller is not None and caller.f_code in wrappers:
            caller = caller.f_back
        self._entered = frame
        self._depth += 1
        if caller is not None and test_code(caller) and self._is_test_call(torch, caller):
            self._entered_call = self._record(module, args, kwargs, method=name)

    # -- what counts as the test's call
    def _building(self, init: FrameType) -> None:
        """Note the library call that builds a module for itself: its calls are not the test's."""
        module = first_argument(init)
        if module is None:
            return
        frame = builder(module, init)
        if frame is None or not library(frame.f_code.co_filename):
            return

        if isinstance(first_argument(frame), torch.nn.Module):
            return
        entry = library_entry(frame)
        if entry is None:
            return
        try:
            self._built[id(module)] = (weakref.ref(module), id(entry), entry.f_code)
        except TypeError:  # refuses weak references: its calls count as the test's
            pass

    def _is_test_call(self, torch: ModuleType, caller: Any, module: object = None) -> bool:
        if tracing(torch):
            return False
        if in_torch(caller.f_code.co_filename):
            return False  # torch's own machinery: check_trace, export, a parametrization
        built = self._built.get(id(module)) if module is not None else None
        if built is not None and built[0]() is module and inside(caller, built[1], built[2]):
            return False  # built and called inside one library call, for itself
        frame = caller
        for _ in range(64):  # a constructor up the stack: building, not testing
            if frame is None:
                break
            if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), torch.nn.Module):
                return False
            frame = frame.f_back
        return True

    def _record(
        self,
        module: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        via: str | None = None,
        methods: tuple[str, ...] = (),
        method: str = "forward",
        inside: Call | None = None,
    ) -> Call | None:
        module = self._scripted.get(id(module), module)
        inner = compiled_original(module)  # the module inside torch.compile's OptimizedModule
        if inner is not None:
            module, via = inner, via or "torch.compile"
        count, held = self._held.get(id(module), (0, 0))
        size = nbytes((args, kwargs))
        if count >= MAX_CALLS or (count and held + size > MAX_CALL_BYTES):
            return None
        self._held[id(module)] = (count + 1, held + size)
        kinds.register_caches(args, kwargs)  # before the snapshot copies a cache's tensors
        handed: frozenset[int | str] = frozenset(
            [i for i, value in enumerate(args) if self._handed_back(value)]
            + [name for name, value in kwargs.items() if self._handed_back(value)]
        )
        a, k = snapshot(args, kwargs)
        first = self._copies.get(id(module))
        call = Call(
            module,
            a,
            k,
            via=via,
            live=module,
            training=bool(getattr(module, "training", False)),
            methods=methods,
            method=method,
            handed=handed,
        )
        if first is None:
            self._copies[id(module)] = call
            self._take_copy(call)
        else:
            call.module, call.fingerprint = first.module, first.fingerprint
            call.refused, call.state = first.refused, first.state
            call.digest, call.deferred = first.digest, first.deferred
        if inside is not None:
            call.within = inside.method
            inside.inner.append(call)
        else:
            self.recording.calls.append(call)
        return call

    def _handed_back(self, value: object) -> bool:
        """Whether ``value`` is an object an earlier recorded call returned."""
        ref = self._returned.get(id(value))
        return ref is not None and ref() is value

    def _unroll(self, call: Call) -> bool:
        """If the method that just returned looped over forward, its forward calls replace it."""
        inner, call.inner = call.inner, []
        if not inner or (call.method not in LOOPS and len(inner) < 2):
            return False
        at = next(i for i, c in enumerate(self.recording.calls) if c is call)
        self.recording.calls[at : at + 1] = inner
        if self._copies.get(id(call.live)) is call:
            self._copies[id(call.live)] = inner[0]
        if id(call.live) in self._unverified:  # keep the first forward's outputs, not the loop's
            self._unverified.discard(id(call.live))
        else:
            inner[0].outputs = None
        return True

    def _take_copy(self, call: Call) -> None:
        size = module_bytes(call.live)
        picked = not self._not_picked(call)
        if picked and self._deferral is not None:
            # [As Called] Keyed as called, whether or not a copy is taken now.
            call.digest = self._deferral.digest(call.live)
        # A ScriptModule is not copied: its deep copy loses the method schemas that name its
        # inputs, and the fingerprint sees the only changes a body can make to it.
        if size <= self._budget and not isinstance(call.live, torch.jit.ScriptModule) and picked:
            if call.digest is not None and self._deferral is not None and self._deferral.may_wait(call.digest):
                call.deferred = True
                self.recording.deferral = self._deferral
                if not any(m.training for m in call.live.modules()):
                    self._unverified.add(id(call.live))  # a copy taken later is verified as one taken now
                return
            copied, call.refused, call.state = copy_of(call.live)
            if copied is not call.live:
                self._budget -= size
                call.module = copied
                if not any(m.training for m in call.live.modules()):
                    self._unverified.add(id(call.live))
                return
        call.fingerprint = fingerprint(call.live)

    def _not_picked(self, call: Call) -> bool:
        """Whether the check will not pick ``call``'s module, so no copy is needed."""
        if self._module is not None:
            return self._module not in (call.name, call.label)
        live = call.live
        inside = {id(m) for m in live.modules()} if isinstance(live, torch.nn.Module) else {id(live)}
        return any(not c.raised and id(c.live) not in inside for c in self.recording.calls)

    def _keep_outputs(self, call: Call, out: object, *, inside: Call | None = None) -> None:
        """[A Copy That Is Not The Module] Keep the outputs of a copied module's first eval-mode
        call, for ``Recording.verify``."""
        # Every call's outputs: a later decode step may extend a cache among them in place.
        kinds.register_caches(out)
        kinds.remember_returned(out, self._returned)
        if id(call.live) not in self._unverified:
            return
        if inside is not None:
            if inside.inner[0] is not call:
                return
        else:
            self._unverified.discard(id(call.live))
        if nbytes(out) <= MAX_CALL_BYTES:
            call.outputs = snapshot((out,), {})[0][0]

    # -- modules handed to an exporter
    def _hand(self, via: str, inputs: Reader, bound: Mapping[str, Any]) -> None:
        """Record the module an exporter was handed, from the exporter's bound arguments."""
        try:
            handed = inputs(bound)
        except (
            TypeError,
            ValueError,
            KeyError,
        ):  # an unusual call: let the exporter complain
            handed = None
        if handed is not None:
            module, args, kwargs, methods = handed
            self._record(module, args, kwargs, via=via, methods=methods)

    def _remember_output(self, module: object, out: object) -> None:
        """A ScriptModule scripted or traced from ``module``: calling it is calling ``module``."""
        if isinstance(module, torch.nn.Module) and isinstance(out, torch.jit.ScriptModule):
            self._scripted[id(out)] = module
            self.recording.compiled_from.append((out, module))

    def _patch_exporters(self, torch: ModuleType) -> None:
        for owner_name, attr, via, inputs in EXPORTERS:
            owner = importlib.import_module(owner_name)
            fn = getattr(owner, attr, None)
            if fn is None:
                continue
            code = getattr(fn, "__code__", None)
            if code is not None:  # so the profile function sees it imported under another name
                self._entries.setdefault(code.co_name, []).append((code, via, inputs))
            self._patch(owner, attr, self._exporter(torch, fn, via, inputs))

    def _exporter(
        self, torch: ModuleType, fn: Callable[..., object], via: str, inputs: Reader
    ) -> Callable[..., object]:
        """``fn`` (an exporter), recording the module it is handed as the test's call."""
        recorder = self
        signature = inspect.signature(fn)  # slow for torch.onnx.export: computed once

        def exporter(*args: object, **kwargs: object) -> object:
            paused = recorder._profiling and recorder._pause()
            module = None
            if recorder._depth == 0:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError:
                    pass  # the exporter says what is wrong with the call
                else:
                    bound.apply_defaults()
                    module = handed_module(bound.arguments)
                    # Handed over inside an __init__ (one that traces its cell) is building, not testing.
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

        exporter.__wrapped__ = fn  # type: ignore[attr-defined]
        return exporter


def _wrapper_codes(function: object, target: object) -> set[CodeType]:
    """The code of every decorator wrapper around the method ``target``."""
    codes = set()
    current = function
    for _ in range(16):
        if current is None or current is target:
            break
        code = getattr(current, "__code__", None)
        if code is not None:
            codes.add(code)
        current = getattr(current, "__wrapped__", None)
    return codes


def _said(exc: BaseException) -> str:
    # One line of text, never the exception: its traceback would keep every frame of the call,
    # and the test's tensors, alive.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


# -- Readers of an exporter's bound arguments: (module, args, kwargs, other methods) or None.
def trace_inputs(bound: Mapping[str, Any]) -> Handed | None:
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


def trace_module_inputs(bound: Mapping[str, Any]) -> Handed | None:
    inputs = bound["inputs"]
    if not isinstance(inputs, dict) or "forward" not in inputs:
        return None  # only forward is checked
    others = tuple(str(name) for name in inputs if name != "forward")
    return _forward_call(bound["mod"], inputs["forward"], bool(bound.get("example_inputs_is_kwarg")), others)


def _forward_call(module: object, example: Any, is_kwarg: bool, others: tuple[str, ...]) -> Handed | None:
    """A method's example, read as ``torch.jit.trace_module`` reads it."""
    if not isinstance(module, torch.nn.Module) or example is None:
        return None
    if is_kwarg and isinstance(example, dict):
        return module, (), dict(example), others
    if isinstance(example, (torch.Tensor, dict)):
        return module, (example,), {}, others
    return module, tuple(example), {}, others


def export_inputs(bound: Mapping[str, Any]) -> Handed:
    return bound["mod"], tuple(bound.get("args") or ()), dict(bound.get("kwargs") or {}), ()


def onnx_inputs(bound: Mapping[str, Any]) -> Handed | None:
    model, args, kwargs = bound["model"], bound.get("args", ()), bound.get("kwargs")
    if not isinstance(model, torch.nn.Module):
        return None
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    if kwargs is None and args and isinstance(args[-1], dict):  # torch.onnx reads a trailing dict as kwargs
        args, kwargs = args[:-1], args[-1]
    return model, args, dict(kwargs or {}), ()


def no_call(bound: Mapping[str, Any]) -> None:
    return None


def handed_module(bound: Mapping[str, object]) -> object:
    """The module an exporter was handed; for ``model.forward``, the model."""
    first = next(iter(bound.values()), None)
    owner = getattr(first, "__self__", None)
    return owner if getattr(first, "__name__", "") == "forward" and owner is not None else first


#: (module path, attribute, the call's ``via``, how to read its arguments)
EXPORTERS: tuple[tuple[str, str, str, Reader], ...] = (
    ("torch.jit", "trace", "torch.jit.trace", trace_inputs),
    ("torch.jit", "trace_module", "torch.jit.trace_module", trace_module_inputs),
    ("torch.jit", "script", "torch.jit.script", no_call),
    ("torch.export", "export", "torch.export.export", export_inputs),
    ("torch.onnx", "export", "torch.onnx.export", onnx_inputs),
)


# -- Which frames are the test's own: checking a module torch or a library called proves nothing.


def caller(module: torch.nn.Module, frame: FrameType) -> FrameType:
    """The frame that called ``module``, past torch.compile's and fx's wrappers, so
    ``torch.compile(model)(x)`` is the test's call."""
    if frame.f_code.co_name == "__call__" and type(module).__name__ == "OptimizedModule" and frame.f_back is not None:
        return frame.f_back
    # An fx.GraphModule is called through fx's _WrappedCall and call_wrapped, torch's frames.
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
    module: object, code: CodeType, local: dict[str, Any], function: Any = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call ``forward`` was bound to, rebuilt from its frame; trailing defaults left out."""
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


def tracing(torch: ModuleType) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    for check in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, check, None)
        if fn is not None and fn():
            return True
    return False


def in_torch(filename: str) -> bool:
    """Torch's own code, but not ``torch.testing`` (suites on torch's TestCase call from there)."""
    torch_dir = _torch_dir()
    return filename.startswith(torch_dir) and not filename.startswith(torch_dir + "testing" + os.sep)


@functools.lru_cache(maxsize=1)
def _torch_dir() -> str:
    return os.path.dirname(torch.__file__) + os.sep


def library(filename: str) -> bool:
    """Code the test did not write, decided by where the file comes from, never by name."""
    return _library(filename)


@functools.lru_cache(maxsize=4096)
def _library(filename: str) -> bool:
    return not is_user_file(filename)


def first_argument(frame: FrameType) -> object:
    """What a frame's first parameter holds (``self`` of a method), or None."""
    code = frame.f_code
    return frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None


def builder(module: object, init: FrameType) -> FrameType | None:
    """The frame that builds ``module``, past its classes' ``__init__`` frames."""
    frame = init.f_back
    while frame is not None and first_argument(frame) is module:
        frame = frame.f_back
    return frame


def library_entry(frame: FrameType) -> FrameType | None:
    """The outermost library frame below the test's code that ``frame`` runs in. None if no
    test frame is found, or if this plugin's own code is on the way."""
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


def inside(caller: FrameType | None, frame_id: int, code: CodeType) -> bool:
    """Whether ``caller`` runs inside the library call that built the module, with only
    library frames between."""
    frame = caller
    for _ in range(64):
        if frame is None or not library(frame.f_code.co_filename):
            return False
        if id(frame) == frame_id and frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def test_code(frame: FrameType) -> bool:
    """[Another Method] Whether ``frame`` is the test's own code, not a library's or a module's."""
    return not library(frame.f_code.co_filename) and not isinstance(first_argument(frame), torch.nn.Module)
