"""The rules docs/architecture.md states, held to the code where a test can read them.

tests/test_layers.py holds the layers; this file holds the rest: the pipeline's stages in the
order the page's table gives, the engine's five positional parameters, who reads
``result.extra``, who runs an artifact and compares outside the ``Check``, and that every
private API of another library goes through ``_compat`` (benchmarks/code_health.py's scan).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_torchexport"
PAGE = ROOT / "docs" / "architecture.md"


def _tree(relative: str) -> ast.Module:
    return ast.parse((PACKAGE / relative).read_text())


def _engine_files() -> list[Path]:
    """The engine: every folder of the package but the pytest glue (the page's first paragraph)."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.parent != PACKAGE and p.parent.name != "glue"]


def _section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# --- the stages, in the table's order ---------------------------------------------------------


def _pipeline_stages() -> list[str]:
    """The calls of ``_pipeline`` that take the check, in source order: ``module.function`` or a class."""
    function = next(
        n for n in ast.walk(_tree("engine/pipeline.py")) if isinstance(n, ast.FunctionDef) and n.name == "_pipeline"
    )
    calls = [
        n
        for n in ast.walk(function)
        if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id == "check"
    ]
    names = [ast.unparse(c.func) for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))]
    return [name for name in names if not name.startswith("stage.")]  # the optional stages: their own table


def _table_stages() -> list[str]:
    rows = [line for line in _section("One check, stage by stage").splitlines() if line.startswith("| ")][2:]
    called = [line.split(" | ")[2] for line in rows]
    return [m.group(1) for cell in called if (m := re.search(r"`([\w.]+)\(check\)", cell))]


def test_the_stage_table_lists_the_pipelines_stages_in_order():
    stages = _pipeline_stages()
    assert stages[:2] == ["exporting.build", "assumptions.recorded_size_export"]  # the scan reads the pipeline
    assert _table_stages() == stages


def test_the_pipeline_reaches_the_optional_stages_only_through_their_table():
    function = next(
        n for n in ast.walk(_tree("engine/pipeline.py")) if isinstance(n, ast.FunctionDef) and n.name == "_pipeline"
    )
    loops = [ast.unparse(n.iter) for n in ast.walk(function) if isinstance(n, ast.For)]
    assert loops == ["optional.OPTIONAL"] * 3  # begin, join on the search's exception, join after it
    imported = {a.name for n in ast.walk(_tree("engine/pipeline.py")) if isinstance(n, ast.ImportFrom) for a in n.names}
    from pytest_torchexport.stages.optional import OPTIONAL

    modules = {type(stage).__module__.rsplit(".", 1)[1] for stage in OPTIONAL}
    assert not modules & imported, "the pipeline calls an optional stage's module directly"


def test_the_optional_stage_table_lists_the_stages_in_order():
    from pytest_torchexport.stages.optional import OPTIONAL

    rows = [line for line in _section("The optional stages").splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0].strip("| `") for line in rows] == [stage.name for stage in OPTIONAL]
    for row, stage in zip(rows, OPTIONAL, strict=True):
        assert f"`{type(stage).__name__}`" in row.split(" | ")[1]
        for method in ("prepare", "begin", "join"):
            assert callable(getattr(stage, method)), (stage.name, method)


def test_every_stage_in_the_table_names_a_module_that_has_it():
    for call in _table_stages():
        if "." in call:
            module, function = call.split(".")
            assert hasattr(__import__(f"pytest_torchexport.stages.{module}", fromlist=[function]), function), call


# --- five positional parameters -------------------------------------------------------------


def _positional(path: Path) -> list[str]:
    """Functions of ``path`` with more than five positional parameters (``self``/``cls`` not counted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [a.arg for a in (*node.args.posonlyargs, *node.args.args) if a.arg not in ("self", "cls")]
            if len(names) > 5:
                found.append(f"{path.name}:{node.lineno} {node.name}({', '.join(names)})")
    return found


def test_no_engine_function_takes_more_than_five_positional_parameters():
    assert "more than five\npositional parameters" in _section("The `Check` (`stages/check.py`)")
    assert [f for path in _engine_files() for f in _positional(path)] == []


def test_the_parameter_count_sees_a_sixth_positional_parameter(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def six(self, a, b, c, d, e, f): pass\ndef kw(a, b, c, d, e, *, f): pass\n")
    assert _positional(path) == ["m.py:1 six(a, b, c, d, e, f)"]


# --- result.extra ---------------------------------------------------------------------------


def _extra_reads(path: Path) -> set[str]:
    """The keys ``path`` reads from a ``.extra`` (``x.extra[k]``, ``x.extra.get(k)``); ``*`` for all."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    keys = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "extra" and isinstance(node.ctx, ast.Load)):
            continue
        up = parents.get(node)
        if isinstance(up, ast.Subscript):
            if isinstance(up.ctx, ast.Load) or isinstance(parents.get(up), ast.Subscript):
                keys.add(ast.literal_eval(up.slice) if isinstance(up.slice, ast.Constant) else "*")
        elif isinstance(up, ast.Attribute) and up.attr == "get":
            key = parents[up].args[0]
            keys.add(key.value if isinstance(key, ast.Constant) else "*")
        elif isinstance(up, ast.Call) and up.func is node:
            continue  # page.extra(row): a function named extra
        elif not (isinstance(up, ast.Attribute) and up.attr in ("update", "setdefault")):
            keys.add("*")
    return keys


#: Who reads ``result.extra`` besides the report writers (results/), as the page's table says.
EXTRA_READERS = {
    "engine/schedule.py": {"cached"},
    "search/search.py": {"shipped"},
    "search/messages.py": {"shipped"},
}


def test_result_extra_is_read_by_the_report_writers_and_the_readers_the_page_names():
    readers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if not relative.startswith("results/") and (keys := _extra_reads(path)):
            readers[relative] = keys
    assert readers == EXTRA_READERS
    table = _section("Who may write what")
    for keys in EXTRA_READERS.values():
        for key in keys:
            assert f'extra["{key}"]' in table, key


def test_the_extra_scan_sees_reads_and_not_writes(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "def f(result, page, row):\n"
        "    result.extra['written'] = 1\n"
        "    result.extra.update(more=2)\n"
        "    page.extra(row)\n"
        "    result.extra['shipped']['blamed'] = 3\n"
        "    return result.extra.get('cached'), result.extra['read']\n"
    )
    assert _extra_reads(path) == {"shipped", "cached", "read"}


# --- check.run and check.compare --------------------------------------------------------------


def _calls(path: Path, name: str) -> list[str]:
    """Calls in ``path`` of ``...backend.run(...)`` (name ``run``) or of a bare ``compare(...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            name == "run"
            and isinstance(func, ast.Attribute)
            and func.attr == "run"
            and ast.unparse(func.value).endswith("backend")
        ):
            found.append(ast.unparse(func))
        if name == "compare" and isinstance(func, ast.Name) and func.id == "compare":
            found.append(func.id)
    return found


def _callers(name: str) -> set[str]:
    folders = [PACKAGE / "stages", PACKAGE / "search", PACKAGE / "engine"]
    return {str(p.relative_to(PACKAGE)) for f in folders for p in f.rglob("*.py") if _calls(p, name)}


def test_only_the_check_and_latency_run_an_artifact_through_its_backend():
    assert _callers("run") == {"stages/check.py", "stages/latency.py"}


def test_outputs_are_compared_through_the_check_and_state_apart():
    assert _callers("compare") == {"stages/check.py", "stages/side_effects.py", "search/search.py", "stages/prelude.py"}
    text = _section("The `Check` (`stages/check.py`)")
    for path in _callers("compare") | _callers("run"):
        assert Path(path).name in text or path in text, path


# --- private APIs -----------------------------------------------------------------------------


def test_no_private_api_outside_compat(code_health):
    """Every private name of another library the package uses is reached through ``_compat``
    (tests/test_compat.py asserts each one's shape)."""
    uses = code_health.private_api_uses(PACKAGE)
    assert any(use.startswith("_compat.py:") for use in uses)  # the scan sees _compat's own
    assert [use for use in uses if not use.startswith("_compat.py:")] == []


def test_the_private_api_scan_sees_each_kind_of_use(tmp_path, code_health):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "mod.py").write_text(
        "import torch.utils._pytree as pytree\n"
        "from _pytest.unittest import TestCaseFunction\n"
        "from hypothesis.internal.conjecture.providers import _get_local_constants\n"
        "def f(item, module, t):\n"
        "    item._fixtureinfo\n"
        "    getattr(item, '_excinfo', None)\n"
        "    t.hypothesis.inner_test._hypothesis_internal_add_digest = b''\n"
        "    return module._parameters\n"
        "class Clone(TestCaseFunction):\n"
        "    def _getobj(self):\n"
        "        return self._own()\n"
        "    def _own(self):\n"
        "        self._mine = 1\n"
        "        return self._mine\n"
    )
    uses = [use.split(": ", 1)[1] for use in code_health.private_api_uses(folder)]
    assert sorted(uses) == sorted(
        [
            "import torch.utils._pytree",
            "from _pytest.unittest import TestCaseFunction",
            "from hypothesis.internal.conjecture.providers import _get_local_constants",
            "item._fixtureinfo",
            "getattr(item, '_excinfo')",
            "t.hypothesis.inner_test._hypothesis_internal_add_digest",
            "module._parameters",
            "def Clone._getobj (an override)",
        ]
    )


def test_code_health_counts_a_revision_and_the_working_tree(code_health):
    lines = []
    assert code_health.main(["--rev", "HEAD"], out=lines.append) == 0
    counts = dict(re.match(r"(.+?)\s{2,}(\d+)$", line).groups() for line in lines[1:])
    assert set(counts) >= {
        "module globals",
        "broad excepts",
        "private API uses outside _compat",
        "test helper copies (same body)",
        "functions over 50 lines",
        "modules over 400 lines",
    }


# --- benchmarks -------------------------------------------------------------------------------


def _benchmark_imports() -> list[tuple[str, str, str | None]]:
    """(script, module, name) for each import of the package or of a sibling script in benchmarks/."""
    siblings = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    found = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                head = node.module.split(".")[0]
                if head == "pytest_torchexport" or head in siblings:
                    found += [(path.name, node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [
                    (path.name, a.name, None)
                    for a in node.names
                    if a.name.split(".")[0] == "pytest_torchexport" or a.name in siblings
                ]
    return found


def test_every_benchmark_imports_what_the_package_and_its_siblings_have(monkeypatch):
    """A benchmark that names a function since renamed fails here, not on the day it is run."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    imports = _benchmark_imports()
    assert any(module == "pytest_torchexport" for _, module, _ in imports)  # the scan sees them
    missing = []
    for script, module, name in imports:
        loaded = importlib.import_module(module)
        if name is not None and not hasattr(loaded, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script}: from {module} import {name}")
    assert missing == []


# --- one name, one thing -------------------------------------------------------------------


def test_no_two_modules_or_public_classes_share_a_name():
    """A reader who meets ``bundle.py`` or ``Captured`` in a traceback knows which one it is."""
    modules: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if path.name != "__init__.py":
            modules.setdefault(path.stem, []).append(relative)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                classes.setdefault(node.name, []).append(relative)
    assert {k: v for k, v in modules.items() if len(v) > 1} == {}
    assert {k: v for k, v in classes.items() if len(v) > 1} == {}


# --- counts that only go down --------------------------------------------------------------

#: Ceilings of two counts of benchmarks/code_health.py: lower one when a change lowers its count,
#: never raise it (a new ``Any`` or a new deferred import names a type or moves to the top instead).
CEILINGS = {"bare Any in signatures": 76, "imports inside functions": 76}


def test_the_counts_held_by_a_ratchet_never_rise(code_health):
    files = {str(p.relative_to(ROOT)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}
    counts = {
        "bare Any in signatures": len(code_health.bare_any(files)),
        "imports inside functions": len(code_health.imports_in_functions(files)),
    }
    assert {k: v for k, v in counts.items() if v > CEILINGS[k]} == {}


def test_the_ratchet_counts_see_a_bare_any_and_a_deferred_import(code_health):
    source = (
        "from typing import Any\n"
        "def f(x: Any, y: dict[str, Any]) -> Any:\n"
        "    import torch\n"
        "    def g():\n"
        "        import os\n"
        "    return x\n"
    )
    assert sorted(code_health.bare_any({"m.py": source})) == ["m.py:2: f ->", "m.py:2: f x"]
    assert code_health.imports_in_functions({"m.py": source}) == ["m.py:3: f torch", "m.py:5: g os"]


def test_every_timing_the_package_writes_is_explained_on_the_page():
    """The HTML page's "Where the time went" explains each key by ``TIMING_DOCS``."""
    from pytest_torchexport.results.report import TIMING_DOCS

    written = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "timings"
                and isinstance(node.slice, ast.Constant)
            ):
                written.add(node.slice.value)
    assert "search_s" in written
    assert written - set(TIMING_DOCS) == set()
