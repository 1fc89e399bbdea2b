"""Each kind of call a test makes of its module, checked with its own inputs.

A test that calls a model with and without ``past_key_values`` (a prefill and a decode step),
or with a 2-D and a 4-D attention mask, makes two kinds of call: different arguments carry
tensors, or the same argument carries them in another structure. Each kind is exported and
checked on its own recorded call; the row's ``call`` names it ("prefill", "decode", or what
tells it from the others: "attention_mask 4-D", "with token_type_ids"). Calls of one kind
differ only in sizes and values, which the input search varies anyway.

What carries a tensor decides, never the Python values around it: ``use_cache=True`` or an
empty cache (what ``generate`` hands its first forward call) is no input to export, so a
prefill through ``generate`` and a plain ``model(ids)`` are one kind.

A KV cache goes to the exporters as they take it: transformers' ``DynamicCache`` is registered
as a pytree node with transformers' own ``register_dynamic_cache_export_support`` (what its
``torch.export`` helpers do), the first time a recorded call holds one, so that the recorded
call's cache is copied at the call (a decode step appends to the cache it is handed, in place)
and its tensors are inputs every backend sees. A backend that cannot take it says so in its
own verdict. An ``EncoderDecoderCache`` (what BERT as a decoder, T5, Whisper return when called
with ``encoder_hidden_states``) is registered with transformers' own exporter's
``exporters.exporter_dynamo.register_pytree_node`` where the installed transformers has it
(5.x; its flatten keeps both caches' tensors and ``is_updated``, and its unflatten gives a
cache the model takes back as ``past_key_values`` with the same outputs); where it has not,
the cache stays unregistered and the exporters' own refusal is the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .calls import VALUES, Call

#: Argument names that hold a KV cache in the libraries people export LLMs from (transformers'
#: ``past_key_values``, its older ``layer_past``/``past``, Mamba's ``cache_params``, ...).
CACHE_NAMES = frozenset({"past_key_values", "past_key_value", "layer_past", "past", "cache_params", "mems", "cache"})


@dataclass
class Kind:
    """The calls of one kind, in the order the test made them, and what they are called."""

    key: tuple[Any, ...]
    #: argument name -> what it carries (the ``key``'s entries): how kinds are told apart in words
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


def register_caches(*values: Any) -> None:
    """Make a transformers ``DynamicCache`` or ``EncoderDecoderCache`` among ``values``
    (arguments, or outputs: a prefill returns the cache the test's decode step then extends in
    place) a pytree node (see the module's docstring)."""
    import sys

    if "transformers" not in sys.modules:
        return  # no transformers object can be among them
    from .._compat import pytree  # deferred: imports torch (the plugin's import stays torch-free)

    for value in pytree.tree_leaves(values):  # a cache not yet registered is a leaf
        if not _is_cache(value):
            continue
        names = {c.__name__ for c in type(value).__mro__}
        if "DynamicCache" in names:
            from transformers.integrations.executorch import register_dynamic_cache_export_support

            register_dynamic_cache_export_support()  # a no-op once registered
        elif "EncoderDecoderCache" in names:
            _register_encoder_decoder(type(value))


def remember_returned(out: Any, returned: dict[int, Any], depth: int = 4) -> None:
    """Note in ``returned`` (id -> a weak reference) every object ``out`` holds, down to ``depth``
    levels: one handed back to a later call is state (a cache). Weakly, so the test's outputs are
    freed as they would be without the plugin; plain containers and tensors are looked into, not
    noted (a legacy tuple cache is known by its argument's name)."""
    import weakref

    import torch

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


def _register_encoder_decoder(cls: type) -> None:
    """``cls`` (an ``EncoderDecoderCache``) a pytree node the way transformers' own exporter
    makes it one, where the installed transformers has that exporter."""
    try:
        from transformers.exporters.exporter_dynamo import register_pytree_node
    except ImportError:  # an older transformers: no exportable form of its own; the exporter says so
        return
    register_pytree_node(cls)  # a no-op once registered


def _is_cache(value: Any) -> bool:
    """A transformers ``Cache`` (registered as a pytree node or not)."""
    return any(c.__name__ == "Cache" and c.__module__.startswith("transformers.") for c in type(value).__mro__)


def _entries(call: Call) -> tuple[dict[str, Any], bool]:
    """Each argument that carries a tensor (or a non-empty cache): its name and structure."""
    import torch

    from .._compat import pytree  # deferred: imports torch (the plugin's import stays torch-free)

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
                carried.append(type(leaf).__name__)  # state handed back, whatever pytree makes of it
            else:
                carried.append(None)
        if not any(c is not None for c in carried):
            continue  # None, a flag, an empty cache: nothing to export
        cache = cache or name in CACHE_NAMES or name in handed or _is_cache(value)
        shape = carried[0] if spec.is_leaf() else (_container(spec), *carried)
        entries[name] = shape
    return entries, cache


def _named(call: Call) -> dict[str, Any]:
    """The call's arguments by parameter name (``arg 0`` where the signature cannot say)."""
    import inspect

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
    """The parameter names of the arguments ``call`` was handed back from an earlier call's outputs."""
    import inspect

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
    except Exception:  # noqa: BLE001 - a cache class of another version: count it as holding something
        return 1


def _container(spec: Any) -> str:
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
