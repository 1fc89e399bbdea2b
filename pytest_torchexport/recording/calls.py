"""What one run of a test body called: each ``Call`` (the module as called, its arguments,
how it was reached) and the ``Recording`` of them all, shared by the test's backend items;
``Recorder`` (``recorder.py``) makes them. How a call is chosen, and a copy that is not the
module told apart, are here; see ``recorder.py``'s docstring for what counts as a call.

[As Called] What a recorded call holds on to: its arguments cloned at the call (``snapshot``),
and, for the module, its size (``module_bytes``, against ``COPY_BUDGET``), its fingerprint (a
change after the call) and each submodule's mode and state (``state_of``: put back on a live
module checked in place of a copy).

torch and the package's torch-side modules are imported inside the functions: the recorder is
imported with the plugin, whose import stays torch-free (tests/test_import_without_torch.py).
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
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
    from ..reference import eager  # imports torch: the plugin's import of this module stays torch-free

    modes = {name: sub.training for name, sub in module.named_modules(remove_duplicate=False)}
    return modes, eager.snapshot(module, parameters=True) or {}


def nbytes(value: Any) -> int:
    """``reference.eager.nbytes``, imported when first asked: it imports torch, and the plugin's
    import of this module stays torch-free."""
    from ..reference.eager import nbytes as measured

    return measured(value)


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _by_value(value: Any, memo: dict[int, Any], torch: Any, depth: int = 8) -> Any:
    """``value`` with every tensor it holds cloned (detached: ``deepcopy`` refuses a tensor with a
    grad_fn, as a cache built outside ``no_grad`` holds), its containers and objects copied around
    them; shared parts stay shared. What cannot be copied, or lies past ``depth``, is kept as it is."""
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, torch.Tensor):
        copied: Any = value.detach().clone()
    elif isinstance(value, VALUES) or callable(value) or depth == 0:
        return value
    elif type(value) in (list, tuple):
        copied = type(value)(_by_value(v, memo, torch, depth - 1) for v in value)
    elif type(value) is dict:
        copied = {k: _by_value(v, memo, torch, depth - 1) for k, v in value.items()}
    else:
        try:
            copied = copy.copy(value)
        except Exception:  # noqa: BLE001 - an object that refuses to be copied is kept as it is
            return value
        memo[id(value)] = copied
        for name, part in getattr(value, "__dict__", {}).items():
            copied.__dict__[name] = _by_value(part, memo, torch, depth - 1)
        if isinstance(value, dict):  # a mapping class of the user's: its items too
            for key, part in value.items():
                copied[key] = _by_value(part, memo, torch, depth - 1)
    memo[id(value)] = copied
    return copied


#: Plain values: a snapshot keeps them as they are (their copy is themselves), and they carry no state.
VALUES = (str, bytes, int, float, complex, bool, type(None), enum.Enum, type)


def snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch

    from .._compat import pytree

    def clone(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            # Outside inference mode, so tensors recorded under inference_mode() come out
            # as normal tensors the checks can use freely.
            with torch.inference_mode(False):
                return value.detach().clone()
        if isinstance(value, VALUES) or callable(value):
            return value
        # An object pytree does not flatten (a cache of a transformers release that registers none,
        # a user's state object) is copied by value too: the test's next call may extend it in place.
        with torch.inference_mode(False):
            return _by_value(value, {}, torch)

    a, k = pytree.tree_map(clone, (tuple(args), dict(kwargs)))
    return tuple(a), dict(k)


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
    #: a Python loop over forward (generate): the method of the test's call this forward call was made by ("generate"):
    #: a Python loop over forward is checked through the forward calls it makes, never as a method
    within: str | None = None
    #: the arguments (positions and keyword names) that are a value an earlier recorded call
    #: returned: state the test hands back, such as a KV cache, whatever the argument is called
    handed: frozenset[int | str] = frozenset()
    #: while a method call is recorded: the calls of its own module's forward it makes
    inner: list[Call] = field(default_factory=list, repr=False)

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
        from ..reference import eager

        modes, saved = self.state
        for name, sub in self.live.named_modules(remove_duplicate=False):
            if name in modes and sub.training != modes[name]:
                sub.train(modes[name])  # its own train(): a module that switches graphs does so
        eager.restore(self.live, saved, parameters=True)

    def changed_since(self) -> str | None:
        """Why the live module differs from when it was called, where no copy was taken."""
        if self.fingerprint is None:
            return None
        if fingerprint(self.live) != self.fingerprint:
            return (
                f"{self.name} was changed by the test body after it was called (submodules replaced, "
                "scripted or traced in place, or parameters reassigned), and it was too large to copy at the "
                f"call ({gib(module_bytes(self.live))} > the copy limit {gib(COPY_BUDGET)}, TORCHEXPORT_COPY_LIMIT): the module as the body "
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

        from ..reference import eager
        from ..reference.compare import compare

        first = next((c for c in self.calls if c.live is call.live and c.outputs is not None), None)
        if first is None:
            return
        expected, first.outputs = first.outputs, None
        copy = first.module
        if copy is first.live:
            return
        before = eager.snapshot(copy) or {}  # buffers: what a forward may update
        try:
            a, k = snapshot(first.args, first.kwargs)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                mine = getattr(copy, first.method)(*a, **k)
            verdict = compare(expected, mine)
            why = (
                None
                if verdict.ok
                else (
                    f"its copy's outputs on the recorded call differ from the test's own "
                    f"(greatest absolute difference {verdict.max_abs:.3g}{'; ' + verdict.problem if verdict.problem else ''})"
                )
            )
        except Exception as exc:  # noqa: BLE001 - a copy that cannot replay the call is not the module either
            why = f"its copy raises on the recorded call ({type(exc).__name__}: {str(exc)[:200]})"
        eager.restore(copy, before)
        if why is None:
            return
        from ..reference.eager import never_copy

        never_copy(first.live, why)  # eager's copy and each export's would be just as unlike it
        # The copy holds the state the call started from: what the live module is put back to.
        state, mark = state_of(copy), fingerprint(first.live)
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
        trivial = {
            c.label
            for c in self.calls
            if isinstance(c.live, torch.nn.Module)
            and next(c.live.parameters(), None) is None
            and next(c.live.buffers(), None) is None
            and not list(c.live.children())
        }
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
