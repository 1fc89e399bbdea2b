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


def test_every_finding_kind_the_code_emits_is_documented():
    from pytest_torchexport.results.explain import _ERROR_KINDS, _TRACER_KINDS

    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    emitted = set(re.findall(r'Finding\(\s*"([a-z_]+)"', source))
    emitted |= {kind for _, kind, _ in _TRACER_KINDS} | {kind for _, kind, _ in _ERROR_KINDS}
    assert len(emitted) > 15, "the scan found too few findings: the pattern is stale"
    assert emitted <= set(FINDING_DOCS), emitted - set(FINDING_DOCS)
