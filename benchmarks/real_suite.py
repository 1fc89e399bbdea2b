"""Mark a real library's own pytest suite with a conftest (test bodies untouched) and print
which module every item checked, with its status: the check that a green item is green on
the module the test is about. The same suite also runs plain first (no conftest,
``-p no:torchexport``), and the closing line prints what marking costs: wall time and the
peak RSS of the largest process, plain and marked, and marked/plain (``--no-plain`` skips
the plain run).

    python benchmarks/real_suite.py PATH/TO/CHECKOUT [--tests PATH...] [-k EXPR] [--backends trace,script,onnx,export]

The checkout is the library's own source (installed with ``pip install --no-deps -e``
first); nothing of it is copied here. A ``conftest.py`` that adds a bare
``torchexport`` marker in ``pytest_collection_modifyitems`` (the usual way a team marks a
whole suite) is written next to its tests for the run and removed afterwards. Used on
pytorch-tcn (MIT) at commit 3b3deac: see the closing note of issue 17.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFTEST = """
# Written by pytest-torchexport's benchmarks/real_suite.py: marks every test, bodies untouched.
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.torchexport(examples={examples}, timeout={timeout}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--tests", nargs="+", default=["tests"], help="test paths (files or folders)")
    parser.add_argument("-k", default=None)
    parser.add_argument("--backends", default="trace,script,onnx,export")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain run (no marked/plain ratio)")
    opts = parser.parse_args()

    conftest = opts.checkout / "conftest.py"
    if conftest.exists():
        sys.exit(f"{conftest} exists: run on a checkout without a root conftest.py")
    report = Path(tempfile.mkdtemp()) / "report.json"
    base = [sys.executable, "-m", "pytest", *opts.tests, "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
            "-W", "ignore::DeprecationWarning"] + (["-k", opts.k] if opts.k else [])
    plain = None
    if not opts.no_plain:
        # Plain first: getrusage(RUSAGE_CHILDREN) keeps the largest process waited for so far,
        # so read after the plain run it is the plain run's own.
        t0 = time.perf_counter()
        proc = subprocess.run([*base, "-p", "no:torchexport"], cwd=opts.checkout, capture_output=True, text=True)
        plain = (time.perf_counter() - t0, _largest_child_mb())
        print("plain: " + (proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]))
    conftest.write_text(CONFTEST.format(examples=opts.examples, timeout=opts.timeout))
    cmd = [*base, f"--torchexport-backends={opts.backends}", f"--torchexport-report={report}"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=opts.checkout, capture_output=True, text=True)
    finally:
        conftest.unlink()
    elapsed = time.perf_counter() - t0
    print("marked: " + (proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]))
    if plain is not None:
        marked_mb = _largest_child_mb()  # the larger of both runs: marked's own where it is the larger
        print(f"plain {plain[0]:.0f} s, largest process {plain[1]:.0f} MB; marked {elapsed:.0f} s, largest process "
              f"{marked_mb:.0f} MB{'' if marked_mb > plain[1] else ' (at most)'}; marked/plain {elapsed / plain[0]:.2f}x "
              f"time, {marked_mb / plain[1]:.2f}x memory; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not report.exists():
        print("no report written")
        return 1
    rows = json.loads(report.read_text())["results"]
    print(f"{len(rows)} rows in {elapsed:.0f} s\n")
    print(f"{'test':60} {'backend':8} {'module':24} status")
    for r in rows:
        print(f"{r['test'].split('::', 1)[-1][:60]:60} {r['backend']:8} {r['module'] or '-':24} {r['status']}")
    print()
    _print_timings(rows)
    print()
    for (module, status), n in sorted(collections.Counter((r["module"] or "-", r["status"]) for r in rows).items()):
        print(f"{module:24} {status:14} {n}")
    return 0


def _print_timings(rows: list[dict]) -> None:
    """Where the checks' time went: each timing summed over the rows, per backend and in all
    (``total_s`` is each check's wall time from its start; the stages are parts of it)."""
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        for key, value in (r.get("timings") or {}).items():
            sums[r["backend"]][key] += value
            sums["all"][key] += value
    keys = sorted(sums["all"], key=lambda k: -sums["all"][k])
    print(f"{'seconds summed over rows':24} " + " ".join(f"{k.removesuffix('_s')[:10]:>10}" for k in keys))
    for backend, counter in sums.items():
        print(f"{backend:24} " + " ".join(f"{counter[k]:10.1f}" for k in keys))
    every = sums["all"]
    floor = every["export_s"] + every["run_s"] + every["reference_s"]
    if every["total_s"]:
        print(f"the floor's work (exports, the search's artifact and eager forwards): {floor:.1f} s of "
              f"{every['total_s']:.1f} s summed over the checks ({floor / every['total_s']:.0%})")


def _largest_child_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


if __name__ == "__main__":
    raise SystemExit(main())
