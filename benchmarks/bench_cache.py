"""What the verdict cache costs and saves, side by side in one run.

A suite (``examples/`` by default, copied to a temporary folder) runs four ways, each in a
fresh interpreter:

- ``plain``: the tests as written, ``-p no:torchexport`` (the marker registered, nothing checked);
- ``off``: marked, ``--torchexport-cache=off`` (every check runs: the cost before the cache);
- ``cold``: marked, an empty cache folder (every check runs, and its pass is stored);
- ``warm``: marked, the same folder again with nothing changed (every pass reused).

Targets: ``warm / plain <= 1.3`` and ``cold / off <= 1.05``. ``--repeat`` runs the four again,
rotating nothing (``cold`` needs a fresh folder and ``warm`` needs ``cold``'s), and keeps the
best wall time of each. The machine's load average (``os.getloadavg``) is printed before and
after: other processes slow every run, the ratios less.

``--mark-all`` writes a conftest that adds a bare marker to every test (bodies untouched), the
way a team marks a whole suite: ``--suite /tmp/e3nn/tests --mark-all -k ...`` times a real
library's suite (its checkout is read, never written: the tests are copied).
Where ``PYTHONDONTWRITEBYTECODE`` is set (as on the project's test machine and in many
containers), every run compiles the plugin's modules from source, a fixed cost a fully
reused session pays in full; ``--write-bytecode`` measures the cached case too.
``examples/test_fixture.py`` is left out: its ``torchexport`` fixture has no plain form.

    python benchmarks/bench_cache.py                                   # examples/, 25 examples
    python benchmarks/bench_cache.py --examples 5 --backends trace,export
    python benchmarks/bench_cache.py --repeat 3 --write-bytecode
    python benchmarks/bench_cache.py --suite /tmp/e3nn/tests --mark-all --examples 5 -k "test_norm"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INI = """[pytest]
markers =
    torchexport: pytest-torchexport's marker (registered here so the plain run knows it)
addopts = -p no:randomly -p no:cacheprovider
"""
MARK_ALL = """
# Written by benchmarks/bench_cache.py: marks every test, bodies untouched (only when the plugin is on).
import pytest


def pytest_collection_modifyitems(config, items):
    if config.pluginmanager.hasplugin("torchexport"):
        for item in items:
            item.add_marker(pytest.mark.torchexport)
"""


def run(folder: Path, args: list[str], *, write_bytecode: bool = False) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_ADDOPTS", None)
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args], cwd=folder, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    tail = [line for line in proc.stdout.splitlines() if re.search(r"\b(passed|failed|error)\b.* in ", line)]
    return seconds, (tail[-1] if tail else proc.stdout[-500:] + proc.stderr[-500:])


def spent(report: Path) -> str:
    """The cache's own time in a run (``timings.cache_s``: key, lookup, store) against its checks'."""
    if not report.exists():
        return ""
    rows = json.loads(report.read_text())["results"]
    cache = sum(r["timings"].get("cache_s", 0.0) for r in rows)
    total = sum(r["timings"].get("total_s", 0.0) for r in rows)
    reused = sum(1 for r in rows if r.get("cached"))
    return f"  [{len(rows)} checks, {reused} reused; cache {cache:.3f} s of {total:.1f} s in checks]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "examples")
    parser.add_argument("--mark-all", action="store_true", help="add a bare marker to every test (a conftest)")
    parser.add_argument("-k", default=None)
    parser.add_argument("--examples", type=int, default=None, help="--torchexport-examples (default: the plugin's 25)")
    parser.add_argument("--backends", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--write-bytecode",
        action="store_true",
        help="let Python cache compiled modules (drop PYTHONDONTWRITEBYTECODE), as a pip-installed plugin runs; "
        "one unmeasured run writes them first",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    suite = work / "suite"
    shutil.copytree(args.suite, suite, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "test_fixture.py"))
    if not (suite / "pytest.ini").exists():
        (suite / "pytest.ini").write_text(INI)
    if args.mark_all:
        conftest = suite / "conftest.py"
        conftest.write_text((conftest.read_text() if conftest.exists() else "") + MARK_ALL)
    common = ["-k", args.k] if args.k else []
    marked = [*common, "--torchexport-devices=cpu", "--torchexport-seed=0"]
    if args.examples:
        marked.append(f"--torchexport-examples={args.examples}")
    if args.backends:
        marked.append(f"--torchexport-backends={args.backends}")

    print(
        f"suite {args.suite} ({'marked by a conftest' if args.mark_all else 'its own markers'}), "
        f"{os.cpu_count()} cores, load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(_bytecode(args.write_bytecode))
    if args.write_bytecode:
        run(suite, [*marked, "--torchexport-cache=off", "--torchexport-examples=1"], write_bytecode=True)
    best: dict[str, float] = {}
    for round_ in range(args.repeat):
        cache = work / f"cache-{round_}"
        runs = {
            "plain": [*common, "-p", "no:torchexport"],
            "off": [*marked, "--torchexport-cache=off"],
            "cold": [*marked, f"--torchexport-cache={cache}"],
            "warm": [*marked, f"--torchexport-cache={cache}"],
        }
        for name, extra in runs.items():
            report = work / f"{name}-{round_}.json"
            seconds, closing = run(
                suite,
                [*extra, f"--torchexport-report={report}"] if name != "plain" else extra,
                write_bytecode=args.write_bytecode,
            )
            best[name] = min(best.get(name, seconds), seconds)
            print(f"  round {round_ + 1} {name:5} {seconds:7.1f} s  {closing}{spent(report)}", flush=True)
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    for name in ("plain", "off", "cold", "warm"):
        print(f"{name:5} {best[name]:7.1f} s (best of {args.repeat})")
    warm, cold = best["warm"] / best["plain"], best["cold"] / best["off"]
    print(
        f"warm / plain = {warm:.2f}x (target <= 1.3)   cold / off = {cold:.3f}x (target <= 1.05)   "
        f"off / plain = {best['off'] / best['plain']:.2f}x   warm / off = {best['warm'] / best['off']:.2f}x"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _bytecode(written: bool) -> str:
    """How the runs import Python modules: a warm run's fixed cost is mostly importing, so this
    decides much of ``warm / plain``."""
    if written or not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "bytecode: cached (each run imports compiled modules, as a pip-installed plugin does)"
    return (
        "bytecode: not written (PYTHONDONTWRITEBYTECODE is set): every run compiles each module it imports "
        "from source, as in a container that sets it; --write-bytecode measures the cached case"
    )


if __name__ == "__main__":
    sys.exit(main())
