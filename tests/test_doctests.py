"""The examples in the package's docstrings run: every ``>>>`` of every module is a doctest.

A docstring example that never runs goes stale unnoticed; this finds each module that holds
one (by reading the source, so a new one is picked up) and runs it.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_torchexport"
WITH_EXAMPLES = sorted(
    ".".join(("pytest_torchexport", *path.relative_to(PACKAGE).with_suffix("").parts))
    for path in PACKAGE.rglob("*.py")
    if "\n>>> " in path.read_text() or "    >>> " in path.read_text()
)


def test_the_package_has_doctests_to_run() -> None:
    assert "pytest_torchexport.glue.costs" in WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0
    assert failed == 0, f"{failed} of {attempted} doctest examples of {name} failed (run: python -m doctest -v)"
