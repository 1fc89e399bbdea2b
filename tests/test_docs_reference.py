"""The generated reference is current, and documents every status and finding the code emits."""

import re
import subprocess
import sys
from pathlib import Path

import pytest_torchexport
from pytest_torchexport.results.report import FINDING_DOCS, STATUS_DOCS, STATUSES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(pytest_torchexport.__file__).parent


def test_reference_page_is_generated_from_the_code():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"], capture_output=True)
    assert proc.returncode == 0, "docs/reference.md is stale: run python docs/gen_reference.py"


def test_every_status_is_documented():
    assert set(STATUS_DOCS) == set(STATUSES)


def test_the_finding_kinds_are_a_closed_set_each_explained():
    """``Finding.kind`` is typed ``FindingKind`` (mypy holds every ``Finding(...)`` to it); each kind has its words."""
    from typing import get_args

    from pytest_torchexport.results.report import FindingKind

    assert list(get_args(FindingKind)) == list(FINDING_DOCS)


def test_every_finding_kind_the_code_emits_is_documented():
    from pytest_torchexport.results.explain import _ERROR_KINDS, _TRACER_KINDS

    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    emitted = set(re.findall(r'Finding\(\s*"([a-z_]+)"', source))
    emitted |= {kind for _, kind, _ in _TRACER_KINDS} | {kind for _, kind, _ in _ERROR_KINDS}
    assert len(emitted) > 15, "the scan found too few findings: the pattern is stale"
    assert emitted <= set(FINDING_DOCS), emitted - set(FINDING_DOCS)


def _key_rows(title: str) -> set[str]:
    """The keys a table of docs/report.md names in its first column."""
    text = (ROOT / "docs" / "report.md").read_text()
    start = text.index(title)
    section = text[start : text.find("\n#", start + 1)]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`(\w+)`", row)}


def test_every_extra_key_of_a_row_is_declared_and_documented():
    """``RowExtra`` declares each key a stage may add (mypy holds the code to it); the report page
    documents each, and lists no key the code no longer writes."""
    from pytest_torchexport.results.row_extra import RowExtra

    declared = set(RowExtra.__annotations__)
    extra = _key_rows("### Extra keys the code adds")
    assert len(declared) > 40, "the record lost its keys"
    assert declared - (extra | _key_rows("### Each result: its keys")) == set(), "undocumented in docs/report.md"
    assert extra - declared == set(), "docs/report.md lists a key RowExtra does not declare"
