"""A broad ``except`` (bare, ``Exception``, ``BaseException``) in the package either lets the
error out (a bare ``raise``, or a row, finding or message that uses it) or says on its line
why catching everything is right there (``# noqa: BLE001 - <why>``: a user's model, an
exporter, a runtime or a third party's backend can raise anything). A plugin bug caught by
one that does neither ends as a quiet fallback or a wrong verdict (a rejected input, a skip)."""

import ast
from pathlib import Path

import pytest

import pytest_torchexport

PACKAGE = Path(pytest_torchexport.__file__).parent
BROAD = {"Exception", "BaseException", None}


def _caught(node: ast.expr | None) -> set[str | None]:
    if node is None:
        return {None}
    if isinstance(node, ast.Tuple):
        return set().union(*(_caught(e) for e in node.elts))
    return {node.id} if isinstance(node, ast.Name) else {node.attr} if isinstance(node, ast.Attribute) else set()


def _uses(node: ast.AST, name: str | None) -> bool:
    return name is not None and any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def swallows(handler: ast.ExceptHandler) -> bool:
    """Nothing of the error leaves the handler: no bare ``raise`` or one naming it, and its name unused."""
    for stmt in handler.body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.Raise) and (n.exc is None or _uses(n, handler.name)):
                return False
    return not any(_uses(stmt, handler.name) for stmt in handler.body)


def unexplained(source: str) -> list[int]:
    """The lines of broad handlers in ``source`` that swallow without saying why."""
    lines = source.splitlines()
    return [
        h.lineno
        for h in ast.walk(ast.parse(source))
        if isinstance(h, ast.ExceptHandler)
        and _caught(h.type) & BROAD
        and swallows(h)
        and "BLE001 - " not in lines[h.lineno - 1]
    ]


def test_every_broad_except_that_keeps_the_error_says_why():
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := unexplained(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "broad excepts that swallow the error without a `# noqa: BLE001 - why`: " + repr(found)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("try:\n    f()\nexcept Exception:\n    pass\n", [3]),
        ("try:\n    f()\nexcept:\n    g()\n", [3]),
        ("try:\n    f()\nexcept (ValueError, BaseException):\n    raise Other from None\n", [3]),
        ("try:\n    f()\nexcept Exception:  # noqa: BLE001 - a runtime raises anything\n    pass\n", []),
        ("try:\n    f()\nexcept Exception as exc:\n    note(exc)\n", []),
        ("try:\n    f()\nexcept BaseException:\n    cleanup()\n    raise\n", []),
        ("try:\n    f()\nexcept ValueError:\n    pass\n", []),
    ],
)
def test_what_counts_as_swallowing(source, flagged):
    assert unexplained(source) == flagged
