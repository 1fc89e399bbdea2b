"""What one run of a test body called: each ``Call`` and the ``Recording`` of them all.

[As Called] A call keeps its arguments as cloned at the call. torch is imported inside the
functions, so the plugin's import stays torch-free.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._compat import pytree, torch
from ..options import environment

if TYPE_CHECKING:
    from types import ModuleType

    from .deferral import Deferral

#: Bytes of parameters and buffers all copies of one test may hold; past it the live module
#: is checked and a change after the call is reported.
COPY_BUDGET = int(environment("TORCHEXPORT_COPY_LIMIT", str(2 << 30)))


def module_bytes(module: object) -> int:
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def fingerprint(module: object) -> tuple[Any, ...]:
    """Which objects the module is made of."""
    if not isinstance(module, torch.nn.Module):
        return (id(module),)
    subs = tuple((name, id(m), type(m).__name__) for name, m in module.named_modules())
    tensors = tuple((name, t.data_ptr(), t.shape) for name, t in module.state_dict(keep_vars=True).items())
    return subs + tensors


def state_of(module: torch.nn.Module) -> tuple[dict[str, bool], dict[str, Any]]:
    """Each submodule's mode and the state_dict, for ``Call.put_back``."""
    from ..reference import eager  # deferred: imports torch

    modes = {name: sub.training for name, sub in module.named_modules(remove_duplicate=False)}
    return modes, eager.snapshot(module, parameters=True) or {}


def copy_of(live: torch.nn.Module) -> tuple[torch.nn.Module, str | None, tuple[dict[str, bool], dict[str, Any]] | None]:
    """[As Called] A copy of ``live`` as it is now: (the copy, None, None); or, where it refuses one,
    (``live`` itself, why, its modes and state now, for ``Call.put_back``)."""
    from ..reference.eager import copy_as_called  # deferred: imports torch

    with torch.inference_mode(False):  # a body under inference_mode() would copy inference tensors
        copied, refused = copy_as_called(live)
    return copied, refused, state_of(live) if refused is not None else None


def nbytes(value: object) -> int:
    """``reference.eager.nbytes``, imported lazily since it imports torch."""
    from ..reference.eager import nbytes as measured

    return measured(value)


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _by_value(value: Any, memo: dict[int, Any], torch: ModuleType, depth: int = 8) -> Any:
    """``value`` copied, tensors detached (``deepcopy`` refuses a tensor with a grad_fn)."""
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
        except Exception:  # noqa: BLE001 - an object that refuses a copy is kept as it is
            return value
        memo[id(value)] = copied
        for name, part in getattr(value, "__dict__", {}).items():
            copied.__dict__[name] = _by_value(part, memo, torch, depth - 1)
        if isinstance(value, dict):  # a user's mapping class: its items too
            for key, part in value.items():
                copied[key] = _by_value(part, memo, torch, depth - 1)
    memo[id(value)] = copied
    return copied


#: Plain values: a snapshot keeps them as they are.
VALUES = (str, bytes, int, float, complex, bool, type(None), enum.Enum, type)


def snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def clone(value: object) -> object:
        if isinstance(value, torch.Tensor):
            # Outside inference mode, so the checks get normal tensors.
            with torch.inference_mode(False):
                return value.detach().clone()
        if isinstance(value, VALUES) or callable(value):
            return value
        # An object pytree does not flatten (some transformers caches, a user's state object) is
        # copied too: the test's next call may extend it in place.
        with torch.inference_mode(False):
            return _by_value(value, {}, torch)

    a, k = pytree.tree_map(clone, (tuple(args), dict(kwargs)))
    return tuple(a), dict(k)


@dataclass
class Call:
    module: Any  # the module as called: a private copy where one was taken
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    via: str | None = None  # "torch.jit.trace" etc. when handed to an exporter
    live: Any = None  # the test's own module object: identifies calls of one module
    fingerprint: tuple[Any, ...] | None = None  # where no copy was taken
    training: bool = False
    methods: tuple[str, ...] = ()  # other methods torch.jit.trace_module was given (not checked)
    #: [Another Method] the method the test called
    method: str = "forward"
    #: [Raised In The Test] the exception the call raised
    raised: str | None = None
    #: [A Copy That Is Not The Module] why the live module is checked instead of a copy
    refused: str | None = None
    #: (each submodule's mode, the state_dict) at the call, put back on the live module
    state: Any = None
    #: the test's outputs of an eval-mode first call, for ``Recording.verify``
    outputs: Any = None
    #: the loop method ("generate") this forward call was made by
    within: str | None = None
    #: the arguments (positions and names) an earlier call returned: state, such as a KV cache
    handed: frozenset[int | str] = frozenset()
    #: while a method call is recorded: the forward calls it makes
    inner: list[Call] = field(default_factory=list, repr=False)
    #: [As Called] the module's digest at its first call (the verdict key's), with a cache on
    digest: str | None = None
    #: [As Called] no copy taken yet: ``module`` is the live one until a check runs
    deferred: bool = False
    #: [As Called] why the copy taken later is not of the module as called
    drifted: str | None = None

    @property
    def name(self) -> str:
        # A scripted module's type is RecursiveScriptModule; its original_name is the class.
        return getattr(self.module, "original_name", None) or type(self.module).__name__

    @property
    def label(self) -> str:
        """What ``module=`` names this call by: ``ResNet``, or ``ResNet.forward_features``."""
        return self.name if self.method == "forward" else f"{self.name}.{self.method}"

    def checked(self) -> torch.nn.Module:
        """The module to check; for another method, a module whose forward calls it."""
        if self.method == "forward":
            return self.module
        from ..backends.base import method_call

        # One wrapper per call: the shared prelude is keyed by the module's id.
        wrapper = self.__dict__.get("_wrapper")
        if wrapper is None or wrapper.module is not self.module:
            wrapper = self.__dict__["_wrapper"] = method_call(self.module, self.method)
        return wrapper

    def put_back(self) -> None:
        """Put back the live module's modes and state as at the call."""
        if self.state is None:
            return
        from ..reference import eager

        modes, saved = self.state
        for name, sub in self.live.named_modules(remove_duplicate=False):
            if name in modes and sub.training != modes[name]:
                sub.train(modes[name])  # its own train(), for modules that switch graphs
        eager.restore(self.live, saved, parameters=True)

    def changed_since(self) -> str | None:
        """Why the live module differs from when it was called."""
        if self.drifted is not None:
            return self.drifted
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
    selection: Any = None  # found by the test's first item
    #: (ScriptModule, the module it was scripted or traced from)
    compiled_from: list[tuple[Any, Any]] = field(default_factory=list)
    #: [Search Budget] the body's wall seconds, which the default budget is a multiple of
    body_s: float | None = None
    #: [As Called] the verdict cache's view of this test, where a copy was put off
    deferral: Deferral | None = None

    def pick(self, name: str | None) -> Call | None:
        """The call to check: the first outermost one, or the first of class ``name``."""
        if name is not None and "." in name:  # [Another Method] module="ResNet.forward_features"
            named = [c for c in self.calls if c.label == name]
        else:
            named = [c for c in (self.outermost() if name is None else self.calls) if name is None or c.name == name]
        # Prefer a module called with inputs it accepts over one whose calls all raised.
        return next((c for c in named if not self.raised_only(c)), named[0] if named else None)

    def verify(self, call: Call) -> None:
        """[A Copy That Is Not The Module] Replay the recorded call on the copy; if it does not
        give the test's outputs, check the live module instead."""
        from ..reference import eager
        from ..reference.compare import compare

        first = next((c for c in self.calls if c.live is call.live and c.outputs is not None), None)
        if first is None or first.deferred:  # verified when its copy is taken (``selection._take_deferred``)
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
        except Exception as exc:  # noqa: BLE001 - a copy that cannot replay the call is not the module
            why = f"its copy raises on the recorded call ({type(exc).__name__}: {str(exc)[:200]})"
        eager.restore(copy, before)
        if why is None:
            return
        eager.never_copy(first.live, why)  # later copies would be just as unlike it
        # The copy holds the state the call started from.
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
        """Class names of the other outermost modules the test called."""
        seen = {call.label}
        names = []
        for c in self.outermost():
            if (c.live is not call.live or c.method != call.method) and c.label not in seen:
                seen.add(c.label)
                names.append(c.label)
        # Never suggest modules with no parameters (Dropout, an activation).
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
        """The calls of modules that are not a submodule of another called module."""
        modules = {id(c.live): c.live for c in self.calls}
        origin = {id(artifact): original for artifact, original in self.compiled_from}
        inner = set()
        for m in modules.values():
            if isinstance(m, torch.nn.Module):
                for sub in m.modules():
                    if sub is not m:
                        inner.add(id(origin.get(id(sub), sub)))
        return [c for c in self.calls if id(c.live) not in inner] or self.calls
