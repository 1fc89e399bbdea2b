"""What the C++ load check costs: the runner's one-off build, and each check's C++ load beside
the Python standalone load's.

1. The build: the runner compiled into an empty cache folder (``TORCHEXPORT_CPP_CACHE``), as the
   first session on a machine (or after a torch upgrade) pays it, timed around ``cpp.ensure``.
2. Per check: ``examples/`` (copied to a temporary folder) run once on ``trace`` and ``script``
   (``--backends`` changes it; ``aoti`` adds a compile of a minute per test) with that runner;
   each row's ``timings.cpp_s`` (the runner's process: libtorch's start, the load, one call, the
   files both ways; it runs beside the check's search, ``timings.cpp_wait_s`` is what the check
   still waited for it) beside ``timings.standalone_s`` (the fresh-Python loader's request: its load
   and one call, the interpreter already started).

    python benchmarks/bench_cpp.py
    python benchmarks/bench_cpp.py --backends trace,script,aoti --examples 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(cache: Path) -> float:
    os.environ["TORCHEXPORT_CPP_CACHE"] = str(cache)
    from pytest_torchexport.isolation import cpp

    chain = cpp.toolchain()
    if isinstance(chain, str):
        sys.exit(f"no C++ load here: {chain}")
    t0 = time.perf_counter()
    cpp.ensure(chain)
    return time.perf_counter() - t0


def per_check(cache: Path, backends: str, examples: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-cpp-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "examples", work / "examples")
        env = {
            **os.environ,
            "TORCHEXPORT_CPP_CACHE": str(cache),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "examples",
                "-q",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                f"--torchexport-backends={backends}",
                f"--torchexport-examples={examples}",
                "--torchexport-report=out.json",
            ],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return json.loads((work / "out.json").read_text())["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="trace,script")
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cpp-cache-") as cache:
        built = build(Path(cache))
        print(f"runner build (once per torch installation): {built:.1f} s; load average {os.getloadavg()[0]:.1f}")
        rows = per_check(Path(cache), args.backends, args.examples)
    print(
        f"{'test':42} {'backend':8} {'status':11} {'C++ load s':>10} {'C++ waited s':>12} {'Python standalone s':>20}"
    )
    cpp_s, py_s, waits = [], [], []
    for row in rows:
        timings, cpp_row = row.get("timings", {}), row.get("cpp") or {}
        c, p, w = timings.get("cpp_s"), timings.get("standalone_s"), timings.get("cpp_wait_s")
        if c is not None:
            cpp_s.append(c)
            waits.append(w or 0.0)
        if p is not None and c is not None:
            py_s.append(p)
        shown = f"{c:10.2f}" if c is not None else f"{cpp_row.get('reason', cpp_row.get('status', '-'))[:10]:>10}"
        print(
            f"{row['test'][:42]:42} {row['backend']:8} {row['status']:11} {shown} {w if w is None else round(w, 2)!s:>12} "
            f"{p if p is None else round(p, 2)!s:>20}"
        )
    if cpp_s:
        print(
            f"median per check: C++ load {statistics.median(cpp_s):.2f} s (the check waited {statistics.median(waits):.2f} s "
            f"of it, the rest beside its search), Python standalone load "
            f"{statistics.median(py_s):.2f} s ({len(cpp_s)} checks)"
        )


if __name__ == "__main__":
    main()
