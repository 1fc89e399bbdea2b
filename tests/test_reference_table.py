"""One vocabulary: every flag, ini key, marker option and environment variable is a row of
docs/reference.md (generated from the code: tests/test_docs_reference.py holds the page equal to
the generator), and every flag has an ini key of the same name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest_torchexport
from pytest_torchexport.options import (
    ENVIRONMENT,
    ENVIRONMENT_ALIASES,
    INTERNAL_ENVIRONMENT,
    MARKER_OPTIONS,
    size_limits,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(pytest_torchexport.__file__).parent
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


def _cells(column: int) -> set[str]:
    """The names in one column of the reference's big table (option, flag, ini, environment)."""
    body = REFERENCE.split("| option | flag | ini | environment | default | meaning |")[1].split("\n\n")[0]
    rows = [line.split(" | ") for line in body.splitlines()[2:]]
    return {row[column].strip("| `") for row in rows if row[column].strip("| `")}


def test_every_flag_and_ini_key_pytest_shows_is_a_row_and_each_flag_has_its_ini_key(pytester):
    # What a person sees: pytest --help, the torchexport group and the ini keys.
    help_text = pytester.runpytest("--help").stdout.str()
    flags = set(re.findall(r"(--torchexport-[a-z0-9-]+)", help_text))
    inis = set(re.findall(r"^\s+(torchexport_[a-z0-9_]+)\s", help_text, re.M))
    assert len(flags) > 15 and len(inis) > 15, "the scan found too few: the patterns are stale"
    assert flags <= _cells(1), f"flags without a row in docs/reference.md: {flags - _cells(1)}"
    assert inis <= _cells(2), f"ini keys without a row in docs/reference.md: {inis - _cells(2)}"
    missing = {f for f in flags if "torchexport_" + f.removeprefix("--torchexport-").replace("-", "_") not in inis}
    assert not missing, f"flags without an ini key of the same name: {missing}"
    # the help shows numbers and words, never an internal constant's name (BUDGET_FLOOR_S)
    ours = help_text.split("export validation (pytest-torchexport):")[1].splitlines()[1:]
    section = "\n".join(line for line in ours[: next(i for i, x in enumerate(ours) if x and not x[0].isspace())])
    constants = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", section)) - set(ENVIRONMENT) - set(ENVIRONMENT_ALIASES)
    assert not constants, constants


def test_every_marker_option_is_a_row():
    assert set(MARKER_OPTIONS) == _cells(0)


def test_every_environment_variable_the_package_reads_is_a_row():
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    read = set(re.findall(r'environ(?:\.get|\.pop)?\(\s*"([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'environ\[\s*"([A-Z][A-Z0-9_]+)"\s*\]', source))
    read |= set(re.findall(r'"([A-Z][A-Z0-9_]+)" in os\.environ', source))
    read |= set(re.findall(r'environment\(\s*"([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'"(TORCHEXPORT_[A-Z0-9_]+)"', source))
    assert {"TORCHEXPORT_JOBS", "TORCHEXPORT_CACHE_SECRET"} <= read, "the scan found too few: the patterns are stale"
    unlisted = read - set(ENVIRONMENT) - set(ENVIRONMENT_ALIASES) - set(INTERNAL_ENVIRONMENT)
    assert not unlisted, f"environment variables read but not in options.ENVIRONMENT: {unlisted}"
    assert set(ENVIRONMENT) | set(ENVIRONMENT_ALIASES) == _cells(3)
    # read in options.py and nowhere else
    elsewhere = [
        (p.relative_to(PACKAGE), name)
        for p in PACKAGE.rglob("*.py")
        if p.name != "options.py"
        for name in ENVIRONMENT
        if re.search(rf'os\.environ(?:\.get)?[\[(]\s*"{name}"', p.read_text())
    ]
    assert not elsewhere, elsewhere


def test_the_copy_limit_is_read_under_its_name_and_its_earlier_one(monkeypatch):
    from pytest_torchexport.options import environment

    monkeypatch.delenv("TORCHEXPORT_COPY_LIMIT", raising=False)
    monkeypatch.setenv("TORCHEXPORT_COPY_BUDGET", "123")
    assert environment("TORCHEXPORT_COPY_LIMIT", "0") == "123"
    monkeypatch.setenv("TORCHEXPORT_COPY_LIMIT", "456")
    assert environment("TORCHEXPORT_COPY_LIMIT", "0") == "456"


def test_the_size_limits_switch_is_read_under_its_name_and_its_earlier_one(monkeypatch):
    monkeypatch.delenv("TORCHEXPORT_SIZE_LIMITS", raising=False)
    monkeypatch.delenv("TORCHEXPORT_SIZE_BUDGET", raising=False)
    assert size_limits()
    monkeypatch.setenv("TORCHEXPORT_SIZE_BUDGET", "off")  # the earlier name
    assert not size_limits()
    monkeypatch.delenv("TORCHEXPORT_SIZE_BUDGET")
    monkeypatch.setenv("TORCHEXPORT_SIZE_LIMITS", "off")
    assert not size_limits()


def test_the_new_ini_keys_work_and_the_earlier_model_key_is_still_read(pytester):
    pytester.makepyfile(
        zoo="import torch\n\ndef make():\n    return torch.nn.Linear(4, 3)\n\n"
        "def other():\n    return torch.nn.Linear(4, 2)\n",
        test_file="def test_not_collected():\n    pass\n",
    )
    pytester.makeini(
        "[pytest]\naddopts = -p no:randomly\ntorchexport_backends = trace\n"
        "torchexport_models = zoo.py:make\n"  # the earlier name
        "torchexport_model = zoo.py:other\ntorchexport_models_only = true\ntorchexport_seed = 3\n"
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "torchexport-model::zoo.py:other[[]torchexport-trace[]]",
            "torchexport-model::zoo.py:make[[]torchexport-trace[]]",
        ]
    )
    assert "test_not_collected" not in result.stdout.str()
    assert "Unknown config option" not in result.stdout.str() + result.stderr.str()
