"""The measured budget on a memory-heavy model (issue 19, item 5), budget on and off side by side.

The case is the issue's vector quantizer, scaled to run here: one ``(1, 1024, 512)`` call,
2 MB in and 2 MB out, whose forward finds the nearest of 256 codes the naive way, every
(vector, code) difference at once: about 1 GB at batch 1 and 1 s on one thread, 16 GB at
batch 16. The bytes budget sees 2 MB and caps nothing; the measured one sees the 1 GB peak.

Printed per row: the plain call (the model built and called once at the recorded size, in
its own process, one thread like a check's child) and the check (``check()`` as a marked
test runs it: the backend check in a forked child), each with its peak RSS (the plain
process's own ``ru_maxrss``; the check's largest child, ``RUSAGE_CHILDREN``; and the
sampled process tree, which counts pages shared after ``fork`` twice) and wall time, and the
check's over the plain call's (the child's peak; the tree's where the check was killed). Two limits:

- ``--timeout 900`` (the default): the memory limit bites (half of ``MemAvailable`` /
  workers / checks side by side, for about two drawn calls' peaks);
- ``--timeout 60``: the time limit bites (the search's calls within half of it), which here
  also cuts the number of examples.

Without the budget (``budget.ENABLED = False``) a watchdog kills the check's process tree
above ``--kill-gb`` (the machine must survive it):

    python benchmarks/bench_budget.py                      # both limits, budget on and off
    python benchmarks/bench_budget.py --timeouts 900 --examples 10 --backends trace,export
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench_memory import run_watched

DRIVER = r"""
import json, resource, sys, time
import torch
from torch import nn

mode, backend, examples, timeout, use_budget, codes = sys.argv[1:7]
torch.manual_seed(0)


class VectorQuantizer(nn.Module):
    def __init__(self, codes, width=512):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(codes, width) / width**0.5)

    def forward(self, x):
        # The naive nearest code: every (vector, code) difference at once.
        distances = (x.unsqueeze(-2) - self.codebook).pow(2).sum(-1)
        return self.codebook[distances.argmin(-1)]


module, x = VectorQuantizer(int(codes)).eval(), torch.randn(1, 1024, 512)
t0 = time.perf_counter()
if mode == "plain":
    torch.set_num_threads(1)  # as a check's child runs
    with torch.no_grad():
        module(x)
    print(json.dumps({"status": "-", "s": time.perf_counter() - t0,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit()

from pytest_torchexport.stages import budget
from pytest_torchexport import check
from pytest_torchexport.errors import ExportMismatch

budget.ENABLED = use_budget == "1"
try:
    report = check(module, (x,), backends=[backend], examples=int(examples), timeout=float(timeout), seed=0)
except ExportMismatch as exc:
    report = exc.report
r = report.results[0]
print(json.dumps({
    "status": r.status, "s": time.perf_counter() - t0, "examples": r.examples,
    "parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "eager_peak_mb": r.extra.get("eager_peak_mb"), "eager_s": r.extra.get("eager_s"),
    "caps": r.extra.get("size_caps"), "examples_cap": r.extra.get("examples_cap"),
    "limit": r.extra.get("budget_limit"),
    "finding": next((f.detail for f in r.findings if f.kind == "size_budget"), None),
    "message": r.message[:300], "timings": {k: round(v, 1) for k, v in r.timings.items()},
}))
"""


def run_one(driver: str, argv: list[str], kill_gb: float) -> dict:
    return run_watched([driver, *argv], kill_gb, interval=0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="trace")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--timeouts", default="900,60", help="the check's time limits, one row group each")
    parser.add_argument("--codes", type=int, default=256, help="codebook size: 256 is ~1 GB at batch 1")
    parser.add_argument("--kill-gb", type=float, default=10.0)
    args = parser.parse_args()
    # A file, not ``-c``: the script backend reads the module's source.
    driver = os.path.join(tempfile.mkdtemp(prefix="bench-budget-"), "driver.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"vector quantizer, {args.codes} codes, recorded (1, 1024, 512); examples={args.examples}; "
          f"load average {load}; {os.cpu_count()} cores")
    plain = run_one(driver, ["plain", "-", "0", "0", "0", str(args.codes)], args.kill_gb)
    print(f"plain call                      peak {plain['peak_mb']:6.0f} MB  {plain['s']:6.1f} s")
    header = (f"{'backend':8} {'timeout':>7} {'budget':6} {'status':14} {'child peak':>10} {'tree':>8} {'x plain':>7} "
              f"{'time':>7} {'x plain':>7}  limit / caps")
    print(header)
    for timeout in args.timeouts.split(","):
        for backend in args.backends.split(","):
            for on in (True, False):
                r = run_one(driver, ["check", backend, str(args.examples), timeout, "1" if on else "0",
                                     str(args.codes)], args.kill_gb)
                # The child's own peak; the tree's sum counts pages the child shares with its parent twice.
                peak = r.get("peak_mb", r["tree_mb"])
                caps = f"{r.get('limit')}: {r.get('caps')}, examples {r.get('examples')}" if on else ""
                if r.get("examples_cap"):
                    caps += f" (cut to {r['examples_cap']})"
                child = f"{r['peak_mb']:7.0f} MB" if "peak_mb" in r else f"{'-':>10}"
                print(f"{backend:8} {timeout:>7} {'on' if on else 'off':6} {r['status']:14} {child} "
                      f"{r['tree_mb']:5.0f} MB {peak / plain['peak_mb']:6.1f}x {r['s']:6.1f} s "
                      f"{r['s'] / plain['s']:6.1f}x  {caps}", flush=True)
                if on and r.get("finding"):
                    print("    size_budget:", r["finding"])
                if r.get("timings"):
                    print("    timings:", r["timings"])


if __name__ == "__main__":
    main()
