"""What recording a test's call costs: the "as called" copy of the module (capture.py).

The recorder copies each module the first time the test calls it, so a body that changes
the model afterwards does not change what is checked. This script times, side by side in
one run, a test body's first call of a model with and without the recorder, on the
largest models of the real-model tests and on GPT-2 small at full size (124M parameters,
random weights from its config), and prints the ratio and the copy's share.

    python benchmarks/bench_capture.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def models() -> list[tuple[str, nn.Module, tuple[torch.Tensor, ...]]]:
    out = [
        ("Conv stack 3x256x256", nn.Sequential(*[nn.Conv2d(32 if i else 3, 32, 3, padding=1) for i in range(8)]).eval(),
         (torch.randn(1, 3, 256, 256),)),
        ("TransformerEncoder 6x512", nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 8, batch_first=True), 6).eval(),
         (torch.randn(2, 128, 512),)),
    ]
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        gpt2 = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()  # 124M parameters, random weights
        out.append(("GPT-2 small (124M)", gpt2, (torch.randint(0, 50257, (1, 64)),)))
    except ImportError:
        print("transformers is not installed: GPT-2 left out")
    return out


def first_call(model: nn.Module, args: tuple[torch.Tensor, ...], record: bool, calls: int = 1) -> float:
    """A test body's calls of ``model``: the first copies it; each records (clones) its arguments."""
    from pytest_torchexport.capture import Recorder

    t0 = time.perf_counter()
    with torch.no_grad():
        if record:
            with Recorder():
                for _ in range(calls):
                    model(*args)
        else:
            for _ in range(calls):
                model(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    from pytest_torchexport.capture import module_bytes

    print(f"{'model':28} {'MB':>7} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'copy ms':>8}")
    # A stateless model called in a loop (a sequence of 100 calls: 64 are recorded).
    loop = ("MLP, 100 calls in a loop", nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)).eval(),
            (torch.randn(32, 64),), 100)
    for name, model, args, calls in [(*m, 1) for m in models()] + [loop]:
        first_call(model, args, False)  # warm-up
        plain, recorded = [], []
        for _ in range(opts.repeats):  # interleaved, so load hits both sides alike
            plain.append(first_call(model, args, False, calls))
            recorded.append(first_call(model, args, True, calls))
        p, r = statistics.median(plain), statistics.median(recorded)
        print(f"{name:28} {module_bytes(model) / 2**20:7.0f} {p * 1e3:9.1f} {r * 1e3:12.1f} {r / p:6.2f} {(r - p) * 1e3:8.1f}")


if __name__ == "__main__":
    main()
