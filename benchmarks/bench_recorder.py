"""What the recorder adds to a test body: the body alone against the body under ``Recorder``.

A marked test's body runs under the recorder on every run, a warm one whose checks are all
reused included, so what the recorder adds is paid by every run of a marked suite. The
recorder patches ``nn.Module.__call__`` and the exporters, and keeps a profile function
(``sys.setprofile``) while the test's own code runs. This script times three bodies, each
alone and under the recorder, for this checkout and for each ``--rev`` (a copy of that git
revision's package), side by side in one run, and prints each ratio:

- ``build``: five runs of the constructor of a model that builds 48 blocks and generates code for them
  with ``torch.fx.symbolic_trace``, as codegen libraries (e3nn) do in their constructors;
- ``forward``: 200 eager calls of a small model (the recorder is paused inside each call);
- ``helpers``: the test's own Python between calls (60,000 small function calls, no module).

    python benchmarks/bench_recorder.py                 # this checkout against a124e24
    python benchmarks/bench_recorder.py --rev HEAD~3 --repeats 9

Each figure is the median of ``--repeats`` runs in a fresh process per package; the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from revisions import install_revision  # a sibling module: python benchmarks/bench_recorder.py

HERE = Path(__file__).resolve().parent
BASELINE = "a124e24"

TIMER = textwrap.dedent("""
    import json, statistics, sys, time

    import torch
    from pytest_torchexport.recording.recorder import Recorder

    torch.set_num_threads(1)


    class Block(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.lin = torch.nn.Linear(width, width)
            self.norm = torch.nn.LayerNorm(width)

        def forward(self, x):
            return self.norm(torch.relu(self.lin(x)) + x)


    class Generated(torch.nn.Module):
        # Builds its blocks and generates their code in the constructor, as codegen libraries do.
        def __init__(self, depth=48, width=8):
            super().__init__()
            self.body = torch.fx.symbolic_trace(torch.nn.Sequential(*[Block(width) for _ in range(depth)]))

        def forward(self, x):
            return self.body(x)


    model = Generated().eval()
    x = torch.randn(2, 8)


    def build():
        for _ in range(5):
            Generated()


    def forward():
        with torch.no_grad():
            for _ in range(200):
                model(x)


    def _parse(text):
        return [(int(n), p) for n, p in (part.split("x") for part in text.split("+"))]


    def helpers():
        for i in range(20000):
            _parse("8x0e+8x1o+4x2e")


    def timed(body, recorded):
        t0 = time.perf_counter()
        if recorded:
            with Recorder():
                body()
        else:
            body()
        return time.perf_counter() - t0


    repeats = int(sys.argv[1])
    out = {}
    for name, body in (("build", build), ("forward", forward), ("helpers", helpers)):
        timed(body, False), timed(body, True)  # warm caches and lazy imports
        alone, under = [], []
        for _ in range(repeats):  # alternated, so a drift of the machine reaches both
            alone.append(timed(body, False))
            under.append(timed(body, True))
        out[name] = (statistics.median(alone), statistics.median(under))
    print(json.dumps(out))
""")


def measure(package_dir: str, script: Path, repeats: int) -> dict[str, tuple[float, float]]:
    env = {**os.environ, "PYTHONPATH": package_dir}
    proc = subprocess.run(
        [sys.executable, str(script), str(repeats)], env=env, capture_output=True, text=True, cwd=script.parent
    )
    if proc.returncode:
        sys.exit(f"the timer failed ({package_dir}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", action="append", default=None, help=f"a git revision to compare (default {BASELINE})")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as tmp:
        work = Path(tmp)
        script = work / "timer.py"
        script.write_text(TIMER)
        ways = {"checkout": str(HERE.parent)}
        for rev in args.rev or [BASELINE]:
            ways[rev] = install_revision(rev, work / f"rev-{rev.replace('/', '_')}")
        print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats}; seconds alone / under the recorder")
        print(f"{'plugin':<12} " + " ".join(f"{b:>26}" for b in ("build", "forward", "helpers")))
        for way, package in ways.items():
            figures = measure(package, script, args.repeats)
            cells = [f"{a:.3f} / {u:.3f} = {u / a:.2f}x" for a, u in figures.values()]
            print(f"{way:<12} " + " ".join(f"{c:>26}" for c in cells), flush=True)
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
