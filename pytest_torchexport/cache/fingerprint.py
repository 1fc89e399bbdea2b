"""[Verdict Key] A check's cache key: everything but the files it ran.

``check_key`` digests the environment and every field of ``facts.CheckFacts``, including the
bytes of every parameter and buffer. What cannot be encoded faithfully raises ``Unkeyable``:
that check is not cached, which is always safe. See docs/howto-cache.md.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import platform
import re
import sys
import types
import weakref
from collections.abc import Mapping
from typing import Any

import torch

from .._compat import is_in_ci, package_version
from .facts import CheckFacts
from .sources import VERSIONED

#: Objects visited per key at most: a module whose attributes reach further is not cached.
MAX_NODES = 200_000
#: nn.Module attributes encoded on their own: the tensors and the submodules.
_MODULE_SKIP = frozenset({"_parameters", "_buffers", "_modules"})
#: torch.fx names generated code ``<eval_with_key>.N`` with a process-wide counter. N depends
#: on which checks ran before, not on this module, so it is dropped from the key.
_COUNTED = re.compile(r"(<eval_with_key>)\.\d+")


def _stable(text: str) -> str:
    return _COUNTED.sub(r"\1", text)


class Unkeyable(Exception):
    """The check's inputs cannot be encoded faithfully: it is not cached."""


def check_key(facts: CheckFacts) -> tuple[str, list[str]]:
    """(the key, files to hash besides those the check runs)."""
    h = _Hasher()
    h.add("environment", environment())
    files: list[str] = []
    h.add("backend", facts.backend, _spec_name(facts.spec), facts.device)
    backend_file = _spec_file(facts.spec)
    if backend_file:
        files.append(backend_file)  # a third-party backend's own code
    h.add("test", facts.test, facts.nodeid)
    options = facts.options
    for f in dataclasses.fields(options):
        h.add("option", f.name, getattr(options, f.name))
    if options.compare is not None:
        code = getattr(options.compare, "__code__", None)
        if code is not None:
            files.append(code.co_filename)
    h.add("size_budget", facts.size_budget)
    h.add("call", _call_digest(facts))
    return h.hexdigest(), files


def _call_digest(facts: CheckFacts) -> str:
    """The module, inputs and replayed sequence, hashed once for all the backends of one call."""
    memo = facts.digests.memo if facts.digests is not None else None
    slot = (facts.digests.call, id(facts.module)) if facts.digests is not None else None
    if memo is not None and slot in memo:
        return memo[slot]
    h = _Hasher()
    if facts.as_called is not None:
        h.add("as_called", facts.as_called)
    else:
        h.module(facts.module)
    h.add("method", facts.method)
    h.add("inputs", facts.inputs)
    h.add("sequence", facts.sequence)
    value = h.hexdigest()
    if memo is not None and slot is not None:
        memo[slot] = value
    return value


def module_digest(module: object) -> str:
    """[As Called] The module's part of a key, taken where the test calls it: its tree,
    attributes and tensors. Raises ``Unkeyable`` as ``check_key`` does."""
    h = _Hasher()
    h.module(module)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def environment() -> tuple[Any, ...]:
    """What every key of this process shares (computed once per process)."""
    versions = tuple((distribution, package_version(distribution)) for distribution, _ in VERSIONED)

    return (
        sys.version,
        sys.implementation.cache_tag,
        platform.platform(),
        platform.machine(),
        versions,
        plugin_digest(),
        is_in_ci(),
    )


def plugin_digest() -> str:
    """This plugin's sources: a development checkout changes them without a new version."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package, above cache/
    h = hashlib.sha256()
    for folder, dirs, names in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def _spec_name(spec: object) -> str:
    if isinstance(spec, str):
        return spec
    cls = spec if isinstance(spec, type) else type(spec)
    return f"{cls.__module__}:{cls.__qualname__}"


def _spec_file(spec: object) -> str | None:
    name = _spec_name(spec).partition(":")[0]
    if name.startswith("pytest_torchexport."):
        return None  # keyed by the plugin's digest
    module = sys.modules.get(name)
    return getattr(module, "__file__", None)


class _Hasher:
    """A canonical, type-tagged encoding of Python values into one sha256."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._nodes = 0

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def _w(self, *parts: object) -> None:
        for part in parts:
            self._h.update(str(part).encode("utf-8", "surrogatepass") + b"\x1f")

    def add(self, label: str, *values: object) -> None:
        self._w("@" + label)
        for value in values:
            self.value(value, {})

    def module(self, module: object) -> None:
        """The tree: every submodule's path, class, attributes, hooks and tensors (parameters and buffers)."""
        self._w("@module")
        if not isinstance(module, torch.nn.Module):
            self.value(module, {})
            return
        subs = list(module.named_modules(remove_duplicate=False))
        # A submodule reached again (a weakref in a hook) is named, not re-encoded.
        tree = {id(sub): f"module:{name}" for name, sub in reversed(subs)}
        done: set[int] = set()
        for name, sub in subs:
            self._w("sub", name, _qualname(type(sub)), getattr(sub, "original_name", ""))
            if id(sub) in done:
                self._w("shared", tree[id(sub)])
                continue
            done.add(id(sub))
            if isinstance(sub, (torch.jit.ScriptModule, torch.fx.GraphModule)):
                try:  # key the generated code: a ScriptModule's Python attributes are C++ handles
                    self._w("code", sub.code)
                except (AttributeError, RuntimeError):  # no forward (ScriptModule); not generated yet (fx)
                    self._w("no-code")
            if isinstance(sub, torch.jit.ScriptModule):
                self._w("training", sub.training)
            else:
                for key, value in sorted(vars(sub).items()):  # attribute order does not matter
                    if key in _MODULE_SKIP:
                        continue
                    self._w("attr", key)
                    if key.endswith("hooks") and isinstance(value, Mapping):
                        value = list(value.values())  # keyed by a process-wide handle counter
                    self.value(value, dict(tree))
            for key, tensor in (*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)):
                self._w("tensor", key)
                self.value(tensor, {})

    def value(self, value: object, seen: dict[int, Any]) -> None:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Unkeyable(f"more than {MAX_NODES} objects reachable from the module and its inputs")
        if isinstance(value, str):
            self._w(type(value).__name__, repr(_stable(value)))
            return
        if value is None or isinstance(value, (bool, int, float, complex, bytes)):
            self._w(type(value).__name__, repr(value))
            return
        if isinstance(value, enum.Enum):
            self._w("enum", _qualname(type(value)), value.name)
            return

        if isinstance(value, torch.Tensor):
            self._tensor(value)
            return
        if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format, torch.Size)):
            self._w(type(value).__name__, repr(value))
            return
        if id(value) in seen:
            self._w("ref", seen[id(value)])
            return
        if isinstance(value, (list, tuple, Mapping, set, frozenset)):
            # A plain container is keyed by its contents wherever it is met again: whether two
            # places hold one dict or two equal dicts (torch.fx nodes' ``meta``) can differ between
            # two runs of the same test. It is a ref only inside itself, where it would recurse.
            seen[id(value)] = f"#{len(seen)}"
            try:
                self._container(value, seen)
            finally:
                del seen[id(value)]
            return
        seen[id(value)] = f"#{len(seen)}"
        if isinstance(value, types.FunctionType):
            self._function(value, seen)
        elif isinstance(value, types.MethodType):
            self._w("method")
            self.value(value.__func__, seen)
            self.value(value.__self__, seen)
        elif isinstance(value, (type, types.BuiltinFunctionType, types.ModuleType)):
            self._w("named", _qualname(value))
        elif isinstance(value, weakref.ref):
            self._w("weakref")
            self.value(value(), seen)
        elif isinstance(value, functools.partial):
            self._w("partial")
            self.value((value.func, value.args, value.keywords), seen)
        elif isinstance(value, torch.nn.Module):
            # A module held in a plain attribute (a list, a dict): its own tree.
            self._w("module-attr", _qualname(type(value)))
            self.value(dict(vars(value)), seen)
        elif hasattr(value, "__dict__") or hasattr(type(value), "__slots__"):
            self._w("object", _qualname(type(value)))
            state = dict(vars(value)) if hasattr(value, "__dict__") else {}
            for slot in getattr(type(value), "__slots__", ()):
                if isinstance(slot, str) and hasattr(value, slot):
                    state[slot] = getattr(value, slot)
            self.value(state, seen)
        else:
            # A C object: its repr. One with an address differs every run, so the key only misses.
            self._w("opaque", _qualname(type(value)), repr(value))

    def _container(
        self,
        value: list[object] | tuple[object, ...] | Mapping[object, object] | set[object] | frozenset[object],
        seen: dict[int, Any],
    ) -> None:
        if isinstance(value, (list, tuple)):
            # Through the base class: a subclass may override len() or iteration (e3nn's
            # Irreps items raise NotImplementedError from __len__), and it may carry state.
            base: Any = list if isinstance(value, list) else tuple
            items = list(base.__iter__(value))
            self._w(_qualname(type(value)), len(items))
            for item in items:
                self.value(item, seen)
            if type(value) is not base and getattr(value, "__dict__", None):
                self.value(dict(vars(value)), seen)
        elif isinstance(value, Mapping):
            self._w(_qualname(type(value)), len(value))
            for key, item in value.items():
                self.value(key, seen)
                self.value(item, seen)
        else:
            self._w(type(value).__name__, len(value))
            for item in sorted(value, key=repr):
                self.value(item, seen)

    def _function(self, fn: types.FunctionType, seen: dict[int, Any]) -> None:
        """By name and code (its file is hashed too when it runs), with what it closes over."""
        self._w("function", fn.__module__, fn.__qualname__)
        self._code(fn.__code__)
        self.value(fn.__defaults__, seen)
        self.value(fn.__kwdefaults__, seen)
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents, seen)
            except ValueError:  # an empty cell
                self._w("empty-cell")

    def _code(self, code: types.CodeType) -> None:
        self._w("code", _stable(code.co_filename), code.co_firstlineno, code.co_code.hex(), code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self._w(type(const).__name__, repr(const))

    def _tensor(self, tensor: torch.Tensor) -> None:
        t = tensor.detach()
        self._w("tensor", t.dtype, tuple(t.shape), t.layout, t.device.type, t.requires_grad)
        if t.device.type == "meta":
            return
        try:
            if t.layout != torch.strided:
                t = t.to_dense()
            if t.is_quantized:
                self._w("q", t.qscheme())
                t = t.int_repr()
            t = t.cpu().contiguous().reshape(-1)
            if t.is_conj():
                t = t.resolve_conj()
            if t.is_neg():
                t = t.resolve_neg()
            self._h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        except Exception as exc:  # noqa: BLE001 - a tensor subclass whose bytes cannot be read
            raise Unkeyable(f"a {type(tensor).__name__} whose bytes cannot be read ({type(exc).__name__})") from None


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


__all__ = ["Unkeyable", "check_key", "environment", "module_digest", "plugin_digest"]
