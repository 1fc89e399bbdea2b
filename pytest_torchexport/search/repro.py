"""The repro file of a failing example (``--torchexport-repro-dir``), read back by ``replay.py``.

Unpickling runs whatever code a file names, so a repro file from someone else must not need it.
The file holds only what ``torch.load(weights_only=True)`` reads: the inputs, and the module as a
tree of importable classes, plain attributes, tensors and children, which ``rebuild`` turns back
into a module without calling ``__init__``. A tree is written only if the rebuilt module has the
same verdict-cache key as the original. Anything else goes into one pickled blob, with a
``pickle_reason`` that replay prints when it refuses to load it without ``--allow-pickle``.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._compat import non_persistent_buffers, own_buffers, own_children, own_parameters
from ..cache.fingerprint import Unkeyable, _Hasher

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from ..cache.fingerprint import _Hasher

FORMAT = 2
#: Payload keys of ``save`` that may hold non-plain values (moved to the pickled blob).
_INPUT_KEYS = ("export_inputs", "failing_inputs", "failing_kwargs")
_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class NotPlain(Exception):
    """What a weights-only file cannot hold, said as the reason the file needs pickle."""


def save(path: Path, *, module: object, **payload: object) -> None:
    cls = type(module)
    reasons: list[str] = []
    try:
        tree: dict[str, Any] | None = module_tree(module)
    except NotPlain as exc:
        tree = None
        reasons.append(f"the module {exc}")
    pickled: dict[str, Any] = {}
    for key in _INPUT_KEYS:
        if key not in payload:
            continue
        why = unplain(payload[key], key)
        if why:
            pickled[key], payload[key] = payload[key], None  # only the blob holds it
            reasons.append(why)
    if tree is None:
        pickled["module"] = module
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    outer = {
        "format": FORMAT,
        "module_class": class_name(cls),
        "module_tree": tree,
        "source_root": _import_root(cls.__module__, source),
        "pickle": _pickle(pickled) if pickled else None,
        "pickle_reason": "; ".join(reasons) or None,
        **payload,
    }
    torch.save(outer, path)


def _pickle(objects: dict[str, Any]) -> bytes | None:
    """Nested bytes: the outer file loads with weights_only=True whatever they hold."""
    try:
        buffer = io.BytesIO()
        torch.save(objects, buffer)
        return buffer.getvalue()
    except (pickle.PicklingError, AttributeError, TypeError):  # a class defined inside a function
        return None


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# ---------------------------------------------------------------------------------------------
# The module as a tree of plain data


def module_tree(module: object) -> dict[str, Any]:
    """The module as plain data ``rebuild`` makes it again from; ``NotPlain`` says what stops it."""
    if not isinstance(module, torch.nn.Module):
        raise NotPlain(f"is a {type(module).__qualname__}, not an nn.Module")
    tensors = {
        id(t)
        for m in module.modules()
        for t in (*own_parameters(m).values(), *own_buffers(m).values())
        if t is not None
    }
    tree = _node(module, "", {}, tensors)
    if all(t.device.type == "cpu" for t in (*module.parameters(), *module.buffers())):
        # A tree must never be an approximation: the rebuilt module must key as the original does.

        try:
            same = _key(_Hasher(), module) == _key(_Hasher(), rebuild(tree, _resolve_here))
        except (Unkeyable, NotPlain, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise NotPlain(f"cannot be rebuilt from its classes here ({type(exc).__name__}: {exc})") from None
        if not same:
            raise NotPlain("rebuilt from its classes and attributes is not the same module (its state lives elsewhere)")
    return tree


def _key(hasher: _Hasher, module: torch.nn.Module) -> str:
    hasher.module(module)
    return hasher.hexdigest()


def _node(module: torch.nn.Module, where: str, seen: dict[int, str], tensors: set[int]) -> dict[str, Any]:
    name = where or type(module).__qualname__
    if id(module) in seen:
        return {"same_as": seen[id(module)]}
    seen[id(module)] = where
    cls = type(module)
    if isinstance(module, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        raise NotPlain(f"holds {name}, a {cls.__qualname__}: its code is generated, not an importable class")
    _importable(cls, name)
    attrs: dict[str, Any] = {}
    aliases: dict[str, Any] = {}
    own = {id(t): k for k, t in (*own_parameters(module).items(), *own_buffers(module).items()) if t is not None}
    # What pickling would keep (RNNs leave their weak references out, and __setstate__ makes them again).
    state = module.__getstate__()
    if not isinstance(state, dict):
        raise NotPlain(f"holds {name}, whose __getstate__ is not a dict")
    for key, value in state.items():
        if key in _internal():
            if key.endswith("hooks") and value:
                raise NotPlain(f"has a hook in {name}.{key}: hooks are functions")
            continue
        alias = _aliases(value, own)
        if alias is not None:  # references to its own parameters (an RNN's _flat_weights), kept by name
            aliases[key] = alias
            continue
        if isinstance(value, torch.Tensor) and id(value) in tensors:
            raise NotPlain(f"holds {name}.{key}, another module's parameter or buffer")
        why = unplain(value, f"{name}.{key}")
        if why:
            raise NotPlain(f"holds {why}")
        attrs[key] = value
    params = {k: None if p is None else p.detach() for k, p in own_parameters(module).items()}
    grads = {k: bool(p.requires_grad) for k, p in own_parameters(module).items() if p is not None}
    children = {
        k: None if c is None else _node(c, f"{where}.{k}" if where else k, seen, tensors)
        for k, c in own_children(module).items()
    }
    return {
        "class": class_name(cls),
        "training": bool(module.training),
        "attrs": attrs,
        "aliases": aliases,
        "parameters": params,
        "requires_grad": grads,
        "buffers": dict(own_buffers(module)),
        "non_persistent": sorted(non_persistent_buffers(module)),
        "children": children,
    }


def _aliases(value: object, own: dict[int, str]) -> object:
    """The names of the module's own tensors that ``value`` is (a tensor, or a list of them and None)."""
    if isinstance(value, torch.Tensor):
        return own.get(id(value))
    if isinstance(value, list) and any(isinstance(v, torch.Tensor) for v in value):
        names = [None if v is None else own.get(id(v)) if isinstance(v, torch.Tensor) else False for v in value]
        if all(n is None or isinstance(n, str) for n in names) and all(
            (n is None) == (v is None) for n, v in zip(names, value)
        ):
            return names
    return None


def _internal() -> frozenset[str]:
    """The attributes ``nn.Module.__init__`` sets: made again by it, not stored."""
    return frozenset(vars(torch.nn.Module()))


def _importable(cls: type, name: str) -> None:
    if "<locals>" in cls.__qualname__:
        raise NotPlain(f"holds {name}, a {cls.__qualname__}, defined inside a function: replay cannot import it")
    if cls.__module__ == "__main__":
        raise NotPlain(f"holds {name}, a class defined in __main__: replay cannot import it")
    if _resolve_here(class_name(cls)) is not cls:
        raise NotPlain(f"holds {name}, a {cls.__qualname__} that is not importable as {class_name(cls)}")


def unplain(value: Any, where: str, depth: int = 0) -> str | None:
    """None when ``torch.load(weights_only=True)`` reads ``value`` back as it is; else what is not."""
    if depth > 50:
        return f"{where}, nested deeper than a repro file holds"
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return None
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return None
    if isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return None
    if type(value) in (list, tuple, set):
        for i, item in enumerate(sorted(value, key=repr) if type(value) is set else value):
            why = unplain(item, f"{where}[{i}]", depth + 1)
            if why:
                return why
        return None
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            why = unplain(key, f"{where} (a key)", depth + 1) or unplain(item, f"{where}[{key!r}]", depth + 1)
            if why:
                return why
        return None
    kind = type(value)
    return f"{where}, a {kind.__module__}.{kind.__qualname__} (only unpickling rebuilds one)"


# ---------------------------------------------------------------------------------------------
# Back from the tree


def rebuild(tree: dict[str, Any], resolve: Callable[[str], type[torch.nn.Module]]) -> torch.nn.Module:
    """The module a ``module_tree`` describes, its classes found by ``resolve("pkg.mod:Class")``.

    Instances are made as unpickling makes them (``cls.__new__`` then ``__setstate__``), never
    through the class's own ``__init__``, whose arguments are not known."""
    return _rebuild(tree, resolve, {}, "")


def _rebuild(
    tree: dict[str, Any], resolve: Callable[[str], type[torch.nn.Module]], made: dict[str, Any], path: str
) -> torch.nn.Module:
    if "same_as" in tree:  # a submodule reached twice (shared): the one made first
        return made[tree["same_as"]]
    cls = resolve(tree["class"])
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    made[path] = module
    state = {
        **vars(module),
        **tree["attrs"],
        "training": tree["training"],
        "_non_persistent_buffers_set": set(tree["non_persistent"]),
    }
    for key, tensor in tree["parameters"].items():
        state["_parameters"][key] = (
            None if tensor is None else torch.nn.Parameter(tensor, requires_grad=tree["requires_grad"].get(key, True))
        )
    state["_buffers"].update(tree["buffers"])
    tensors = {**state["_buffers"], **state["_parameters"]}
    for key, alias in tree.get("aliases", {}).items():
        state[key] = [None if n is None else tensors[n] for n in alias] if isinstance(alias, list) else tensors[alias]
    for key, child in tree["children"].items():
        state["_modules"][key] = (
            None if child is None else _rebuild(child, resolve, made, f"{path}.{key}" if path else key)
        )
    module.__setstate__(state)  # the class's own, as unpickling calls it
    return module


def _resolve_here(name: str) -> Any:
    """A class already imported in this process (the writer's side): never imports anything."""
    module_name, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def resolve_class(name: str, imports: str | None = None) -> type[torch.nn.Module]:
    """``"pkg.mod:Class"`` (replay's side): an ``nn.Module`` subclass, or ``NotPlain``.

    Only the model's own module (``imports``) is imported; every other class must already be
    loaded by that import, so a file cannot make replay import arbitrary modules."""
    if not isinstance(name, str) or not _CLASS.match(name):
        raise NotPlain(f"names the class {printable(name)}, which is not of the form package.module:Class")
    module_name, _, qualname = name.partition(":")
    if module_name == imports:
        obj: Any = importlib.import_module(module_name)
    elif module_name in sys.modules:
        obj = sys.modules[module_name]
    else:
        raise NotPlain(f"names the class {name}, whose module importing the model's module {imports} did not import")
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise NotPlain(f"names {name}, which is not an nn.Module class")
    return obj


def printable(value: object, limit: int = 300) -> str:
    """Text from a file, as one printable line (it may come from anyone)."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


def _import_root(module_name: str, source: str | None) -> str | None:
    if not source:
        return None
    root = Path(source).resolve().parent
    for _ in module_name.split(".")[1:]:
        root = root.parent
    return str(root)
