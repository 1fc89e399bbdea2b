"""What recording a test's call costs: the "as called" copy of the module (recording/recorder.py).

The recorder copies each module the first time the test calls it, so a body that changes
the model afterwards does not change what is checked. This script times, side by side in
one run, a test body's first call of a model with and without the recorder, on the
largest models of the real-model tests and on GPT-2 small at full size (124M parameters,
random weights from its config), and prints the ratio and the copy's share.

The last rows are whole bodies that build their model and call it (``model(x)`` and
``model.forward(x)``): while the test's own code runs, the recorder's profile function
sees every Python call ([Direct Forward] in recording/recorder.py), so a body that spends its time
constructing many small modules is where that costs most.

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


class Built(nn.Module):
    """A test body that builds its model, then calls it (``forward``: ``model.forward(x)``)."""

    def __init__(self, build: object, forward: bool = False) -> None:
        super().__init__()
        self.build, self.forward_directly = build, forward

    def __call__(self, *args: torch.Tensor) -> object:  # the body, not a module call
        model = self.build().eval()
        return model.forward(*args) if self.forward_directly else model(*args)


def bodies() -> list[tuple[str, nn.Module, tuple[torch.Tensor, ...], int]]:
    small = lambda: nn.Sequential(*[nn.Linear(64, 64) for _ in range(50)])  # noqa: E731
    encoder = lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, batch_first=True), 4)  # noqa: E731
    x = torch.randn(8, 64)
    return [
        ("body: 50 Linear(64) built", Built(small), (x,), 1),
        ("body: same, .forward(x)", Built(small, forward=True), (x,), 1),
        ("body: encoder 4x256 built", Built(encoder), (torch.randn(2, 64, 256),), 1),
    ]


def first_call(model: nn.Module, args: tuple[torch.Tensor, ...], record: bool, calls: int = 1, watch: bool = True) -> float:
    """A test body's calls of ``model``: the first copies it; each records (clones) its arguments.
    ``watch=False``: the recorder without its profile function (what [Direct Forward] costs)."""
    from pytest_torchexport.recording.recorder import Recorder

    recorder = Recorder()
    if not watch:
        recorder._resume = lambda: None  # type: ignore[method-assign]
    t0 = time.perf_counter()
    with torch.no_grad():
        if record:
            with recorder:
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
    from pytest_torchexport.recording.recorder import module_bytes

    print(f"{'model':28} {'MB':>7} {'plain ms':>9} {'recorded ms':>12} {'ratio':>6} {'copy ms':>8} {'unwatched ms':>13} {'watch':>6}")
    # A stateless model called in a loop (a sequence of 100 calls: 64 are recorded).
    loop = ("MLP, 100 calls in a loop", nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)).eval(),
            (torch.randn(32, 64),), 100)
    for name, model, args, calls in [(*m, 1) for m in models()] + [loop] + bodies():
        first_call(model, args, False)  # warm-up
        plain, recorded, unwatched = [], [], []
        for _ in range(opts.repeats):  # interleaved, so load hits all sides alike
            plain.append(first_call(model, args, False, calls))
            recorded.append(first_call(model, args, True, calls))
            unwatched.append(first_call(model, args, True, calls, watch=False))
        p, r, u = statistics.median(plain), statistics.median(recorded), statistics.median(unwatched)
        # "watch": recorded / recorded without the profile function, the share [Direct Forward] adds.
        print(f"{name:28} {module_bytes(model) / 2**20:7.0f} {p * 1e3:9.1f} {r * 1e3:12.1f} {r / p:6.2f} "
              f"{(r - p) * 1e3:8.1f} {u * 1e3:13.1f} {r / u:6.3f}")


if __name__ == "__main__":
    main()
