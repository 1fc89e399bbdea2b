"""Every page of docs/ runs as written.

A page is a script: each ```python block headed ``# path.py`` writes that file (the heading
line is not part of it, as the pages' line numbers assume), and each ``$ command`` in a
console block runs in the page's folder, in order. A command must not crash (no
traceback the page does not show, no INTERNALERROR), and where the page shows pytest's
closing line, the run must end with the same counts: a page that teaches "3 failed, 1
passed" and no longer produces it is stale.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md") if "$ " in p.read_text())

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_FILE = re.compile(r"^# ([\w./-]+\.(?:py|ini|cfg|toml))\n")
_ENV = re.compile(r"^([A-Z_]+)=(\S+)\s+")
_COUNTS = re.compile(r"(\d+) (passed|failed|xfailed|xpassed|errors?|skipped|deselected)")
# Commands that talk to the outside world or only move around: the page explains them.
_SKIP = ("git ", "pip ", "cd ", "ls")


@dataclass
class Command:
    line: str
    shown: str


def steps(text: str) -> list[Command | tuple[str, str]]:
    """The page's files (as (path, content)) and commands (with the output shown), in order."""
    out: list = []
    for block in _FENCE.findall(text):
        header = _FILE.match(block)
        if header:
            out.append((header.group(1), block[header.end():]))
            continue
        if not block.startswith("$ "):
            continue
        chunks = re.split(r"^\$ ", block, flags=re.M)[1:]
        for chunk in chunks:
            line, _, shown = chunk.partition("\n")
            out.append(Command(line.strip(), shown))
    return out


def closing_counts(output: str) -> dict[str, int] | None:
    """pytest's closing line ('2 failed, 4 passed in 5.21s') as {outcome: n}, if any."""
    for line in reversed(output.strip().splitlines()):
        if re.search(r"\b(passed|failed|xfailed|no tests ran)\b.* in [\d.]+s", line):
            return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _COUNTS.findall(line)}
    return None


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # pytest-randomly (installed for the CI-tools tests) would reorder the pages' runs: a reader has not got it.
    env = {**os.environ, "COLUMNS": "80", "PYTEST_ADDOPTS": "-p no:randomly"}
    env.pop("GITHUB_ACTIONS", None)
    while match := _ENV.match(command):
        env[match.group(1)] = match.group(2)
        command = command[match.end():]
    command = re.sub(r"(^|; |&& )python\b", lambda m: m.group(1) + shlex.quote(sys.executable), command)
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.docs
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_as_written(page, tmp_path):
    ran = 0
    for step in steps((DOCS / page).read_text()):
        if isinstance(step, tuple):
            path, content = step
            target = tmp_path / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            continue
        if step.line.startswith(_SKIP):
            continue
        proc = run(re.sub(r"/tmp/\w+", ".", step.line), tmp_path)
        output = proc.stdout + proc.stderr
        where = f"{page}: $ {step.line}\n{output[-3000:]}"
        assert "INTERNALERROR" not in output, where
        if "Traceback (most recent call last)" not in step.shown:
            assert "Traceback (most recent call last)" not in output, where
        errors = [line.strip() for line in step.shown.splitlines() if line.startswith("ERROR:")]
        for error in errors:  # a usage error the page teaches: the same words, not just a failure
            assert error in output, where
        shown = closing_counts(step.shown)
        if shown is not None:
            assert closing_counts(output) == shown, where
        exits = re.findall(r"^exit=\d+$", step.shown, flags=re.M)  # `...; echo "exit=$?"`
        for code in exits:
            assert re.search(rf"^{code}$", output, flags=re.M), where
        if shown is None and not errors and not exits:
            assert proc.returncode == 0, where
        ran += 1
    assert ran, f"{page} shows commands but none ran"


def test_the_page_parser_finds_files_commands_and_counts():
    text = (
        "```python\n# tests/m.py\nx = 1\n```\n\n```\n$ COLUMNS=120 python -m pytest -q\n"
        "..F\n2 failed, 4 passed, 1 xfailed in 5.21s\n$ python m.py\nok\n```\n"
    )
    files, first, second = steps(text)
    assert files == ("tests/m.py", "x = 1\n")
    assert first.line == "COLUMNS=120 python -m pytest -q"
    assert closing_counts(first.shown) == {"failed": 2, "passed": 4, "xfailed": 1}
    assert second.line == "python m.py" and closing_counts(second.shown) is None
