"""Each kind of call a test makes of its module, checked with its own inputs.

A prefill and a decode step are two kinds: kinds differ in which arguments carry tensors and
how, never in sizes or values, which the search varies anyway. See docs/howto-calls.md.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

from .._compat import pytree, torch
from .calls import VALUES, Call

#: Argument names that hold a KV cache in common LLM libraries.
CACHE_NAMES = frozenset({"past_key_values", "past_key_value", "layer_past", "past", "cache_params", "mems", "cache"})


@dataclass
class Kind:
    """The calls of one kind, in the order the test made them."""

    key: tuple[Any, ...]
    #: argument name -> what it carries: how kinds are told apart in words
    entries: dict[str, Any]
    cache: bool  # an argument holds a non-empty KV cache: a decode step
    calls: list[Call] = field(default_factory=list)
    name: str | None = None  # the row's "call"; None where the test made one kind only


def group(calls: list[Call]) -> list[Kind]:
    """``calls`` (of one module and method) by kind, in the order of each kind's first call."""
    kinds: dict[tuple[Any, ...], Kind] = {}
    for call in calls:
        entries, cache = _entries(call)
        key = tuple(sorted(entries.items()))
        kind = kinds.get(key)
        if kind is None:
            kind = kinds[key] = Kind(key, entries, cache)
        kind.calls.append(call)
    found = list(kinds.values())
    if len(found) > 1:
        _name(found)
    return found


def register_caches(*values: object) -> None:
    """Register any transformers cache among ``values`` as a pytree node, so its tensors are
    inputs every backend sees. Caches other than ``DynamicCache`` (``EncoderDecoderCache``,
    ``StaticCache``) need transformers 5.x, whose exporter registers them."""
    if "transformers" not in sys.modules:
        return

    for value in pytree.tree_leaves(values):  # a cache not yet registered is a leaf
        if not _is_cache(value):
            continue
        names = {c.__name__ for c in type(value).__mro__}
        if "DynamicCache" in names:
            from transformers.integrations.executorch import register_dynamic_cache_export_support

            register_dynamic_cache_export_support()  # a no-op once registered
        else:
            _register_with_exporter(type(value))


def remember_returned(out: object, returned: dict[int, Any], depth: int = 4) -> None:
    """Note every object ``out`` holds, weakly: one handed back to a later call is state."""
    if depth < 0 or isinstance(out, (torch.Tensor, *VALUES)):
        return
    if type(out) not in (list, tuple, dict):
        try:
            returned[id(out)] = weakref.ref(out)
        except TypeError:  # an object that refuses weak references: not noted
            pass
    if isinstance(out, (list, tuple)):
        parts: Any = out
    elif isinstance(out, dict):
        parts = out.values()
    else:
        parts = [v for k, v in vars(out).items() if not k.startswith("_")] if hasattr(out, "__dict__") else []
    for part in parts:
        remember_returned(part, returned, depth - 1)


def _register_with_exporter(cls: type) -> None:
    """Register a cache class as transformers' own exporter does."""
    try:
        from transformers.exporters.exporter_dynamo import register_pytree_node
    except ImportError:  # transformers before 5.x: the exporter's refusal is the verdict
        return
    register_pytree_node(cls)  # a no-op once registered


def _is_cache(value: object) -> bool:
    """A transformers ``Cache`` (registered as a pytree node or not)."""
    return any(c.__name__ == "Cache" and c.__module__.startswith("transformers.") for c in type(value).__mro__)


def _entries(call: Call) -> tuple[dict[str, Any], bool]:
    """Each argument that carries a tensor or a non-empty cache: its name and structure."""
    entries: dict[str, Any] = {}
    cache = False
    handed = _handed_names(call)
    for name, value in _named(call).items():
        leaves, spec = pytree.tree_flatten(value)
        carried: list[str | None] = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                carried.append(f"{leaf.dim()}-D")
            elif (_is_cache(leaf) and _cache_length(leaf)) or (name in handed and not isinstance(leaf, VALUES)):
                carried.append(type(leaf).__name__)  # state handed back
            else:
                carried.append(None)
        if not any(c is not None for c in carried):
            continue  # None, a flag, an empty cache: nothing to export
        # An empty cache (a static cache before its prefill: allocated, nothing written) is no decode step.
        empty = _is_cache(value) and not _cache_length(value)
        cache = cache or name in handed or (not empty and (name in CACHE_NAMES or _is_cache(value)))
        shape = carried[0] if spec.is_leaf() else (_container(spec), *carried)
        entries[name] = shape
    return entries, cache


def _named(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (``arg 0`` where the signature cannot say)."""
    named: dict[str, Any] = {}
    try:
        bound = inspect.signature(getattr(call.module, call.method)).bind(*call.args, **call.kwargs)
    except (TypeError, ValueError, AttributeError):
        named.update({f"arg {i}": a for i, a in enumerate(call.args)})
        named.update(call.kwargs)
        return named
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named.update({f"{name}[{i}]": a for i, a in enumerate(value)})
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


def _handed_names(call: Call) -> set[str]:
    """The names of the arguments handed back from an earlier call's outputs."""
    names = {key for key in call.handed if isinstance(key, str)}
    positions = [key for key in call.handed if isinstance(key, int)]
    if positions:
        try:
            params = list(inspect.signature(getattr(call.module, call.method)).parameters)
        except (TypeError, ValueError, AttributeError):
            params = []
        names.update(params[i] if i < len(params) else f"arg {i}" for i in positions)
    return names


def _cache_length(cache: Any) -> int:
    try:
        return int(cache.get_seq_length())
    except Exception:  # noqa: BLE001 - another version's cache class: count it as non-empty
        return 1


def _container(spec: pytree.TreeSpec) -> str:
    """A short, stable word for a pytree structure: ``tuple of 2``, ``DynamicCache of 4``."""
    kind = getattr(spec, "type", None)
    return f"{getattr(kind, '__name__', kind)} of {spec.num_leaves}"


def _name(kinds: list[Kind]) -> None:
    """Each kind's name: prefill/decode where a cache tells them apart, else what differs."""
    decoding = any(k.cache for k in kinds) and not all(k.cache for k in kinds)
    for index, kind in enumerate(kinds):
        said = _differs(kind, kinds) or f"call kind {index + 1}"
        if not decoding:
            kind.name = said
            continue
        base = "decode" if kind.cache else "prefill"
        alike = [k for k in kinds if k.cache == kind.cache]
        kind.name = base if len(alike) == 1 else f"{base} ({_differs(kind, alike) or f'kind {alike.index(kind) + 1}'})"


def _differs(kind: Kind, kinds: list[Kind]) -> str:
    """What tells ``kind`` from the others: an argument it alone has, or carries otherwise."""
    parts = []
    for name, shape in kind.entries.items():
        others = [k.entries.get(name) for k in kinds if k is not kind]
        if all(o == shape for o in others):
            continue
        if all(o is not None for o in others):
            parts.append(f"{name} {shape}" if isinstance(shape, str) else f"{name} as {shape[0]}")
        else:
            parts.append(f"with {name}")
    if parts:
        return ", ".join(parts)
    missing = sorted({n for k in kinds if k is not kind for n in k.entries if n not in kind.entries})
    return f"without {', '.join(missing)}" if missing else ""


__all__ = ["CACHE_NAMES", "Kind", "group", "register_caches"]
