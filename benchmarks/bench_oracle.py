"""What the float64 noise oracle costs, measured side by side in one run.

- clean: an MLP on trace and onnx, where every input passes the plain comparison, so the
  oracle never runs; against the same check with explicit (default-valued) tolerances,
  which switch the oracle off.
- rounding only: a LayerNorm over values at 3e4 on onnx, where most inputs fail the plain
  comparison and pass as rounding: each such input costs one float64 run of the model;
  against a check whose explicit tolerances are loose enough to pass them plainly.

    python benchmarks/bench_oracle.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(256)
        self.fc = nn.Linear(256, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.silu(self.norm(x)))


def timed(module: nn.Module, x: torch.Tensor, backends: list[str], **options: object) -> tuple[float, int]:
    opts = Options.build(backends=backends, examples=20, seed=0, **options)
    t0 = time.perf_counter()
    report = run(module, (x,), None, opts, Session())
    noisy = sum(r.extra.get("numeric_noise", {}).get("inputs", 0) for r in report.results)
    assert all(r.status == "pass" for r in report.results), [r.message for r in report.results]
    return time.perf_counter() - t0, noisy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    norm = Norm().eval()
    cases = {
        "clean (mlp: trace, onnx)": (mlp, torch.randn(4, 16), ["trace", "onnx"], {"rtol": {"trace": 1.3e-6, "onnx": 1e-3}, "atol": {"trace": 1e-5, "onnx": 1e-4}}),
        "rounding only (norm: onnx)": (norm, torch.randn(4, 256) + 3e4, ["onnx"], {"rtol": 1e-2, "atol": 1e-2}),
    }
    timed(mlp, torch.randn(4, 16), ["trace", "onnx"])  # warm the exporters up
    for label, (module, x, backends, off) in cases.items():
        with_oracle, without, noisy = [], [], 0
        for i in range(args.repeat):  # alternate which runs first, so warm-up and contention hit both alike
            for oracle in (True, False) if i % 2 == 0 else (False, True):
                if oracle:
                    s, noisy = timed(module, x, backends)
                    with_oracle.append(s)
                else:
                    without.append(timed(module, x, backends, **off)[0])
        a, b = statistics.median(with_oracle), statistics.median(without)
        print(f"{label:28} oracle on {a:6.2f} s, off {b:6.2f} s, ratio {a / b:.2f} ({noisy} inputs passed as rounding)")


if __name__ == "__main__":
    main()
