"""The eager reference: how the model runs when served, and what it does besides returning.

Eager runs in eval mode under ``torch.no_grad()`` (fast paths such as
``nn.TransformerEncoder``'s differ from grad mode), on fresh copies of the inputs, with
the RNG seeded. Each call can also report which lines of the user's own code ran (the
control-flow *path*), and whether it mutated its inputs or its buffers.

A module's state, put back: a forward that updates a buffer (a running sum, a step counter)
makes each call depend on the calls before it. Eager restarts from its initial state on every
input, so the artifact must too, or it would be judged on a longer history than eager.
Exporters that run forward (``torch.jit.trace``) leave the exported module with the state
*after* that run, which would then be saved: the state is put back right after the export,
before the artifact is saved and loaded.

[One Home] Every snapshot of a module's state and its restore is taken here (``snapshot``,
``restore``, ``reset_state``): eager's copy (``Eager``), the module an export runs
(``exporting.py``), an artifact's module between inputs (``search.py``, ``side_effects.py``)
and the float64 copy (``noise.py``).
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
from typing import Any

import torch

from .. import freed
from .._compat import pytree
from ..cache import sources
from ..results.explain import is_user_file
from .compare import equal_trees

EAGER_MODE = "eval, torch.no_grad()"


def fresh(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Deep copies of the inputs: no call sees another call's mutations."""
    return pytree.tree_map(
        lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else _deepcopy(v), (args, kwargs)
    )


def _deepcopy(value: Any) -> Any:
    """``copy.deepcopy``, also of an object holding tensors with autograd history: a cache a test built
    without ``no_grad`` (transformers' ``decoder_model_past`` tests) refuses deepcopy ("Only Tensors created
    explicitly by the user (graph leaves) support the deepcopy protocol"), so its tensors are copied detached."""
    try:
        return copy.deepcopy(value)
    except RuntimeError:
        memo: dict[int, Any] = {id(t): t.detach().clone() for t in _tensors_in(value, set())}
        return copy.deepcopy(value, memo)


def _tensors_in(value: Any, seen: set[int], depth: int = 0) -> list[torch.Tensor]:
    """The tensors an object holds, through containers and attributes (a cache's layers)."""
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
    #: Wall seconds of the module call (with the line tracer when it ran).
    seconds: float = 0.0
    #: Bytes the call grew the process by at its peak (``Footprint``); None where not measured.
    peak_bytes: int | None = None
    #: [State After Every Input] The buffers this call updated, as it left them (a call made with
    #: ``restore=True``); empty where it updated none, whatever the recorded call did.
    state: dict[str, Any] = field(default_factory=dict)


def nbytes(tree: Any) -> int:
    """Bytes of every tensor in a nested value (inputs or outputs): the one measure the memory
    budget, the recording, the shared search's held outputs and the float64 store use."""
    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor))


def copy_module(module: torch.nn.Module) -> torch.nn.Module:
    """A private copy of ``module`` as it is now, or ``module`` itself where no copy is one.

    [As Called] A deep copy is the module only where every submodule is in the mode the
    original's is in and runs the same code: torchvision's ``DualGraphModule``
    (``create_feature_extractor``) re-runs its ``__init__`` in ``__deepcopy__``, which calls
    ``self.train()`` and selects the train graph, so its copy of an ``.eval()`` model ran
    BatchNorm on batch statistics. ``as_called`` puts each submodule's mode back through its
    own ``train()`` (which re-selects the graph); a copy still unlike the original is never
    used."""
    copied, _ = copy_as_called(module)
    return copied


def copy_as_called(module: torch.nn.Module) -> tuple[torch.nn.Module, str | None]:
    """``copy_module`` with the reason no copy was taken (None where one was)."""
    refused = _NOT_ITSELF.get(module) if isinstance(module, torch.nn.Module) else None
    if refused is not None:
        return module, refused
    try:
        # Under no_grad: a deep-copied ScriptModule's parameters would otherwise be
        # non-leaf tensors, and .to() would warn on reading their .grad.
        with torch.no_grad():
            copied = copy.deepcopy(module)
    except _COPY_REFUSED as exc:  # the module's own refusal; anything else is a bug and surfaces
        return module, f"its deep copy raised {type(exc).__name__}: {str(exc)[:200]}"
    unlike = as_called(copied, module)
    return (module, unlike) if unlike else (copied, None)


#: How a module refuses ``copy.deepcopy``: pickling's TypeError ("cannot pickle ..."), torch's
#: RuntimeError (a non-leaf tensor, a ScriptModule's C++ state; RecursionError too),
#: NotImplementedError from a ``__deepcopy__``/``__reduce_ex__``, ``copy.Error``, PicklingError.
_COPY_REFUSED = (TypeError, RuntimeError, NotImplementedError, copy.Error, pickle.PicklingError)

#: [As Called] Modules whose copies were found not to be them (other outputs on the recorded
#: call, ``Recording.verify``): every later copy, eager's and each export's, is the module itself.
_NOT_ITSELF: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def never_copy(module: torch.nn.Module, why: str) -> None:
    """``copy_module(module)`` gives ``module`` itself from now on (its copies are not it)."""
    _NOT_ITSELF[module] = why


def as_called(copied: Any, original: Any) -> str | None:
    """Give ``copied`` every submodule's mode of ``original``; why it still differs, or None."""
    if not isinstance(original, torch.nn.Module) or not isinstance(copied, torch.nn.Module):
        return None
    pairs = list(zip(original.named_modules(remove_duplicate=False), copied.named_modules(remove_duplicate=False)))
    if [name for (name, _), _ in pairs] != [name for _, (name, _) in pairs]:
        return f"its deep copy ({type(copied).__name__}) has other submodules than the module the test called"
    # Parents first: a parent's train() sets its children, which are then put right in turn.
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


def _class_name(module: Any) -> str:
    """The user's class: fx makes a ``GraphModuleImpl`` subclass per instance and renames it."""
    return next((t.__name__ for t in type(module).__mro__ if "GraphModuleImpl" not in t.__qualname__), "?")


def _fx_code(module: Any) -> str | None:
    try:
        return module.code
    except RuntimeError:  # "Code has not been generated!": a GraphModule not recompiled yet has none to compare
        return None


def module_name(module: torch.nn.Module) -> str:
    """The user's class name, also for a scripted module (not RecursiveScriptModule)."""
    return getattr(module, "original_name", None) or type(module).__name__


class ModelRaised(Exception):
    """The user's module raised in eager's call (``error``, also the ``__cause__``): an input the
    model refuses, legitimately. Anything else out of ``Eager.__call__`` is the plugin's own
    error around the call and is never taken for the model's refusal."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)  # args: what pickle rebuilds it from (a forked check sends it back)
        self.error = error

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


class Eager:
    """A private eval-mode copy of the module, restored to its initial state after each call."""

    def __init__(self, module: torch.nn.Module, device: str) -> None:
        self.was_training = bool(getattr(module, "training", False))
        copied, refused = copy_as_called(module)
        #: Why eager runs the test's own module rather than a copy (None: a copy); a stage says so (prelude.py).
        self.refused = refused
        with torch.no_grad():
            self.module = copied.to(device).eval()
        self.device = device
        self._initial = snapshot(self.module, parameters=True) or {}
        #: What a call may leave on the module besides its tensors, as the test called it: put back
        #: with the state, so no call of the plugin's own changes the module the artifacts are made from.
        self._wiring = Wiring(self.module)
        self._spare: torch.nn.Module | None = None

    def keep_spare(self) -> None:
        """[Spare Copy] A copy of the module as it is now, for a forked check's export: made
        once in the test's process (while its first check's child copies its own), each child
        forked after it inherits it, its own by fork, instead of copying the module itself
        (e3nn's network copies in 0.6-0.8 s: four backends' children paid it four times).
        Kept in the parent untouched (``take_spare`` is for a child). The module's wiring is put
        back first: the copy is of the module the test called, whatever eager's calls left.
        Once: a spare already kept (the shared capture's, made before its child) is kept."""
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
        """The initial state put back, and the module's wiring (``Wiring``); ``kept``: filled with
        what the last call changed (the module-level ``restore``). Returns the attributes put back."""
        restore(self.module, self._initial, parameters=True, kept=kept)
        changed = self._wiring.put_back()
        if changed:  # a tensor the call rebound is back: the one it replaced may have been updated in place
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
        """One call on fresh copies of the inputs. Raises ``ModelRaised`` where the module raises.

        ``measure``: also measure the call's peak memory (``Footprint``, budget.py reads it).
        By default only the replay of the recorded call is measured, the one call made with
        ``trace_lines=True, restore=False`` (engine/pipeline.py): the measurement resets the process's
        high-water mark, which every call doing so would make meaningless for the others.
        """
        if measure is None:
            measure = trace_lines and not restore
        a, k = fresh(args, kwargs)
        # [Sources] Without the line tracer, a file tracer when the verdict cache collects.
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
                if restore:  # a call that raised half-way leaves what it set up (a wrapped forward, a hook) behind
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

    def again(self, args: tuple[Any, ...], kwargs: dict[str, Any], state: dict[str, Any]) -> Any:
        """[State After Every Input] The outputs of a second call on the same inputs, from ``state``
        (the buffers the first call left); the initial state is put back after."""
        with torch.no_grad():
            restore(self.module, state)
        return self(args, kwargs).outputs


class Wiring:
    """What a call may change on a module besides its tensors' values: every submodule's own
    attributes (hooks, a ``forward`` wrapped by an instance attribute, flags, Python values) and
    the dicts that hold its parameters, buffers, submodules and hooks, as they were when taken.

    transformers 4.57's output capture wraps submodules' ``forward`` for the length of a call
    and unwraps them only when it returns: a call at a size the model rejects left the wrappers
    on eager's module, and each export's copy then called into eager's own parameters (trace:
    "Cannot insert a Tensor that requires grad as a constant" instead of torch's own message).
    ``put_back`` undoes any such change, objects by identity and dicts, lists and sets by their
    contents, so the module is again the one the test called.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self._kept = [(sub, {k: (v, _contents(v)) for k, v in vars(sub).items()}) for sub in module.modules()]

    def put_back(self) -> list[str]:
        """Put back what changed; the ``Class.attribute`` names put back (empty: nothing had)."""
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
                # Most of a module's dicts (its hooks) are empty: nothing to compare.
                if contents is not None and (value or contents) and not _same_contents(value, contents):
                    value.clear()
                    if isinstance(value, list):
                        value.extend(contents)
                    else:
                        value.update(contents)
                    changed.append(f"{type(sub).__name__}.{name}")
        return changed


_ABSENT = object()


def _contents(value: Any) -> Any:
    """A shallow copy of a dict's, list's or set's contents, put back in place (a hook's handle
    holds its dict); None for any other value, put back by identity only."""
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
    """Seed the generators a run on ``device`` uses.

    ``torch.manual_seed`` also queues lazy seeding of CUDA, MTIA and XPU, each recording a
    formatted stack: about 1.5 ms a call, which on CPU would double the cost of an example.
    """
    torch.default_generator.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)


class Footprint:
    """[Peak Reset] How far one call grows the process's memory at its peak, in bytes.

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the resident high-water mark
    (``VmHWM``) to the current resident size; ``VmHWM`` after the call minus ``VmRSS`` before
    it is the call's peak growth, transient buffers included (its outputs too, which the
    check holds), less the library pages the call mapped in (``RssFile``). About 0.2 ms in
    all. The reset lowers the process's own ``ru_maxrss`` from then on, so the process
    forgets peaks from before it: in a forked check (the default) the child has only just
    started, so nothing of the check's own is lost. On CUDA the
    caching allocator's peak is read instead. Elsewhere (no ``/proc``, or a kernel that
    refuses the reset) ``stop()`` gives None and the budget goes by bytes and time alone.
    """

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
        # [Freed Memory] What earlier calls freed, glibc keeps for reuse: the test body's own
        # forward left its activations' blocks there, so the replay grew the resident size by
        # nothing (MONAI's DenseNet169 3-D measured 0.1 MB). Handed back first, the replay's
        # growth is what it holds.
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
        # Pages of libraries the first call faulted in count in the resident size, not in
        # what the call holds: a small convnet's first call maps ~10 MB of kernels' code.
        code = max(0, after.get("RssFile", 0) - self._file)
        return max(0, after["VmHWM"] - self._before - code)


def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM and RssFile of this process in bytes; empty where /proc is not there."""
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
    """Records (file, line) of the user's own code that ran: the control-flow path."""

    def __init__(self) -> None:
        self.lines: frozenset[tuple[str, int]] = frozenset()
        self._lines: set[tuple[str, int]] = set()
        self._user: dict[str, bool] = {}
        self._previous: Any = None

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        filename = frame.f_code.co_filename
        user = self._user.get(filename)
        if user is None:
            user = self._user[filename] = is_user_file(filename)
        return self._local if user else None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            self._lines.add((frame.f_code.co_filename, frame.f_lineno))
        return self._local

    def start(self) -> None:
        self._previous = sys.gettrace()
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(self._previous)
        self.lines = frozenset(self._lines)
        sources.note(self._user)  # every file a frame started in (sources.py)


# --- [One Home] a module's state: snapshot and restore ------------------------------------------------


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
