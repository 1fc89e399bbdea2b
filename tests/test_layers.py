"""The package's folders are layers: every import points to its own folder or a lower one.

docs/architecture.md draws the tree; this test holds the code to it. Every ``from . import``
of the package is read from the source (imports inside functions included, ``TYPE_CHECKING``
blocks excluded: they never run), so a lazy import that climbs a layer is caught as
surely as a top-level one, and so is a cycle between two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_torchexport"

#: Lowest first. The root holds the shared leaves at the bottom and the commands on top.
LAYERS = [
    "root-leaves",  # errors.py, options.py, _compat.py, freed.py: imported by every layer, import none
    "results",
    "inputs",
    "cache",
    "reference",
    "backends",
    "isolation",
    "stages",
    "search",
    "engine",
    "recording",
    "glue",
    "root-commands",  # plugin.py, __main__.py, replay.py, __init__.py
]
ROOT_LEAVES = {"errors", "options", "_compat", "freed"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(p for p in parts if p != "__init__")] = path
    return found


def _layer(module: str) -> str:
    head = module.split(".")[0]
    if "." in module or (head and head in LAYERS):
        return head
    return "root-leaves" if module in ROOT_LEAVES else "root-commands"


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports, wherever in its body."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level or id(node) in skip:
            continue
        base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        target = ".".join([*base, *([node.module] if node.module else [])])
        for alias in node.names:
            named = f"{target}.{alias.name}".strip(".")
            out.add(named if named in modules else target)
    out.discard(module)
    return {m for m in out if m in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), (
        f"a folder with no place in LAYERS (and docs/architecture.md): {folders - set(LAYERS)}"
    )


def test_no_import_climbs_a_layer(graph):
    rank = {name: i for i, name in enumerate(LAYERS)}
    climbing = [
        f"{m} ({_layer(m)}) imports {t} ({_layer(t)})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if rank[_layer(t)] > rank[_layer(m)]
    ]
    assert not climbing, "imports pointing to a higher layer:\n" + "\n".join(climbing)


def test_no_import_cycle(graph):
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_check_picks_up_a_lazy_climb(tmp_path):
    """The reader itself: an import inside a function is read, one under TYPE_CHECKING is not."""
    module = tmp_path / "mod.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..glue import items\n"
        "def f():\n    from ..engine import pipeline\n"
    )
    modules = {"results.mod": module, "engine.pipeline": module, "glue.items": module}
    assert _imports("results.mod", module, modules) == {"engine.pipeline"}
