"""Code-health counts of the package and its tests, for the working tree or any git revision.

    python benchmarks/code_health.py                        # the working tree
    python benchmarks/code_health.py --rev 45e1d50 --rev HEAD   # revisions side by side
    python benchmarks/code_health.py --rev HEAD --list private   # each item of one count

What each count is (static: the source is parsed, never imported):

- ``module globals``: module-level names the package changes at run time: a container mutated
  in place (``X[k] = v``, ``X.append(...)``, ...), a name a function declares ``global``, or a
  name another module assigns (``runner.FLAG`` set from outside). Constants are not counted.
- ``broad excepts``: ``except:``, ``except Exception`` and ``except BaseException`` handlers;
  ``swallowing`` are those that neither raise nor use the exception they caught.
- ``private API uses``: a private name (one leading underscore) of another library, outside
  ``_compat.py``: ``import a._b``, ``from a._b import c``, ``from a import _b``, ``x._name`` or
  ``getattr(x, "_name")`` where the package defines no ``_name`` itself, and a private method
  defined on a class with a base from elsewhere that the package never calls (so the base
  class does: an override). Overrides ``_compat.FUNCTION_OVERRIDES`` declares are not counted,
  nor the documented stdlib names in ``STDLIB``.
- ``test helper copies``: functions (not tests) in ``tests/`` defined with the same body more
  than once (each copy past the first counts), and names defined in several files.
- ``functions over 50 lines`` and ``modules over 400 lines``: of the package.

With ``--check-path`` (a traced run, about a minute a revision; not static):

- ``files to follow one check``: the package files a reader opens to follow one check from
  ``plugin.py`` to its report row, counted as the files of the package whose *functions* run
  (a module whose code runs only at import is not counted: its import line says enough)
  while pytest runs one marked test (``nn.Linear`` on the ``trace`` backend, two examples,
  process isolation, a JSON report). Every process is traced, the forked check child
  included: each writes a file name the first time one of its functions is called.
  ``their lines``: those files' lines, summed. A revision is run from ``git archive`` of its
  package (put first on ``PYTHONPATH``), with this checkout's environment.
- ``files to follow the core``: of those files, the ones the check reaches
  without entering an optional stage: the traced calls followed from pytest's hooks, never into a
  module of ``stages/optional.py``'s ``OPTIONAL`` (so never past one, to what only it reaches),
  nor into the processes only they start (the standalone loader, the C++ runner's build), unless a
  file of the core calls into them. Nothing is switched off: it is read from the same trace. A
  revision without that table has no core count.
- ``read in order``: the files of that check's reading path, ``docs/one-check.md`` (0 for a
  revision without the page): the files read top to bottom, each other file the check runs named
  under the one that calls it. ``page_problems`` holds the page to the traced run (its test:
  ``tests/test_code_health_check_path.py``).

    python benchmarks/code_health.py --check-path --rev 45e1d50 --rev HEAD
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pytest_torchexport"

#: Underscored names of the standard library that its documentation offers for use.
STDLIB = {"_exit", "_getframe", "_replace", "_asdict", "_fields", "_make", "_field_defaults", "_name_"}

#: Calls that change a container in place.
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "remove", "discard", "clear"}

FUNCTION_LINES = 50
MODULE_LINES = 400


def _by_place(item: str) -> tuple[str, int, str]:
    """Sort key of ``"path:line: what"``: by path, then line number."""
    path, _, rest = item.partition(":")
    line, _, what = rest.partition(":")
    return (path, int(line), what) if line.isdigit() else (path, 0, rest)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _parsed(files: dict[str, str]) -> dict[str, ast.Module]:
    return {path: ast.parse(text) for path, text in files.items()}


def _owned_names(trees: dict[str, ast.Module]) -> set[str]:
    """Names the package itself defines: functions, classes, arguments, and what it assigns on
    its own objects (``self.x``, module-level names)."""
    own: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
            elif isinstance(node, ast.alias):
                own.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
                own.add(node.attr)
    return own


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _called_names(trees: dict[str, ast.Module]) -> set[str]:
    """Attribute names the package reads other than through ``super()``."""
    called: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                is_super = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super"
                if not is_super:
                    called.add(node.attr)
    return called


def _declared_overrides(files: dict[str, str]) -> set[str]:
    text = next((t for p, t in files.items() if p.endswith("/_compat.py")), "")
    match = re.search(r"^FUNCTION_OVERRIDES = \(([^)]*)\)", text, re.M)
    return set(re.findall(r"\"(\w+)\"", match.group(1))) if match else set()


def private_api_uses(package: Path | dict[str, str]) -> list[str]:
    """Each private API use of another library in ``package`` (a folder, or path -> source), as
    ``"relative/path.py:line: what"``; ``_compat.py``'s own are included (the caller filters)."""
    files = package if isinstance(package, dict) else _read_folder(package)
    trees = _parsed(files)
    own = _owned_names(trees)
    called = _called_names(trees)
    classes = {node.name for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    declared = _declared_overrides(files)
    uses = []
    for path, tree in trees.items():
        short = path.split(f"{PACKAGE}/", 1)[-1]
        for node in ast.walk(tree):
            for what in _private_use(node, own, called, classes, declared):
                uses.append((short, node.lineno, what))
    return [f"{p}:{line}: {what}" for p, line, what in sorted(uses)]


def _private_use(node: ast.AST, own: set[str], called: set[str], classes: set[str], declared: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"import {a.name}" for a in node.names if any(_private(p) for p in a.name.split("."))]
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level or module == "__future__":
            return []
        if any(_private(p) for p in module.split(".")) or any(_private(a.name) for a in node.names):
            return [f"from {module} import {', '.join(a.name for a in node.names)}"]
        return []
    if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in STDLIB:
        return [ast.unparse(node)] if node.attr not in own and not _on_self(node) else []
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr")
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and _private(node.args[1].value)
        and node.args[1].value not in own
    ):
        return [f"{node.func.id}({ast.unparse(node.args[0])}, {node.args[1].value!r})"]
    if isinstance(node, ast.ClassDef):
        foreign = [b for b in node.bases if not (isinstance(b, ast.Name) and (b.id in classes or b.id == "object"))]
        if not foreign:
            return []
        return [
            f"def {node.name}.{item.name} (an override)"
            for item in node.body
            if isinstance(item, ast.FunctionDef)
            and _private(item.name)
            and item.name not in called
            and item.name not in declared
        ]
    return []


def module_globals(files: dict[str, str]) -> list[str]:
    trees = _parsed(files)
    by_module = {_module_name(p): p for p in trees}
    found = []
    for path, tree in trees.items():
        top = {
            t.id
            for n in tree.body
            if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Name)
        }
        imported = _imported_package_modules(tree, _module_name(path), by_module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found += [f"{path}:{node.lineno}: global {name}" for name in node.names]
            target = _mutated_name(node)
            if target in top:
                found.append(f"{path}:{node.lineno}: {target} changed in place")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported
            ):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)} assigned from {path}")
    return sorted(set(found), key=_by_place)


def _mutated_name(node: ast.AST) -> str | None:
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for t in targets:
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                return t.value.id
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in MUTATORS
        and isinstance(node.func.value, ast.Name)
    ):
        return node.func.value.id
    return None


def _module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imported_package_modules(tree: ast.Module, module: str, by_module: dict[str, str]) -> set[str]:
    names = set()
    package = module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            for alias in node.names:
                target = ".".join([*base, *([node.module] if node.module else []), alias.name])
                if target in by_module:
                    names.add(alias.asname or alias.name)
    return names


def broad_excepts(files: dict[str, str]) -> tuple[list[str], list[str]]:
    broad, swallowing = [], []
    for path, tree in _parsed(files).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and _is_broad(node.type):
                where = f"{path}:{node.lineno}"
                broad.append(where)
                if not _raises_or_uses(node):
                    swallowing.append(where)
    return sorted(broad, key=_by_place), sorted(swallowing, key=_by_place)


def _is_broad(kind: ast.expr | None) -> bool:
    if kind is None:
        return True
    kinds = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(isinstance(k, ast.Name) and k.id in ("Exception", "BaseException") for k in kinds)


def _raises_or_uses(handler: ast.ExceptHandler) -> bool:
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            return True
        if handler.name and isinstance(node, ast.Name) and node.id == handler.name:
            return True
    return False


def helper_copies(files: dict[str, str]) -> tuple[list[str], list[str]]:
    """Functions of ``tests/`` (not tests, not methods; nested ones included) written more than
    once: each copy of a body past its first, and each name (leading underscores aside) defined
    in more than one file."""
    bodies: dict[str, list[str]] = defaultdict(list)
    names: dict[str, set[str]] = defaultdict(set)
    for path, tree in _parsed(files).items():
        methods = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for n in c.body}
        for node in ast.walk(tree):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not node.name.startswith("test_")
                and id(node) not in methods
            ):
                names[node.name.lstrip("_")].add(path)  # _result and result: one helper's names
                body = node.body[1:] if ast.get_docstring(node) else node.body
                bodies[ast.dump(ast.Module(body=body, type_ignores=[]))].append(f"{path}::{node.name}")
    copies = [f"{where} (the same as {found[0]})" for found in bodies.values() for where in found[1:]]
    same_name = [f"{name} in {', '.join(sorted(paths))}" for name, paths in sorted(names.items()) if len(paths) > 1]
    return copies, same_name


def long_functions(files: dict[str, str]) -> list[str]:
    found = []
    for path, tree in _parsed(files).items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno}: {node.name} ({lines} lines)")
    return sorted(found, key=_by_place)


def long_modules(files: dict[str, str]) -> list[str]:
    return [
        f"{path} ({n} lines)" for path, text in sorted(files.items()) if (n := len(text.splitlines())) > MODULE_LINES
    ]


def bare_any(files: dict[str, str]) -> list[str]:
    """Each parameter or return annotated ``Any`` and nothing else (``dict[str, Any]`` is not bare)."""
    found = []
    for path, tree in _parsed(files).items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                named = [
                    (p.arg, p.annotation) for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p
                ]
                for name, annotation in [*named, ("->", node.returns)]:
                    if isinstance(annotation, ast.Name) and annotation.id == "Any":
                        found.append(f"{path}:{node.lineno}: {node.name} {name}")
    return sorted(found, key=_by_place)


def imports_in_functions(files: dict[str, str]) -> list[str]:
    """Each import statement inside a function: what a module defers, one function at a time."""
    found = []
    for path, tree in _parsed(files).items():
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = {
                    id(n)
                    for f in function.body
                    for n in ast.walk(f)
                    if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)
                }
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom) and not _nested_in(node, function, inner):
                        names = ", ".join(n.name for n in node.names)
                        found.append(
                            f"{path}:{node.lineno}: {function.name} {'.' * getattr(node, 'level', 0)}{getattr(node, 'module', None) or names}"
                        )
    return sorted(found, key=_by_place)


def _nested_in(node: ast.AST, function: ast.AST, inner: set[int]) -> bool:
    """Whether ``node`` belongs to a function defined inside ``function`` (counted there instead)."""
    for child in ast.walk(function):
        if id(child) in inner and any(n is node for n in ast.walk(child)):
            return True
    return False


def _read_folder(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder.parent)): p.read_text() for p in sorted(folder.rglob("*.py"))}


def _read_rev(rev: str, folder: str) -> dict[str, str]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, folder],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        p: subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{p}"], capture_output=True, text=True, check=True
        ).stdout
        for p in listed
        if p.endswith(".py")
    }


def measure(rev: str | None) -> dict[str, list[str]]:
    if rev is None:
        package, tests = _read_folder(ROOT / PACKAGE), _read_folder(ROOT / "tests")
    else:
        package, tests = _read_rev(rev, PACKAGE), _read_rev(rev, "tests")
    broad, swallowing = broad_excepts(package)
    copies, same_name = helper_copies(tests)
    declared = _declared_overrides(package)
    private = [u for u in private_api_uses(package) if not u.startswith("_compat.py:")]
    return {
        "module globals": module_globals(package),
        "broad excepts": broad,
        "  of which swallow": swallowing,
        "private API uses outside _compat": private,
        "  overrides declared in _compat": sorted(declared),
        "test helper copies (same body)": copies,
        "test helper names in several files": same_name,
        f"functions over {FUNCTION_LINES} lines": long_functions(package),
        f"modules over {MODULE_LINES} lines": long_modules(package),
        "bare Any in signatures": bare_any(package),
        "imports inside functions": imports_in_functions(package),
    }


#: The one check the traced run follows: the smallest marked test, on the backend with the fewest moving parts.
CHECK_TEST = """
import pytest
import torch


@pytest.mark.torchexport(backends=["trace"], examples=2)
def test_one():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))
"""

#: Run as ``python TRACER OUT -m pytest ...``: every process (a forked child inherits the trace
#: function) appends to OUT the package files whose functions it calls, each once (``F file``), and
#: each call from one package file into a function of another (``E caller callee``, a call its import makes too; ``-`` for a caller
#: outside the package: pytest calling a hook, torch a forward hook, a process's entry point).
TRACER = """
import os, runpy, sys, threading
out, package = sys.argv[1], os.sep + "pytest_torchexport" + os.sep
seen = set()

def write(line):
    if line not in seen:
        seen.add(line)
        with open(out, "a") as f:
            f.write(line + "\\n")

def trace(frame, event, arg):
    code = frame.f_code
    # CO_OPTIMIZED (1): a function's code; a module's or a class body's runs only at import
    if event == "call" and code.co_flags & 1 and package in code.co_filename:
        if code.co_name.startswith("<"):  # a comprehension or lambda: counted unless a module body runs it
            outer = frame.f_back
            while outer is not None and outer.f_code.co_filename == code.co_filename and outer.f_code.co_flags & 1 and outer.f_code.co_name.startswith("<"):
                outer = outer.f_back
            if outer is not None and outer.f_code.co_filename == code.co_filename and not outer.f_code.co_flags & 1:
                return None
        write("F " + code.co_filename)
        caller = frame.f_back
        while caller is not None and package not in caller.f_code.co_filename:
            caller = caller.f_back
        if caller is None:
            write("E - " + code.co_filename)
        elif caller.f_code.co_filename != code.co_filename:
            write("E " + caller.f_code.co_filename + " " + code.co_filename)
    return None

sys.settrace(trace)
threading.settrace(trace)
sys.argv = ["pytest", *sys.argv[3:]]
runpy.run_module("pytest", run_name="__main__", alter_sys=True)
"""


def check_path(rev: str | None) -> dict[str, list[str] | int]:
    """``files to follow one check`` and ``their lines``, and ``files to follow the core`` where the
    revision has a table of optional stages: see the module's docstring."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="code-health-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if rev is not None:
            (work / "src").mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, PACKAGE], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(work / "src")], input=archive.stdout, check=True)
            env["PYTHONPATH"] = os.pathsep.join([str(work / "src"), env.get("PYTHONPATH", "")])
        (work / "run").mkdir()
        (work / "run" / "test_one.py").write_text(CHECK_TEST)
        (work / "tracer.py").write_text(TRACER)
        listed = work / "files.txt"
        done = subprocess.run(
            [
                sys.executable,
                str(work / "tracer.py"),
                str(listed),
                "-m",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                "--torchexport-isolation=process",
                "--torchexport-report=out.json",
                "test_one.py",
            ],
            cwd=work / "run",
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not listed.exists():
            raise RuntimeError(
                f"the traced check did not pass ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        package = f"{os.sep}{PACKAGE}{os.sep}"

        def relative(path: str) -> str:
            return path.split(package, 1)[1] if package in path else path

        records = [line.split(" ") for line in listed.read_text().splitlines()]
        files = sorted({relative(r[1]) for r in records if r[0] == "F" and package in r[1]})
        calls = sorted({(relative(r[1]), relative(r[2])) for r in records if r[0] == "E"})
        root = work / "src" / PACKAGE if rev is not None else ROOT / PACKAGE
        lines = {f: len((root / f).read_text().splitlines()) for f in files}
    return {
        "files to follow one check": [f"{f} ({lines[f]} lines)" for f in files],
        "  their lines": sum(lines.values()),
        "calls between them": [f"{caller} -> {callee}" for caller, callee in calls],
        "  read in order": [f for f in reading_path(_page(rev))[0] if f in lines],
        "files to follow the core": [f"{f} ({lines[f]} lines)" for f in core_files(files, calls, root)],
    }


#: The entry points of the processes that only the optional stages start.
STAGE_PROCESSES = {"isolation/loader.py", "isolation/cpp.py"}


def core_files(files: list[str], calls: list[tuple[str, str]], root: Path) -> list[str]:
    """The traced files reached from pytest's hooks without entering an optional stage's module
    (``stages/optional.py``'s table, read from its source); [] where the revision has no table."""
    table = root / "stages" / "optional.py"
    if not table.exists():
        return []
    tree = ast.parse(table.read_text())
    imported = {
        alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    listed = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "OPTIONAL"
    )
    stages = {
        f"stages/{imported[c.func.id].lstrip('.')}.py"
        for c in ast.walk(listed)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
    }
    # From outside the package: pytest's hooks, torch calling a patched forward, a forked child. The
    # processes only the optional stages start (the standalone loader, the C++ runner's build) are theirs.
    theirs = stages | STAGE_PROCESSES
    reached = {callee for caller, callee in calls if caller == "-" and callee not in theirs}
    frontier = list(reached)
    while frontier:
        caller = frontier.pop()
        for source, callee in calls:
            if source == caller and callee not in reached and callee not in stages:
                reached.add(callee)
                frontier.append(callee)
    return [f for f in files if f in reached]


#: The page that reads one check in order (see ``reading_path``).
PAGE = "docs/one-check.md"
#: The most files on that page's reading path: about 12.
READING_PATH_MOST = 12


def reading_path(page: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The files ``docs/one-check.md`` names: its reading path (each ``## N. `file` `` heading, in
    order), the files named under each (``- `file` `` lines), and those of "Used by every layer"."""
    path: list[str] = []
    under: dict[str, list[str]] = {}
    leaves: list[str] = []
    current: list[str] | None = None
    for line in page.splitlines():
        if heading := re.match(r"## \d+\. `([^`]+)`", line):
            path.append(heading.group(1))
            current = under[heading.group(1)] = []
        elif line.startswith("## "):
            current = leaves if line.startswith("## Used by every layer") else None
        elif (named := re.match(r"- `([^`]+\.py)`", line)) and current is not None:
            current.append(named.group(1))
    return path, under, leaves


def page_problems(page: str, files: list[str], calls: list[str]) -> list[str]:
    """What makes ``docs/one-check.md`` untrue of the traced check (``check_path``'s ``files`` and
    ``calls``): a file the check runs that the page does not name, a file it names twice or that
    no longer runs, a file named under one that does not call it (itself, or through another file
    named under it; ``-``, a caller outside the package such as pytest calling a hook, counts), a
    reading-path file that nothing earlier on the path calls, a path longer than twelve."""
    path, under, leaves = reading_path(page)
    named = path + [f for file in path for f in under[file]] + leaves
    callers: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        caller, callee = call.split(" -> ")
        callers[callee].add(caller)
    problems = [f"{f}: runs in the check but the page does not name it" for f in sorted(set(files) - set(named))]
    problems += [f"{f}: named on the page but no longer runs in the check" for f in sorted(set(named) - set(files))]
    problems += [f"{f}: named {named.count(f)} times" for f in sorted(set(named)) if named.count(f) > 1]
    earlier = {"-"}
    for file in path:
        if not callers[file] & earlier:
            problems.append(f"{file}: on the reading path, but nothing before it calls it ({sorted(callers[file])})")
        for f in under[file]:
            if not callers[f] & ({file, "-"} | set(under[file])):
                problems.append(f"{f}: named under {file}, which does not call it ({sorted(callers[f])})")
        earlier |= {file, *under[file]}
    if len(path) > READING_PATH_MOST:
        problems.append(f"the reading path has {len(path)} files ({READING_PATH_MOST} at most)")
    return problems


def _page(rev: str | None) -> str:
    if rev is None:
        return (ROOT / PAGE).read_text() if (ROOT / PAGE).exists() else ""
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{PAGE}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else ""


def _count(value: list[str] | int) -> int:
    return value if isinstance(value, int) else len(value)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", help="a git revision (repeat to compare); default: the working tree")
    parser.add_argument("--list", metavar="WORD", help="also list the items of each count whose name contains WORD")
    parser.add_argument(
        "--check-path",
        action="store_true",
        help="also trace one check through pytest and count the package files it runs (slow)",
    )
    args = parser.parse_args(argv)
    revs = args.rev or [None]
    results: list[dict[str, Any]] = [measure(rev) for rev in revs]
    if args.check_path:
        for rev, result in zip(revs, results):
            result.update(check_path(rev))
    labels = [rev or "working tree" for rev in revs]
    width = max(len(k) for k in results[0])
    out(f"{'':{width}}  " + "  ".join(f"{label:>12}" for label in labels))
    for key in results[0]:
        out(f"{key:{width}}  " + "  ".join(f"{_count(r[key]):>12}" for r in results))
    if args.list:
        for label, result in zip(labels, results):
            for key, items in result.items():
                if args.list.lower() in key.lower() and isinstance(items, list):
                    out(f"\n{label}: {key}")
                    for item in items:
                        out(f"  {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
