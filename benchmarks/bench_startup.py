"""What having the plugin installed costs a suite with no marked test: pytest's wall time from
start to exit, with the plugin and with ``-p no:torchexport`` as the reference, in one run.

A temporary directory holds a few trivial tests (no marker, no torch) and a ``conftest.py``
that writes, at session finish, which heavy modules the run imported. Each round runs both
commands, ``python -m pytest -q -p no:cacheprovider DIR`` and the same with
``-p no:torchexport``, in fresh interpreters, alternating which goes first; one untimed round
warms the file cache. Prints the median of each, their ratio (the target is 1.00x) and
whether the plugin run imported ``torch`` (it must not: ``import torch`` costs seconds).

    python benchmarks/bench_startup.py              # 7 rounds
    python benchmarks/bench_startup.py --repeat 15  # a noisy machine: more rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = """
def test_add():
    assert 1 + 1 == 2


def test_text():
    assert "torch".upper() == "TORCH"


class TestGroup:
    def test_list(self):
        assert sorted([3, 1, 2]) == [1, 2, 3]

    def test_dict(self):
        assert {"a": 1}.get("b") is None
"""

# Only what pytest_sessionfinish sees: a module imported lazily after it (at exit) is not
# the plugin's startup cost anyway.
CONFTEST = """
import json
import os
import sys

HEAVY = ("torch", "numpy", "hypothesis", "onnx", "onnxruntime")


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_STARTUP_OUT"], "w") as f:
        json.dump({"modules": len(sys.modules), **{m: m in sys.modules for m in HEAVY}}, f)
"""


def run_once(directory: Path, extra: list[str], out: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, str(directory)]
    env = {**os.environ, "BENCH_STARTUP_OUT": str(out)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds; each runs both commands")
    args = parser.parse_args()

    variants = {"plugin": [], "reference": ["-p", "no:torchexport"]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    seen: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "suite"
        directory.mkdir()
        (directory / "test_trivial.py").write_text(TESTS)
        (directory / "test_more.py").write_text(TESTS)
        (directory / "conftest.py").write_text(CONFTEST)
        out = Path(scratch) / "modules.json"
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for extra in variants.values():
            run_once(directory, extra, out)  # warm-up, untimed
        for i in range(args.repeat):
            # Alternate the order so that neither side always runs right after the other.
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                elapsed, modules = run_once(directory, variants[name], out)
                times[name].append(elapsed)
                seen[name] = modules
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"python -m pytest -q -p no:cacheprovider <8 trivial tests>, median of {args.repeat} interleaved rounds")
    print(f"{'run':10} {'median s':>9} {'min s':>7} {'max s':>7} {'modules':>8}  imported")
    for name in variants:
        heavy = [m for m, v in seen[name].items() if m != "modules" and v]
        print(
            f"{name:10} {med[name]:9.3f} {min(times[name]):7.3f} {max(times[name]):7.3f} "
            f"{seen[name]['modules']:8d}  {', '.join(heavy) or '-'}"
        )
    print(f"plugin / reference: {med['plugin'] / med['reference']:.2f}x (target 1.00x)")
    print(f"torch imported with the plugin: {'YES (it must not be)' if seen['plugin']['torch'] else 'no'}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
