"""Regenerate the outputs docs/ pages show from real runs: ``python docs/regen_outputs.py [page.md ...]``.

A page is a script (tests/test_docs_run.py runs it): each ```python block headed ``# path.py``
writes that file, and each ``$ command`` line in a console block runs in the page's folder, in
order; the lines under it, up to the next ``$``, are the output the page shows. An output
block of its own (a report's Markdown, a JSON row) is tied to a command by a comment on the
line before its fence, ``<!-- $ command -->``: the command runs there, unseen by a reader,
and the block is its output.

A shown output is an excerpt of the real one:
- a line that is ``...`` alone (any indent) stands for any number of lines left out, and
  the shown lines start and end anywhere in the real output; between two ``...`` the shown
  lines are consecutive real lines;
- ``...`` within a line stands for any text there (``File ".../ctypes/__init__.py"``, a
  message cut short with ``...``);
- two lines match when they are equal once the run-to-run noise is normalised (``noise``):
  durations (``5.93s``, ``12 ms``, ``0:00:05``, JSON ``*_s``/``*_ms`` fields, the summary's
  ``ms e/a`` cells such as ``0.028/0.048`` and a ``latency_ms`` dict's values), sizes of
  memory (``14.6 MB``), numbers below 1e-4 written with an exponent (``1.2e-07``: float32 rounding, which differs between
  CPUs), dates, versions (``2.13.0+cpu``), absolute paths, hex addresses and digests (a
  cache entry's name), and runs of spaces (a duration that grows a digit
  re-aligns a table, and a summary's cause cell wrapped or cut elsewhere: see [Wrapped
  Cells]; the length of pytest's ``=====`` rules around a closing line). Counts, statuses,
  errors and messages are not noise.
- a console block after ``<!-- output: loose -->`` is checked by its closing counts only,
  for output that no run repeats: the order xdist's workers finish in, what a time budget
  left untried, a model that draws unseeded random values where the plugin rebuilds it.

This script runs every page (or the pages named) in a fresh folder and rewrites each shown
output from the real one, keeping what the page shows: its ``...`` stay, a line that still
matches stays as written (so a rerun does not churn timings), and a line that changed, or
appeared inside a shown stretch, comes from the run; lines the page skipped without a
``...`` get one. ``--check`` writes nothing and exits 1
when a page's outputs are stale. Commands run with ``CI`` set but empty (derandomized draws,
see [Docs CI]), ``COLUMNS=80``, and ``python`` meaning this interpreter.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_FILE = re.compile(r"^# ([\w./-]+\.(?:py|ini|cfg|toml))\n")
_HIDDEN = re.compile(r"<!-- \$ (.+?) -->\n$")
_LOOSE = "<!-- output: loose -->"
_ENV = re.compile(r"^([A-Z_]+)=(\S+)\s+")
# Commands that talk to the outside world or only move around: the page explains them.
SKIP = ("git ", "pip ", "cd ", "ls")


@dataclass
class Command:
    line: str
    shown: str
    start: int = 0  # where the shown output sits in the page's text
    end: int = 0
    loose: bool = False  # compared by its closing counts only


@dataclass
class File:
    path: str
    content: str


def steps(text: str) -> list[Command | File]:
    """The page's files and commands (with the output each shows, and where), in order."""
    out: list[Command | File] = []
    for fence in _FENCE.finditer(text):
        block, base = fence.group(1), fence.start(1)
        header = _FILE.match(block)
        if header:
            out.append(File(header.group(1), block[header.end():]))
            continue
        before = text[:fence.start()]
        hidden = _HIDDEN.search(before[-600:])
        if hidden:
            out.append(Command(hidden.group(1).strip(), block, base, fence.end(1)))
            continue
        if not block.startswith("$ "):
            continue
        loose = before.rstrip().endswith(_LOOSE)
        heads = list(re.finditer(r"^\$ (.*)\n", block, flags=re.M))
        for head, after in zip(heads, heads[1:] + [None]):
            stop = after.start() if after else len(block)
            out.append(Command(head.group(1).strip(), block[head.end():stop], base + head.end(), base + stop, loose))
    return out


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One page command, as a reader of the page runs it (stderr interleaved with stdout)."""
    # pytest-randomly (installed for the CI-tools tests) would reorder the pages' runs: a reader has not got it.
    # [Docs CI] CI set but empty: hypothesis (and so the plugin) sees CI and derandomizes the draws,
    # so a page's counts and failing inputs are the same every run; pytest, which wants it
    # non-empty, still truncates its summary lines as on a reader's terminal.
    env = {**os.environ, "COLUMNS": "80", "PYTEST_ADDOPTS": "-p no:randomly", "CI": "", "PYTHONUNBUFFERED": "1"}
    for name in ("GITHUB_ACTIONS", "BUILD_NUMBER"):
        env.pop(name, None)
    # The docs runner's own xdist worker is not the reader's: a page's pytest runs where they say (-n or not).
    for name in [k for k in env if k.startswith("PYTEST_XDIST_")]:
        env.pop(name)
    while match := _ENV.match(command):
        env[match.group(1)] = match.group(2)
        command = command[match.end():]
    command = re.sub(r"/tmp/\w+", ".", command)
    command = re.sub(r"(^|; |&& |\| )python\b", lambda m: m.group(1) + shlex.quote(sys.executable), command)
    return subprocess.run(command, shell=True, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


# [Output Noise] What may differ between a shown output and a real one. Only what a rerun on
# another machine changes: never a count, a status, a verdict or a message's words.
_NOISE = [
    (re.compile(r"(?<![\w.])/tmp/\w+/"), "./"),  # a page's /tmp/NAME is run as its own folder (see run)
    (re.compile(r"(?<![\w.])/(?:[^\s/:'\"()\[\],]+/)+[^\s/:'\"()\[\],]*"), "<path>"),
    (re.compile(r"\b0x[0-9a-fA-F]{4,}\b"), "<addr>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<digest>"),  # a cache key: it digests the plugin's own source
    (re.compile(r"\b\d{4}-\d\d-\d\d\b"), "<date>"),
    (re.compile(r"(?<![\w.])\d+\.\d+\.\d+(?:\+\w+)?(?![\w.])"), "<version>"),  # torch 2.13.0+cpu, Python 3.11.7
    (re.compile(r"(\b\w+_m?s[\"']?\s*[:=]\s*)-?[\d.]+(?:e[+-]?\d+)?"), r"\1<time>"),
    (re.compile(r" \(\d+:\d\d:\d\d\)"), ""),  # pytest's `in 71.87s (0:01:11)` past a minute
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|µs|us|ns|s|min|h)\b"), "<time>"),
    (re.compile(r"\b\d+:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"(?<![\w./])[\d.]+(?:e-\d+)?/[\d.]+(?:e-\d+)?(?![\w./])"), "<ms>/<ms>"),  # summary's `ms e/a`
    (re.compile(r"([\"'](?:eager|artifact)[\"']\s*:\s*)[\d.]+(?:e-?\d+)?"), r"\1<ms>"),  # a row's latency_ms
    (re.compile(r"(?<![\w.])[\d,]+(?:\.\d+)?\s?(?:[kMGT]i?B)\b"), "<memory>"),
    (re.compile(r"(?<![\w.])\d(?:\.\d+)?e-(?:0[5-9]|[1-9]\d)\b"), "<tiny>"),  # float32 rounding: the CPU's kernels
    (re.compile(r"([=_-])\1{2,}"), r"\1\1\1"),  # pytest centres a line in rules as long as the rest leaves
    (re.compile(r"\s+"), " "),
]


def noise(line: str) -> str:
    """A line with run-to-run noise replaced (see [Output Noise])."""
    for pattern, repl in _NOISE:
        line = pattern.sub(repl, line)
    return line.strip()


def elided(line: str) -> bool:
    return line.strip() == "..."


def same(shown: str, real: str) -> bool:
    """Does a shown line stand for this real line? (A trailing ``...`` abbreviates it.)"""
    a, b = noise(shown), noise(real)
    if a == b:
        return True
    if "..." in a and a != "...":  # `...` within a line stands for any text there
        pattern = ".*?".join(re.escape(part.strip()) for part in a.split("..."))
        if any(re.fullmatch(pattern, text) for text in (b, " ".join(real.split()))):
            return True
    if a.endswith("…") or b.endswith("…"):  # a cell cut where its column's width put the third line's end
        a, b = (text[:-1].rsplit(" ", 1)[0] if text.endswith("…") else text for text in (a, b))
        return bool(a) and (a.startswith(b) or b.startswith(a))
    return False


# [Wrapped Cells] The summary wraps a long cause within its column, which starts after the
# `ms e/a` cells: a wider timing moves the column and the words wrap elsewhere. Lines indented
# this far continue the line above, and are compared joined to it.
_CONTINUED = re.compile(r"^ {24,}\S")


def logical(lines: list[str]) -> list[str]:
    """Lines with the summary's wrapped cells joined to their row (see [Wrapped Cells])."""
    out: list[str] = []
    for line in lines:
        if out and _CONTINUED.match(line) and not elided(out[-1]):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def segments(shown: str) -> list[list[str]]:
    """The shown lines in runs of consecutive real lines (split at ``...``)."""
    out: list[list[str]] = [[]]
    for line in shown.rstrip("\n").splitlines():
        if elided(line):
            out.append([])
        else:
            out[-1].append(line)
    return [seg for seg in out if seg]


def mismatch(shown: str, real: str) -> str | None:
    """None where ``shown`` is an excerpt of ``real``; else the first shown stretch it lacks."""
    lines = logical(real.splitlines())
    at = 0
    for seg in map(logical, segments(shown)):
        found = next((i for i in range(at, len(lines) - len(seg) + 1)
                      if all(same(s, r) for s, r in zip(seg, lines[i:i + len(seg)]))), None)
        if found is None:
            best = _closest(seg, lines, at)
            return "shown:\n" + "\n".join(seg) + "\nreal (closest):\n" + "\n".join(lines[best[0]:best[1]])
        at = found + len(seg)
    return None


def _placements(seg: list[str], lines: list[str], at: int) -> list[tuple[list[str], int, int]]:
    """Where the shown lines ``seg`` sit in the real ``lines`` (from ``at``): (the shown lines,
    start, stop) per stretch. Shown lines that are far apart in the run (the page left the
    lines between out without a ``...``) become two stretches, which the rewrite joins with one."""
    keys = [noise(line) for line in lines[at:]]
    wanted = [noise(line) for line in seg]
    matcher = difflib.SequenceMatcher(None, wanted, keys, autojunk=False)
    # a stretch of blank lines or rules alone anchors nothing: it is everywhere
    blocks = [b for b in matcher.get_matching_blocks()
              if b.size and any(re.search(r"[^\W_]", k) for k in wanted[b.a:b.a + b.size])]
    if not blocks:  # every line changed: the window of lines most like them, if any is
        scores = [(sum(difflib.SequenceMatcher(None, w, k).ratio() for w, k in zip(wanted, keys[i:])), i)
                  for i in range(max(1, len(keys) - len(wanted) + 1))]
        score, best = max(scores, default=(0.0, 0))
        if score < 0.6 * len(wanted):
            return []
        return [(seg, at + best, at + min(len(keys), best + len(wanted)))]
    slack = 3
    clusters = [[blocks[0]]]
    for block in blocks[1:]:
        last = clusters[-1][-1]
        if (block.b - last.b - last.size) - (block.a - last.a - last.size) > slack:
            clusters.append([block])
        else:
            clusters[-1].append(block)
    out = []
    for k, cluster in enumerate(clusters):
        first, last = cluster[0], cluster[-1]
        a0 = 0 if k == 0 else first.a
        a1 = len(seg) if k == len(clusters) - 1 else clusters[k + 1][0].a
        start = max(0, first.b - (first.a - a0))
        stop = min(len(keys), last.b + last.size + (a1 - last.a - last.size))
        out.append((seg[a0:a1], at + start, at + stop))
    return out


def _closest(seg: list[str], lines: list[str], at: int) -> tuple[int, int]:
    """The stretch of real lines (from ``at``) that ``seg`` most likely shows, as [start, stop)."""
    places = _placements(seg, lines, at)
    return (places[0][1], places[-1][2]) if places else (at, at)


def regenerate(shown: str, real: str) -> str:
    """The shown output rewritten from the real one, keeping its elisions and unchanged lines."""
    if mismatch(shown, real) is None:
        return shown
    lines = real.splitlines()
    out: list[str] = []
    at = 0
    for part in re.split(r"(?m)^([ \t]*\.\.\.[ \t]*(?:\n|$))", shown.rstrip("\n") + "\n"):
        if not part:
            continue
        if elided(part):
            out.append(part.rstrip("\n"))
            continue
        seg = part.rstrip("\n").splitlines()
        places = _placements(seg, lines, at)
        if not places:  # nothing of it is in the run: leave it for a person to read
            out.extend(seg)
            continue
        for k, (shown_lines, start, stop) in enumerate(places):
            if k:
                out.append("...")
            out.extend(next((s for s in shown_lines if same(s, line)), line) for line in lines[start:stop])
            at = stop
    return "\n".join(out) + "\n"


def run_page(page: Path, folder: Path, *, on_step=None) -> list[tuple[Command, subprocess.CompletedProcess[str]]]:
    """Run a page in ``folder``: its files written, its commands run in order."""
    ran = []
    for step in steps(page.read_text()):
        if isinstance(step, File):
            target = folder / step.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.content)
            continue
        if step.line.startswith(SKIP):
            continue
        proc = run(step.line, folder)
        proc.stdout = proc.stdout.replace(f"{folder}/", ".../")  # the page's folder is not the reader's
        ran.append((step, proc))
        if on_step:
            on_step(step, proc)
    return ran


def rewrite(page: Path, ran: list[tuple[Command, subprocess.CompletedProcess[str]]]) -> str:
    """The page's text with every output regenerated (a loose one too: its run is as real)."""
    text = page.read_text()
    for step, proc in sorted(ran, key=lambda pair: -pair[0].start):
        if not step.shown.strip():
            continue
        new = regenerate(step.shown, proc.stdout)
        text = text[:step.start] + new + text[step.end:]
    return text


def unplaced(text: str, ran: list[tuple[Command, subprocess.CompletedProcess[str]]]) -> list[str]:
    """The outputs of a (rewritten) page that still are not excerpts of their runs: for a person to edit."""
    commands = [s for s in steps(text) if isinstance(s, Command) and not s.line.startswith(SKIP)]
    out = []
    for step, (_, proc) in zip(commands, ran):
        differs = None if step.loose else mismatch(step.shown, proc.stdout)
        if differs:
            out.append(f"$ {step.line}\n{differs}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help="pages of docs/ (default: every page that shows a command)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page's outputs are stale")
    args = parser.parse_args()
    names = args.pages or sorted(p.name for p in DOCS.glob("*.md") if "$ " in p.read_text())
    stale = 0
    for name in names:
        page = DOCS / Path(name).name
        print(f"{page.name}:", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            ran = run_page(page, Path(folder),
                           on_step=lambda step, proc: print(f"  $ {step.line[:90]}  (exit {proc.returncode})", flush=True))
        old = page.read_text()
        new = rewrite(page, ran)
        for left in unplaced(new, ran):
            print(f"  still differs, edit by hand:\n{left}")
        if new == old:
            continue
        stale += 1
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/docs/{page.name}",
                                                   f"b/docs/{page.name}", n=1))
        if not args.check:
            page.write_text(new)
    print(f"{stale} of {len(names)} pages {'stale' if args.check else 'rewritten'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
