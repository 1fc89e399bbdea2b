"""What ``special_values=True``'s probes cost: the search with them and without, side by side.

Each probe is one eager call and one artifact call at the recorded sizes: 16 per float
input (8 for a one-element input), for at most 3 float inputs. Timed as this process's CPU
time (``time.process_time``) with one torch thread, so other work on the machine does not
count, next to the search's own wall time.

    python benchmarks/bench_special_probes.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from small_models import ConvNet

import pytest_torchexport.search.search as search
from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options


def timed(probes: bool, backend: str) -> tuple[float, float, int]:
    original = search.special_probes
    search.special_probes = original if probes else (lambda plan: [])
    try:
        torch.manual_seed(0)
        opts = Options.build(backends=[backend], examples=25, seed=0, special_values=True, isolation="inline",
                             dims={"batch": (1, 8)})
        cpu = time.process_time()
        (result,) = run(ConvNet().eval(), (torch.randn(4, 3, 32, 32),), None, opts, Session()).results
        cpu = time.process_time() - cpu
        assert result.status == "pass", result.message
        return result.timings["search_s"], cpu, result.examples
    finally:
        search.special_probes = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for backend in ("trace", "onnx"):
        for probes in (False, True):
            runs = [timed(probes, backend) for _ in range(args.repeat)]
            search_s = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"{backend:6} {'probes' if probes else 'none  '} inputs={runs[0][2]:3d} "
                  f"search_s={search_s:6.2f} check_cpu_s={cpu:6.2f}")


if __name__ == "__main__":
    main()
