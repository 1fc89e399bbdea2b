"""Peak memory of whole checks on large recorded calls (bounded memory).

Two cases, each backend checked by ``check()`` as a marked test would (default process
isolation: each backend check in a forked child):

- ``segmentation``: a 1x1 conv head whose output is 4x64x64x4096 float32 (268 MB), from a
  4x64x64x8 input, recorded at that size;
- ``transformer``: token embedding + 2 ``nn.TransformerEncoderLayer`` (d_model 512, 8 heads)
  recorded on (1, 1024) int64 token ids.

Each (case, backend) runs in its own driver process; printed are the driver's peak RSS,
the largest forked child's (``RUSAGE_CHILDREN``), the status and the time. A watchdog
here samples the driver's process tree and kills it above ``--kill-gb`` (the machine
must survive the unbounded run). ``--no-budget`` turns the memory budget off
(``TORCHEXPORT_SIZE_LIMITS=off`` in the driver's environment) to show what it saves:

    python benchmarks/bench_memory.py                       # both cases, 4 backends, 8 examples
    python benchmarks/bench_memory.py --no-budget --cases segmentation --backends trace
    PYTHONPATH=/path/to/older/checkout python benchmarks/bench_memory.py   # a version before it

``--oracle`` measures the float64 noise oracle's forward alone ([Float64 Convolutions],
``reference/noise.py``): a DenseNet-style 3-D stem and dense block (a 7x7x7 convolution,
then layers whose features are concatenated) at batch 16 x 2 x 32 x 64 x 48, in float32, in
float64 as one batch, and in float64 with its convolution layers sliced, each in a fresh
process; printed are each one's peak growth over the model and input, its time and the
sliced output's largest difference from the whole batch's:

    python benchmarks/bench_memory.py --oracle
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

BACKENDS = ["trace", "script", "onnx", "export"]

DRIVER = r"""
import json, os, resource, sys, time
import torch
from torch import nn
from pytest_torchexport import check
from pytest_torchexport.errors import ExportMismatch

case, backend, examples, use_budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if not use_budget:  # read at each check (stages/budget.py); a version before it ignores it
    os.environ["TORCHEXPORT_SIZE_LIMITS"] = "off"
torch.manual_seed(0)


class SegHead(nn.Module):
    # 4x64x64x8 -> 4x64x64x4096: a segmentation-sized output from a small input.
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4096)

    def forward(self, x):
        return torch.relu(self.proj(x))


class TinyEncoder(nn.Module):
    def __init__(self, vocab=1000, width=512):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 8, dim_feedforward=2048, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, ids):
        return self.encoder(self.embed(ids))


if case == "segmentation":
    module, args = SegHead(), (torch.randn(4, 64, 64, 8),)
else:
    module, args = TinyEncoder(), (torch.randint(0, 1000, (1, 1024)),)
t0 = time.perf_counter()
try:
    report = check(module, args, backends=[backend], examples=examples, seed=0)
except ExportMismatch as exc:
    report = exc.report
r = report.results[0]
print(json.dumps({
    "status": r.status, "s": time.perf_counter() - t0, "examples": r.examples,
    "parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "caps": r.extra.get("size_caps"), "message": r.message[:300],
}))
"""


def tree_rss_mb(root: int) -> float:
    """Resident MB of ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == p and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(rss.get(p, 0) for p in tree) / 2**20


def run_one(case: str, backend: str, examples: int, use_budget: bool, kill_gb: float) -> dict:
    # A file, not ``-c``: the script backend reads the module's source.
    driver = os.path.join(tempfile.mkdtemp(prefix="bench-memory-"), "driver.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    return run_watched([driver, case, backend, str(examples), "1" if use_budget else "0"], kill_gb)


def run_watched(argv: list[str], kill_gb: float, interval: float = 0.2) -> dict:
    """Run ``python argv...`` (a driver printing one JSON line last), sampling its process tree's
    RSS every ``interval`` s and killing the tree above ``kill_gb``; its JSON plus ``tree_mb``."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    t0, tree_peak, killed = time.perf_counter(), 0.0, False
    while proc.poll() is None:
        tree_peak = max(tree_peak, tree_rss_mb(proc.pid))
        if tree_peak > kill_gb * 1024:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(interval)
    out, err = proc.communicate()
    if killed:
        return {"status": f"killed above {kill_gb:g} GB", "s": time.perf_counter() - t0, "tree_mb": tree_peak}
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        return {
            "status": f"driver failed ({proc.returncode}): {err[-300:]}",
            "s": time.perf_counter() - t0,
            "tree_mb": tree_peak,
        }
    return {**json.loads(lines[-1]), "tree_mb": tree_peak}


ORACLE = r"""
import json, sys, time
import torch
from torch import nn
from pytest_torchexport.reference import noise

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

class Dense3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(2, 64, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool3d(3, 2, 1))
        self.layers = nn.ModuleList(nn.Sequential(nn.Conv3d(64 + 32 * i, 128, 1), nn.ReLU(), nn.Conv3d(128, 32, 3, padding=1))
                                    for i in range(4))
    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x.mean((2, 3, 4))

torch.manual_seed(0)
torch.set_num_threads(1)
how = sys.argv[1]
model = Dense3d().eval()
x = torch.randn(16, 2, 32, 64, 48)
if how != "float32":
    model, x = model.double(), x.double()
if how == "sliced":
    noise.slice_batches(model)
with torch.no_grad():
    model(x[:1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    t0 = time.perf_counter()
    out = model(x)
    seconds = time.perf_counter() - t0
torch.save(out, sys.argv[2])
print(json.dumps({"peak_mb": (status("VmHWM") - before) / 2**20, "s": seconds}))
"""


def oracle() -> None:
    """[Float64 Convolutions] the oracle's forward: float32, float64 whole, float64 sliced."""
    import torch

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for how in ("float32", "float64", "sliced"):
            path = os.path.join(tmp, f"{how}.pt")
            run = subprocess.run([sys.executable, "-c", ORACLE, how, path], capture_output=True, text=True, check=True)
            found[how] = {**json.loads(run.stdout.splitlines()[-1]), "out": torch.load(path)}
    diff = (found["sliced"]["out"] - found["float64"]["out"]).abs().max().item()
    print("DenseNet-style 3-D stem and dense block, batch 16 x 2 x 32 x 64 x 48, one thread")
    for how, r in found.items():
        print(f"  {how:8} forward: peak {r['peak_mb']:7.0f} MB over the model and input, {r['s']:5.2f} s")
    print(
        f"  sliced / whole float64 peak: {found['sliced']['peak_mb'] / found['float64']['peak_mb']:.2f}x; "
        f"largest difference of their outputs: {diff:g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="segmentation,transformer")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--no-budget", action="store_true")
    parser.add_argument("--kill-gb", type=float, default=12.0)
    parser.add_argument("--oracle", action="store_true", help="the float64 oracle's forward alone, whole and sliced")
    args = parser.parse_args()
    if args.oracle:
        oracle()
        return
    print(f"budget {'off' if args.no_budget else 'on'}, examples={args.examples}")
    for case in args.cases.split(","):
        for backend in args.backends.split(","):
            r = run_one(case, backend, args.examples, not args.no_budget, args.kill_gb)
            peaks = (
                f"parent {r['parent_mb']:6.0f} MB, largest child {r['child_mb']:6.0f} MB, " if "parent_mb" in r else ""
            )
            print(
                f"{case:12} {backend:7} {r['status']:10} {peaks}tree sampled {r['tree_mb']:6.0f} MB, "
                f"{r['s']:6.1f} s, caps {r.get('caps')}",
                flush=True,
            )
            if r.get("status") not in ("pass",) and "message" in r:
                print("   ", r["message"])


if __name__ == "__main__":
    main()
