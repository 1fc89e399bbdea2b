"""What the standalone load costs: a check with the step and without it, side by side.

Prints (1) the loader's start cost: from spawning it to its first answer (a fresh Python
importing torch, then one trace artifact loaded and run), (2) per backend and model, the
step's own time (``timings.standalone_s``, load and run of one artifact in the loader,
inputs and outputs through files), what the check still waited for it at the join
(``timings.standalone_wait_s``: the request overlaps the side-effect checks and the search),
and the check's total time with ``standalone=True`` and ``standalone=False``, and their ratio. Each configuration runs once untimed first
(exporters' warm-up), then ``--repeat`` times, alternating; the best time is kept.

    python benchmarks/bench_standalone.py
    python benchmarks/bench_standalone.py --examples 10 --repeat 3 --isolation inline
"""

from __future__ import annotations

import argparse
import time

import torch
from small_models import MLP, ConvNet
from torch import nn

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.isolation import loader
from pytest_torchexport.options import Options

BACKENDS = ["trace", "script", "onnx", "export"]


MODELS = {"mlp": (MLP, (torch.randn(4, 16),)), "convnet": (ConvNet, (torch.randn(2, 3, 16, 16),))}


def one(
    model: nn.Module, args: tuple, backend: str, on: bool, examples: int, isolation: str
) -> tuple[float, float, float]:
    options = Options.build(backends=[backend], examples=examples, seed=0, standalone=on, isolation=isolation)
    t0 = time.perf_counter()
    (result,) = run(model, args, None, options, Session()).results
    total = time.perf_counter() - t0
    assert result.status == "pass", result.message
    assert (result.extra["standalone"].startswith("loaded") if on else "off" in result.extra["standalone"]), result.extra
    return total, result.timings.get("standalone_s", 0.0), result.timings.get("standalone_wait_s", 0.0)


def start_cost() -> float:
    """Spawn a loader and time its first answer (imports included)."""
    loader.shutdown()
    model = nn.Linear(4, 4).eval()
    options = Options.build(backends=["trace"], examples=1, seed=0, isolation="inline")
    (result,) = run(model, (torch.randn(2, 4),), None, options, Session()).results
    assert result.extra["standalone"].startswith("loaded"), result.extra
    return result.timings["standalone_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--isolation", default="process", choices=["process", "inline"])
    opts = parser.parse_args()
    torch.manual_seed(0)

    starts = [start_cost() for _ in range(opts.repeat)]
    print(f"loader start to first answer (spawn + import torch + one trace load/run): "
          f"best {min(starts):.2f} s, worst {max(starts):.2f} s over {len(starts)} starts")

    print(f"\nexamples={opts.examples}, isolation={opts.isolation}, best of {opts.repeat} (after one warm-up)")
    print(f"{'model':8} {'backend':8} {'step s':>7} {'wait s':>7} {'with s':>7} {'without s':>9} {'ratio':>6}")
    for name, (cls, args) in MODELS.items():
        model = cls().eval()
        for backend in BACKENDS:
            for on in (True, False):
                one(model, args, backend, on, opts.examples, opts.isolation)
            with_, without, step, wait = [], [], [], []
            for _ in range(opts.repeat):
                total, s, w = one(model, args, backend, True, opts.examples, opts.isolation)
                with_.append(total)
                step.append(s)
                wait.append(w)
                without.append(one(model, args, backend, False, opts.examples, opts.isolation)[0])
            ratio = min(with_) / min(without)
            print(f"{name:8} {backend:8} {min(step):7.3f} {min(wait):7.3f} {min(with_):7.2f} {min(without):9.2f} {ratio:6.2f}")
    loader.shutdown()


if __name__ == "__main__":
    main()
