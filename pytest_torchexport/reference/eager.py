"""The eager reference: the model run as served (eval, ``no_grad``, fresh inputs, seeded RNG).

A forward that updates a buffer makes each call depend on the ones before, so eager and every
artifact restart from the initial state on each input; ``snapshot`` and ``restore`` here are the
one way to copy and put back a module's state. See docs/architecture.md.
"""

from __future__ import annotations

import copy
import pickle
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from .. import freed
from .._compat import pytree
from ..cache import sources
from ..results.explain import is_user_file
from .compare import equal_trees

if TYPE_CHECKING:
    from typing import TypeAlias, TypeVar

    _T = TypeVar("_T")

    #: A ``sys.settrace`` function: it returns the one for the frame's next events, or None.
    _Tracer: TypeAlias = Callable[[FrameType, str, object], "_Tracer | None"]

EAGER_MODE = "eval, torch.no_grad()"


def fresh(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Deep copies of the inputs: no call sees another call's mutations."""
    return pytree.tree_map(
        lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else _deepcopy(v), (args, kwargs)
    )


def _deepcopy(value: _T) -> _T:
    """``copy.deepcopy``, copying non-leaf tensors (which deepcopy refuses) detached."""
    try:
        return copy.deepcopy(value)
    except RuntimeError:
        memo: dict[int, Any] = {id(t): t.detach().clone() for t in _tensors_in(value, set())}
        return copy.deepcopy(value, memo)


def _tensors_in(value: object, seen: set[int], depth: int = 0) -> list[torch.Tensor]:
    """The tensors an object holds, through containers and attributes."""
    if id(value) in seen or depth > 8:
        return []
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        items = vars(value).values()
    else:
        return []
    return [t for item in items for t in _tensors_in(item, seen, depth + 1)]


@dataclass
class EagerCall:
    outputs: Any
    inputs_after: tuple[tuple[Any, ...], dict[str, Any]]
    path: frozenset[tuple[str, int]] | None = None
    #: Wall seconds of the module call.
    seconds: float = 0.0
    #: Peak memory growth of the call (``Footprint``); None where not measured.
    peak_bytes: int | None = None
    #: [State After Every Input] The buffers this call updated, as it left them.
    state: dict[str, Any] = field(default_factory=dict)


def nbytes(tree: object) -> int:
    """Bytes of every tensor in a nested value."""
    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor))


def copy_module(module: torch.nn.Module) -> torch.nn.Module:
    """A private copy of ``module``, or ``module`` itself where a copy would differ.

    [As Called] Some copies select another graph (torchvision's ``DualGraphModule``)."""
    copied, _ = copy_as_called(module)
    return copied


def copy_as_called(module: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """``copy_module`` with the reason no copy was taken (None where one was)."""
    refused = _NOT_ITSELF.get(module) if isinstance(module, torch.nn.Module) else None
    if refused is not None:
        return module, refused
    try:
        # Without no_grad a copied ScriptModule's parameters are non-leaf and .to() warns.
        with torch.no_grad():
            copied = copy.deepcopy(module)
    except _COPY_REFUSED as exc:  # the module's own refusal; anything else is our bug
        return module, f"its deep copy raised {type(exc).__name__}: {str(exc)[:200]}"
    unlike = as_called(copied, module)
    return (module, unlike) if unlike else (copied, None)


#: The errors by which a module refuses ``copy.deepcopy``.
_COPY_REFUSED = (TypeError, RuntimeError, NotImplementedError, copy.Error, pickle.PicklingError)

#: [As Called] Modules whose copies gave other outputs: they are never copied again.
_NOT_ITSELF: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def never_copy(module: torch.nn.Module, why: str) -> None:
    """Make ``copy_module(module)`` return ``module`` itself from now on."""
    _NOT_ITSELF[module] = why


def as_called(copied: torch.nn.Module, original: torch.nn.Module) -> str | None:
    """Give ``copied`` every submodule's mode of ``original``; why it still differs, or None."""
    if not isinstance(original, torch.nn.Module) or not isinstance(copied, torch.nn.Module):
        return None
    pairs = list(zip(original.named_modules(remove_duplicate=False), copied.named_modules(remove_duplicate=False)))
    if [name for (name, _), _ in pairs] != [name for _, (name, _) in pairs]:
        return f"its deep copy ({type(copied).__name__}) has other submodules than the module the test called"
    # Parents first: a parent's train() sets its children.
    for (_, mine), (_, theirs) in pairs:
        if theirs.training != mine.training:
            theirs.train(mine.training)
    for (name, mine), (_, theirs) in pairs:
        where = _class_name(mine) + (f" at {name!r}" if name else "")
        if theirs.training != mine.training:
            return (
                f"its deep copy puts {where} in {'training' if theirs.training else 'eval'} mode, where the test "
                f"called it in {'training' if mine.training else 'eval'} mode, and its train() does not put it back"
            )
        if isinstance(mine, torch.fx.GraphModule) and _fx_code(mine) != _fx_code(theirs):
            return (
                f"its deep copy of {where} runs another graph than the module the test called (its __deepcopy__ or "
                "__init__ selects a graph, as a train/eval DualGraphModule does)"
            )
    return None


def _class_name(module: torch.nn.Module) -> str:
    """The user's class name; fx makes a renamed ``GraphModuleImpl`` subclass per instance."""
    return next((t.__name__ for t in type(module).__mro__ if "GraphModuleImpl" not in t.__qualname__), "?")


def _fx_code(module: Any) -> str | None:
    try:
        return module.code
    except RuntimeError:  # a GraphModule not yet recompiled has no code
        return None


def module_name(module: torch.nn.Module) -> str:
    """The user's class name, also for a scripted module."""
    return getattr(module, "original_name", None) or type(module).__name__


class ModelRaised(Exception):
    """The user's module raised in eager's call: an input the model refuses, not a plugin error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)  # pickle rebuilds it from args
        self.error = error

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


#: How a row says eager ran the live module, before the reason: the recording's explanation
#: reads it back from a reused row (``selection``).
RAN_THE_LIVE_MODULE = "eager ran the module the test called, not a copy: "


class Eager:
    """A private eval-mode copy of the module, restored to its initial state after each call."""

    def __init__(self, module: torch.nn.Module, device: str) -> None:
        self.was_training = bool(getattr(module, "training", False))
        copied, refused = copy_as_called(module)
        #: Why eager runs the test's own module rather than a copy; None for a copy.
        self.refused = refused
        with torch.no_grad():
            self.module = copied.to(device).eval()
        self.device = device
        self._initial = snapshot(self.module, parameters=True) or {}
        #: The module's non-tensor attributes, put back after each call.
        self._wiring = Wiring(self.module)
        self._spare: torch.nn.Module | None = None

    def keep_spare(self) -> None:
        """[Spare Copy] Keep one copy of the module that children forked later inherit for
        their exports, instead of each copying the module."""
        if self._spare is not None:
            return
        self._wiring.put_back()
        self._spare = copy_module(self.module)

    def take_spare(self) -> torch.nn.Module | None:
        """The spare copy, once (a second export copies anew), or None."""
        spare, self._spare = self._spare, None
        return spare

    def state_changed(self) -> list[str]:
        now = self.module.state_dict()
        return [k for k, v in self._initial.items() if k in now and not equal_trees(v, now[k])]

    def restore(self, kept: dict[str, Any] | None = None) -> list[str]:
        """Put back the initial state and ``Wiring``; returns the attributes put back."""
        restore(self.module, self._initial, parameters=True, kept=kept)
        changed = self._wiring.put_back()
        if changed:  # a rebound tensor may have been updated in place
            restore(self.module, self._initial, parameters=True)
        return changed

    def __call__(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        rng_seed: int = 0,
        trace_lines: bool = False,
        restore: bool = True,
        measure: bool | None = None,
    ) -> EagerCall:
        """One call on fresh copies of the inputs; raises ``ModelRaised`` where the module raises.
        Memory is measured on one call only by default: measuring resets the high-water mark."""
        if measure is None:
            measure = trace_lines and not restore
        a, k = fresh(args, kwargs)
        # [Sources] The verdict cache needs the files the call ran.
        tracer = _LineTracer() if trace_lines else (sources.FileTracer() if sources.active() else None)
        footprint = Footprint(self.device) if measure else None
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            seed_rng(rng_seed, self.device)
            if footprint:
                footprint.start()
            if tracer:
                tracer.start()
            t0 = time.perf_counter()
            try:
                out = self.module(*a, **k)
            except Exception as exc:  # noqa: BLE001 - a user's model may raise anything; typed so callers tell it from ours
                if restore:  # a call that raised may leave a hook behind
                    self.restore()
                raise ModelRaised(exc) from exc
            finally:
                seconds = time.perf_counter() - t0
                if tracer:
                    tracer.stop()
        peak = footprint.stop() if footprint else None
        state: dict[str, Any] = {}
        if restore:
            self.restore(kept=state)
        return EagerCall(out, (a, k), getattr(tracer, "lines", None), seconds=seconds, peak_bytes=peak, state=state)

    def again(self, args: tuple[Any, ...], kwargs: dict[str, Any], state: dict[str, Any]) -> object:
        """[State After Every Input] The outputs of a call starting from ``state``."""
        with torch.no_grad():
            restore(self.module, state)
        return self(args, kwargs).outputs


class Wiring:
    """Each submodule's attributes (hooks, flags, an instance-level ``forward``), to put back.
    transformers 4.57 wraps submodules' ``forward`` during a call; a call that raised leaves them wrapped."""

    def __init__(self, module: torch.nn.Module) -> None:
        self._kept = [(sub, {k: (v, _contents(v)) for k, v in vars(sub).items()}) for sub in module.modules()]

    def put_back(self) -> list[str]:
        """Put back what changed; returns the ``Class.attribute`` names put back."""
        changed = []
        for sub, kept in self._kept:
            now = vars(sub)
            if now.keys() != kept.keys():
                for name in [n for n in now if n not in kept]:
                    del now[name]
                    changed.append(f"{type(sub).__name__}.{name}")
            for name, (value, contents) in kept.items():
                if now.get(name, _ABSENT) is not value:
                    now[name] = value
                    changed.append(f"{type(sub).__name__}.{name}")
                # Most of a module's dicts (its hooks) are empty: skip comparing them.
                if contents is not None and (value or contents) and not _same_contents(value, contents):
                    value.clear()
                    if isinstance(value, list):
                        value.extend(contents)
                    else:
                        value.update(contents)
                    changed.append(f"{type(sub).__name__}.{name}")
        return changed


_ABSENT = object()


def _contents(value: object) -> dict[object, object] | list[object] | set[object] | None:
    """A shallow copy of a container, restored in place (a hook's handle holds its dict)."""
    return copy.copy(value) if isinstance(value, (dict, list, set)) else None


def _same_contents(value: Any, contents: Any) -> bool:
    if isinstance(value, dict):
        return list(value) == list(contents) and all(value[k] is contents[k] for k in contents)
    if isinstance(value, set):
        return value == contents
    return len(value) == len(contents) and all(a is b for a, b in zip(value, contents))


def run_artifact(
    run: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], rng_seed: int = 0
) -> tuple[Any, Any]:
    """Run an artifact the way eager ran: fresh inputs, same RNG seed."""
    a, k = fresh(args, kwargs)
    with torch.random.fork_rng(devices=[]):
        seed_rng(rng_seed, "cpu")
        out = run(a, k)
    return out, (a, k)


def seed_rng(seed: int, device: str) -> None:
    """Seed the generators a run on ``device`` uses; ``torch.manual_seed`` is slow (it queues
    lazy seeding of every accelerator)."""
    torch.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)


class Footprint:
    """How far one call grows the process's memory at its peak, in bytes: Linux's ``VmHWM``
    after a reset through ``/proc/self/clear_refs``, or CUDA's allocator peak; else None."""

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        self.device = device
        self._before: int | None = None
        self._file = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            return
        # [Freed Memory] glibc reuses memory earlier calls freed, hiding the call's growth.
        freed.release(collect=False)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return
        before = _proc_status()
        if "VmRSS" in before:
            self._before = before["VmRSS"]
            self._file = before.get("RssFile", 0)

    def stop(self) -> int | None:
        if self._before is None:
            return None
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self._before)
        after = _proc_status()
        if "VmHWM" not in after:
            return None
        # Library pages the call mapped in are not memory it holds.
        code = max(0, after.get("RssFile", 0) - self._file)
        return max(0, after["VmHWM"] - self._before - code)


def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssFile in bytes; empty without /proc."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith((b"VmRSS:", b"VmHWM:", b"RssFile:")):
                    key, value = line.split(b":", 1)
                    found[key.decode()] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return found


class _LineTracer:
    """Records the (file, line) pairs of the user's code that ran."""

    def __init__(self) -> None:
        self.lines: frozenset[tuple[str, int]] = frozenset()
        self._lines: set[tuple[str, int]] = set()
        self._user: dict[str, bool] = {}
        self._previous: Any = None

    def _global(self, frame: FrameType, event: str, arg: object) -> _Tracer | None:
        filename = frame.f_code.co_filename
        user = self._user.get(filename)
        if user is None:
            user = self._user[filename] = is_user_file(filename)
        return self._local if user else None

    def _local(self, frame: FrameType, event: str, arg: object) -> _Tracer:
        if event == "line":
            self._lines.add((frame.f_code.co_filename, frame.f_lineno))
        return self._local

    def start(self) -> None:
        self._previous = sys.gettrace()
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(self._previous)
        self.lines = frozenset(self._lines)
        sources.note(self._user)


# --- a module's state ---


def snapshot(module: object, *, parameters: bool = False) -> dict[str, torch.Tensor] | None:
    """A copy of ``module``'s buffers (or whole ``state_dict``); None for a non-module."""
    if not isinstance(module, torch.nn.Module):
        return None
    tensors = module.state_dict() if parameters else dict(module.named_buffers())
    return {k: v.detach().clone() for k, v in tensors.items()}


def restore(
    module: object,
    saved: dict[str, torch.Tensor] | None,
    *,
    parameters: bool = False,
    kept: dict[str, torch.Tensor] | None = None,
) -> None:
    """Put back what ``snapshot`` took. [State After Every Input] ``kept`` gets what changed."""
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
    """Copy ``initial`` into ``target``'s buffers; a wrapper's prefixed names match by suffix."""
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
