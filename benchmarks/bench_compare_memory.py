"""Peak memory of comparing one large output pair: 4x64x64x4096 float32 (268 MB a side).

Each case runs in its own subprocess, which allocates eager's and the artifact's outputs,
records its peak RSS, runs ``compare`` and records it again; printed are both peaks.
``--compare-file`` loads another version of compare.py (say, from ``git show``) to
measure it side by side:

    python benchmarks/bench_compare_memory.py
    git show fa04023:pytest_torchexport/reference/compare.py > /tmp/old_compare.py
    python benchmarks/bench_compare_memory.py --compare-file /tmp/old_compare.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import importlib.util, json, resource, sys, time
import torch
path = sys.argv[1]
if path:
    spec = importlib.util.spec_from_file_location("compare_under_test", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod  # dataclasses look it up
    spec.loader.exec_module(mod)
else:
    from pytest_torchexport.reference import compare as mod
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch.manual_seed(0)
e = torch.randn(4, 64, 64, 4096)
a = e + torch.randn(4, 64, 64, 4096) * 1e-7
if sys.argv[2] == "mismatch":
    a[0, 0, 0, :100] += 1.0
before = peak_mb()
t0 = time.perf_counter()
cmp = mod.compare(e, a)
print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "s": time.perf_counter() - t0, "ok": cmp.ok}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compare-file", default="")
    args = parser.parse_args()
    for case in ("pass", "mismatch"):
        out = subprocess.run([sys.executable, "-c", CHILD, args.compare_file, case], capture_output=True, text=True)
        if out.returncode:
            print(case, "failed:", out.stderr[-500:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{case:9} outputs allocated: {r['before_mb']:7.0f} MB peak RSS; after compare: {r['peak_mb']:7.0f} MB "
              f"(+{r['peak_mb'] - r['before_mb']:.0f} MB), {r['s']:.2f} s, ok={r['ok']}")


if __name__ == "__main__":
    main()
