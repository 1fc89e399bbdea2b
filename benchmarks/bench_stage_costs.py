"""What each stage costs in eager forwards on a heavy model: the costs that are not the floor.

On a model whose forward takes most of a second, a check's time is its forwards. This script
writes a marked test of a small 3-D U-Net (a Conv3d stack, one skip connection, ~0.5-1 s a
forward here), runs it through pytest on ``--torchexport-backends`` (default
``trace,onnx,export``), and counts, inside the model, every call of its ``forward``: a
pre-hook and a hook time the call and write one line (pid, stage, seconds) to a file, so
calls made in the forked children count too. The stage is read off the call's stack: the
innermost frame in one of the plugin's stage modules (the float64 oracle ``noise.py``,
``static_sizes.py``, ``latency.py``, ``side_effects.py``'s determinism probe, the shared
search, an exporter's tracing, the backend's own search).

The table splits the forwards by process: the test's own process (paid once per test,
whatever the number of backends) and each backend's child (paid once per backend). A stage
that still shows in every child is a cost not yet shared. The runs set ``CI=1``, so the draws
are derandomized and a count is the same on every run::

    python benchmarks/bench_stage_costs.py
    python benchmarks/bench_stage_costs.py --backends onnx --examples 5 --size 24
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

TEST_FILE = textwrap.dedent("""
    import os
    import sys
    import time

    import pytest
    import torch
    from torch import nn

    SIZE = int(os.environ["BENCH_SIZE"])
    #: stage name -> the file (under pytest_torchexport/) whose frame says a forward belongs to it
    STAGES = (("float64 oracle", "reference/noise.py"), ("static_size", "stages/static_sizes.py"),
              ("latency", "stages/latency.py"), ("determinism/side effects", "stages/side_effects.py"),
              ("shared search", "stages/shared_search.py"), ("export", "stages/exporting.py"),
              ("export", "backends/"), ("search", "search/"), ("prelude", "stages/prelude.py"),
              ("test body", "recording/"))


    def block(cin, cout):
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(),
                             nn.Conv3d(cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU())


    class UNet3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.down, self.bottom = block(1, 12), block(12, 24)
            self.pool, self.up = nn.MaxPool3d(2), nn.ConvTranspose3d(24, 12, 2, stride=2)
            self.out = nn.Sequential(block(24, 12), nn.Conv3d(12, 2, 1))

        def forward(self, x):
            skip = self.down(x)
            return self.out(torch.cat([self.up(self.bottom(self.pool(skip))), skip], dim=1))


    def _stage():
        frame = sys._getframe(2)
        while frame is not None:
            path = frame.f_code.co_filename.replace(os.sep, "/")
            if "pytest_torchexport/" in path:
                inner = path.split("pytest_torchexport/", 1)[1]
                for name, where in STAGES:
                    if inner.startswith(where):
                        return name
            frame = frame.f_back
        return "test body"


    def _start(module, args):
        module._bench_t0 = time.perf_counter()


    def _count(module, args, output):
        line = f"{os.getpid()} {_stage()} {time.perf_counter() - module._bench_t0:.4f}\\n"
        fd = os.open(os.environ["FORWARD_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, line.encode())  # one short append: forked children write to the same file
        os.close(fd)


    @pytest.mark.torchexport(dims={"batch": (1, 2)})
    def test_unet3d():
        with open(os.environ["FORWARD_COUNT_FILE"] + ".pid", "w") as f:
            f.write(str(os.getpid()))
        torch.manual_seed(0)
        model = UNet3d().eval()
        model.register_forward_pre_hook(_start)
        model.register_forward_hook(_count)
        assert model(torch.randn(1, 1, SIZE, SIZE, SIZE)).shape == (1, 2, SIZE, SIZE, SIZE)
""")


def run(
    backends: str, examples: int, size: int, budget: str, workdir: Path
) -> tuple[list[tuple[str, str, float]], dict, float]:
    """The forwards (pid, stage, seconds), the JSON report and the wall time of one pytest run."""
    counter = workdir / "forwards.txt"
    counter.write_text("")
    report = workdir / "report.json"
    env = {
        **os.environ,
        "FORWARD_COUNT_FILE": str(counter),
        "CI": "1",
        "BENCH_SIZE": str(size),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "test_stage_costs.py",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        f"--torchexport-backends={backends}",
        f"--torchexport-examples={examples}",
        "--torchexport-cache=off",
        f"--torchexport-budget={budget}",
        f"--torchexport-report={report}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"pytest failed ({backends}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    parent = (workdir / "forwards.txt.pid").read_text().strip()
    calls = []
    for line in counter.read_text().splitlines():
        pid, rest = line.split(" ", 1)
        stage, seconds = rest.rsplit(" ", 1)
        calls.append(("test process" if pid == parent else pid, stage, float(seconds)))
    return calls, json.loads(report.read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="trace,onnx,export")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--size", type=int, default=32, help="the recorded input's side (1x1xSxSxS)")
    parser.add_argument("--budget", default="off", help="--torchexport-budget (default off: the full search)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stage-costs-") as tmp:
        work = Path(tmp)
        (work / "test_stage_costs.py").write_text(TEST_FILE)
        calls, report, wall = run(args.backends, args.examples, args.size, args.budget, work)
    rows = {row["backend"]: row for row in report["results"]}
    # A child's pid -> its backend: children run in the order of their rows' start, so match by
    # the stages only a child runs; the report's rows name the backend, the pids do not.
    children = list(dict.fromkeys(pid for pid, _, _ in calls if pid != "test process"))
    by = collections.defaultdict(lambda: [0, 0.0])
    for pid, stage, seconds in calls:
        key = (pid if pid == "test process" else f"child {children.index(pid) + 1}", stage)
        by[key][0] += 1
        by[key][1] += seconds
    body = [s for p, st, s in calls if st == "test body"]
    print(
        f"3-D U-Net, recorded input 1x1x{args.size}^3, backends {args.backends}, examples={args.examples}, "
        f"budget={args.budget}, CI=1; one forward in the test body: {body[0]:.2f} s"
        if body
        else ""
    )
    print(f"{'process':<14} {'stage':<26} {'forwards':>8} {'seconds':>8}")
    for (proc, stage), (n, seconds) in sorted(by.items()):
        print(f"{proc:<14} {stage:<26} {n:>8} {seconds:>8.2f}")
    shared = sum(n for (p, _), (n, _) in by.items() if p == "test process")
    print(
        f"forwards: {len(calls)} in all, {shared} in the test's process (once per test), "
        f"{len(calls) - shared} in {len(children)} children (per backend); wall {wall:.0f} s"
    )
    keys = (
        "export_s",
        "shared_reference_s",
        "reference_s",
        "run_s",
        "compare_s",
        "search_s",
        "static_size_s",
        "latency_s",
    )
    print(f"{'row':<8} {'status':<10} " + " ".join(f"{k:>18}" for k in keys))
    for backend, row in rows.items():
        t = row.get("timings", {})
        print(f"{backend:<8} {row['status']:<10} " + " ".join(f"{t.get(k, float('nan')):>18.2f}" for k in keys))


if __name__ == "__main__":
    main()
