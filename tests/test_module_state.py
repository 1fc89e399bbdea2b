"""No module globals outside constants: the rule, held by reading the package.

Session state is owned by the session (``glue/state.py``) and handed down; what one check
needs rides on its ``Check``. A module global would be shared by every pytest session in the
process (pytester) and by every check, and would be set from far away (a warm-up flag set
from the glue, a benchmark switch flipped in product code). So, in every module of the package:

- no ``global`` statement (a name rebound from inside a function);
- a module-level name bound to a mutable value (a dict, list or set, a weak registry, an
  instance of one of the package's classes) is a constant: an UPPER_CASE name (or
  ``__all__``) that no code of the package writes into (item assignment or deletion,
  ``+=``, ``append``/``add``/``update``/``pop``/...);
- the exceptions are listed below, each with the reason it is not a session's.

Memoisation goes through ``functools.lru_cache`` (bounded), an ambient value through a
``contextvars.ContextVar`` (set for a block, put back after it).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_torchexport"

#: (module path, name) -> why it is module-level state and not a session's.
EXCEPTIONS = {
    ("isolation/runner.py", "THIS"): (
        "[This Process] facts of the OS process, not of a session: what its interpreter paid of the "
        "first uses, the pipes of the children it forked, a child's channel, the loader it spawned; "
        "a forked child inherits them"
    ),
    ("_compat.py", "torch"): (
        "a stand-in for the torch module that holds nothing: each read goes to the imported torch, "
        "so the modules the plugin loads into every session import torch on their first read"
    ),
    ("_compat.py", "pytree"): "the same stand-in for torch.utils._pytree",
    ("reference/eager.py", "_NOT_ITSELF"): (
        "[As Called] a fact about one module object (its copies are not it), held weakly: it lives "
        "exactly as long as the object it describes"
    ),
}

MUTABLE_CALLS = {
    "dict",
    "list",
    "set",
    "bytearray",
    "defaultdict",
    "OrderedDict",
    "Counter",
    "deque",
    "WeakKeyDictionary",
    "WeakValueDictionary",
    "WeakSet",
}
MUTATORS = {
    "append",
    "add",
    "update",
    "pop",
    "popitem",
    "setdefault",
    "clear",
    "remove",
    "discard",
    "extend",
    "insert",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "appendleft",
    "popleft",
}


def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(PACKAGE).as_posix(): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements that run at import: the body, and inside its if/try/with blocks."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        for block in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                todo.extend(n for n in getattr(node, block, []) if isinstance(n, (ast.stmt, ast.ExceptHandler)))
    return [n for n in out if isinstance(n, ast.stmt)]


def _package_classes(modules: dict[str, ast.Module]) -> set[str]:
    return {node.name for tree in modules.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def _mutable(value: ast.expr, classes: set[str]) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name in MUTABLE_CALLS or name in classes
    return False


def _bindings(modules: dict[str, ast.Module]) -> dict[tuple[str, str], int]:
    """(module, name) -> line, for every module-level name bound to a mutable value."""
    classes = _package_classes(modules)
    found = {}
    for module, tree in modules.items():
        for node in _module_level(tree):
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if _mutable(value, classes):
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[(module, target.id)] = node.lineno
    return found


def _written(modules: dict[str, ast.Module], module: str, name: str) -> list[str]:
    """Where the package writes into ``name`` of ``module`` (by its bare name there, or as an
    attribute anywhere: ``runner.NAME[...] = ...``)."""

    def names_it(node: ast.expr, home: bool) -> bool:
        return (home and isinstance(node, ast.Name) and node.id == name) or (
            isinstance(node, ast.Attribute) and node.attr == name
        )

    out = []
    for where, tree in modules.items():
        home = where == module
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                inner = target.value if isinstance(target, ast.Subscript) else None
                if inner is not None and names_it(inner, home):
                    out.append(f"{where}:{node.lineno}")
                elif isinstance(node, ast.AugAssign) and names_it(target, home):
                    out.append(f"{where}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
                and names_it(node.func.value, home)
            ):
                out.append(f"{where}:{node.lineno}")
    return out


def _violations(modules: dict[str, ast.Module]) -> list[str]:
    """Every ``global`` statement, and every mutable module global that is not a constant
    nobody writes into, nor a documented exception."""
    problems = [
        f"{module}:{node.lineno}: global {', '.join(node.names)} (a function rebinds a module global)"
        for module, tree in modules.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Global)
    ]
    for (module, name), line in sorted(_bindings(modules).items()):
        if (module, name) in EXCEPTIONS:
            continue
        if not (name.lstrip("_").isupper() or name == "__all__"):
            problems.append(f"{module}:{line}: {name} is mutable module state (a session's, or an lru_cache's)")
            continue
        writes = _written(modules, module, name)
        if writes:
            problems.append(f"{module}:{line}: the constant {name} is written at {', '.join(writes)}")
    return problems


def test_no_module_global_outside_constants_and_the_documented_exceptions():
    problems = _violations(_modules())
    assert not problems, "session state belongs to the session (glue/state.py):\n" + "\n".join(problems)


def test_the_exceptions_are_still_there():
    """A documented exception that is gone is taken off the list, so the list stays the truth."""
    bound = _bindings(_modules())
    assert set(EXCEPTIONS) <= set(bound), set(EXCEPTIONS) - set(bound)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("_seen = set()\ndef f(x):\n    _seen.add(x)\n", True),  # lower-case mutable state
        ("_loader = None\ndef f():\n    global _loader\n    _loader = 1\n", True),  # rebound from a function
        ("CACHE = {}\ndef f(k, v):\n    CACHE[k] = v\n", True),  # an UPPER_CASE name written into
        ("class Box:\n    pass\n\nbox = Box()\n", True),  # an instance of the package's own class
        ("TABLE = {'a': 1}\ndef f(k):\n    return TABLE[k]\n", False),  # a constant table
        ("import re\n_WORD = re.compile('w')\n", False),  # immutable
    ],
)
def test_the_scan_catches_what_it_is_meant_to(source, caught):
    """The rule's own test: each kind of state it forbids is found in a planted module."""
    assert bool(_violations({"planted.py": ast.parse(source)})) is caught


#: ``module.CONSTANT = value``, in a benchmark's code or in the driver script it writes out.
_FLIPPED = re.compile(r"^[^#\n]*\b([a-z_]+\.[A-Z][A-Z0-9_]+)\s*=(?!=)", re.MULTILINE)


def test_no_benchmark_flips_a_switch_in_the_package():
    """A benchmark measures the package as shipped: what it turns off is a real option or an
    environment variable the package documents (``TORCHEXPORT_SIZE_LIMITS=off``), never a
    constant of a module rebound from outside (it was ``budget.ENABLED = False``)."""
    benchmarks = PACKAGE.parent / "benchmarks"
    found = [
        f"{path.name}: {match.group(1)}"
        for path in sorted(benchmarks.glob("*.py"))
        for match in _FLIPPED.finditer(path.read_text())
    ]
    assert not found, found
