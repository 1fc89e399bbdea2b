"""What the marker costs a suite whose tests do real work: a dozen tests, each with a fixture
that builds a model, a few training steps and assertions on the outputs in eval mode, timed
three ways in one run, side by side:

- ``plain``: the suite as written, ``pytest -p no:torchexport``;
- ``marked``: the same tests, each with ``@pytest.mark.torchexport(backends=..., examples=N)``
  (both files come from one template; only the marker line differs);
- ``hand``: the leanest hand-written loop doing the checks the plugin does, per model and
  backend: export, save, load, then ``N`` random batch sizes through eager and the loaded
  artifact with ``assert_close`` (``hand_written`` of ``bench_isolation.py``, for any input
  shape).

Each run is a fresh interpreter under a small wrapper process that reports the wall time and
the peak memory of the run with its children: the largest single process
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and the largest sum of PSS over the process tree,
sampled every 0.2 s (what concurrent children hold together). The three run interleaved,
``--repeat`` rounds, rotating the order; the best wall time and the highest peaks are kept.
The target: ``marked <= 1.10 x (plain + hand)``. ``hand`` is printed twice: the
whole process, and its loop alone (without the interpreter and ``import torch``, which the
plain suite already pays); the ratio is given against both. ``TORCHEXPORT_JOBS`` and the
rest of the environment pass through to every run.

    python benchmarks/bench_suite.py                              # 4 backends, 25 examples, 1 round
    python benchmarks/bench_suite.py --examples 5 --repeat 1      # a quick look
    python benchmarks/bench_suite.py --repeat 2 --backends trace,export
    TORCHEXPORT_JOBS=2 python benchmarks/bench_suite.py --pytest-args="-n 2"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ["trace", "script", "onnx", "export"]

# Written next to the tests as bench_models.py; the hand loop imports the same file.
# Every model takes one float tensor whose dim 0 is the batch and returns one tensor, and
# passes on every backend: the benchmark times checks, not failures.
MODELS_SRC = """
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x):
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm = nn.LayerNorm(32)

    def forward(self, x):
        h = self.proj(x)
        return self.norm(h + self.attn(h, h, h, need_weights=False)[0])


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class GRUTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(12, 32, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 24, num_layers=2, batch_first=True)
        self.head = nn.Linear(24, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.decode = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
                                    nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.decode(self.encode(x))


class TemporalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv1d(4 if i == 0 else 16, 16, 3, padding=2 ** i, dilation=2 ** i)
                                    for i in range(3))
        self.head = nn.Conv1d(16, 2, 1)

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


class MixerBlock(nn.Module):
    def __init__(self, tokens=16, channels=32):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 32), nn.GELU(), nn.Linear(32, tokens))
        self.norm2 = nn.LayerNorm(channels)
        self.channel_mlp = nn.Sequential(nn.Linear(channels, 64), nn.GELU(), nn.Linear(64, channels))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class SwiGLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.gate = nn.Linear(32, 64)
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


class MobileBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Hardswish(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Hardswish(),
            nn.Conv2d(16, 24, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(24, 6)

    def forward(self, x):
        return self.head(self.net(x).flatten(1))


# name -> (class, the training batch's shape: dim 0 is the batch)
SPECS = {
    "mlp": (MLP, (8, 16)),
    "convnet": (ConvNet, (8, 3, 16, 16)),
    "attention": (Attention, (8, 6, 12)),
    "transformer": (Transformer, (8, 10, 32)),
    "gru": (GRUTagger, (8, 10, 12)),
    "lstm": (LSTMClassifier, (8, 12, 8)),
    "residual": (ResidualNet, (8, 3, 16, 16)),
    "autoencoder": (AutoEncoder, (8, 1, 16, 16)),
    "tcn": (TemporalConv, (8, 4, 32)),
    "mixer": (MixerBlock, (8, 16, 32)),
    "swiglu": (SwiGLU, (8, 10, 32)),
    "mobile": (MobileBlock, (8, 3, 32, 32)),
}
"""

# One file per model; {marker} is the only line that differs between plain and marked.
TEST_TEMPLATE = """
import pytest
import torch

from bench_models import SPECS

NAME = "{name}"


@pytest.fixture
def model():
    torch.manual_seed(0)
    cls, _ = SPECS[NAME]
    return cls()


{marker}
def test_{name}_trains_and_predicts(model):
    _, shape = SPECS[NAME]
    x = torch.randn(*shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range({steps}):
        optimizer.zero_grad()
        out = model(x)
        loss = nn_functional.mse_loss(out, torch.zeros_like(out))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))

    model.eval()
    with torch.no_grad():
        pred = model(x)
        again = model(x)
    assert pred.shape == out.shape and pred.shape[0] == shape[0]
    assert torch.isfinite(pred).all()
    torch.testing.assert_close(pred, again)


nn_functional = torch.nn.functional
"""

MARKER = '@pytest.mark.torchexport(backends={backends!r}, examples={examples}, dims={{"batch": (1, 16)}})'

# The wrapper around one run: wall time, the largest single process (getrusage counts every
# waited-for descendant) and the largest PSS sum over the live tree, sampled.
WRAPPER = r"""
import json, os, resource, subprocess, sys, threading, time

cmd, cwd, log = json.loads(sys.argv[1])


def tree_pss(root):
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


peak = 0
with open(log, "w") as out:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    done = threading.Event()

    def sample():
        global peak
        while not done.wait(0.2):
            peak = max(peak, tree_pss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
print(json.dumps({"rc": rc, "wall": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "pss_kb": peak}))
"""


def hand_loop(directory: Path, backends: list[str], examples: int) -> None:
    """Per model of ``directory/bench_models.py``: what the plugin does at the least, by hand."""
    t_import = time.perf_counter()
    import torch
    from bench_isolation import hand_check

    sys.path.insert(0, str(directory))
    from bench_models import SPECS

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    per_backend = dict.fromkeys(backends, 0.0)
    for name, (cls, shape) in SPECS.items():
        torch.manual_seed(0)
        model = cls().eval()
        example = torch.randn(*shape)
        with tempfile.TemporaryDirectory() as scratch:
            for backend in backends:
                t_backend = time.perf_counter()
                hand_check(model, example, backend, examples, gen, Path(scratch), where=name)
                per_backend[backend] += time.perf_counter() - t_backend
    end = time.perf_counter()
    print(
        f"hand loop: {len(SPECS)} models x {len(backends)} backends x {examples} examples; "
        f"imports {t0 - t_import:.2f} s, loop {end - t0:.2f} s "
        f"({', '.join(f'{b} {t:.1f}' for b, t in per_backend.items())})"
    )


def write_suite(directory: Path, marker: str, steps: int) -> None:
    directory.mkdir()
    (directory / "bench_models.py").write_text(MODELS_SRC)
    for name in model_names():
        (directory / f"test_{name}.py").write_text(TEST_TEMPLATE.format(name=name, marker=marker, steps=steps))


def model_names() -> list[str]:
    # Read off SPECS' source, so that the parent never imports torch: it stays out of the peaks.
    return re.findall(r'^    "(\w+)": \(', MODELS_SRC, flags=re.M)


def measure(cmd: list[str], cwd: Path, log: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps([cmd, str(cwd), str(log)])], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"wrapper failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary_line(log: Path, pattern: str) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if re.search(pattern, line)]
    return lines[-1].strip("= ") if lines else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25, help="examples per backend (marker and hand loop)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the best wall time is kept")
    parser.add_argument("--steps", type=int, default=2, help="training steps in each test body")
    parser.add_argument("--pytest-args", default="", help="more arguments for both pytest runs, e.g. '-n 2'")
    parser.add_argument("--keep", action="store_true", help="keep the suites and logs, and say where")
    parser.add_argument("--hand-loop", type=Path, help=argparse.SUPPRESS)  # the child mode of the hand run
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.hand_loop:
        hand_loop(args.hand_loop, backends, args.examples)
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench_suite_"))
    marker = MARKER.format(backends=backends, examples=args.examples)
    write_suite(scratch / "plain", "", args.steps)
    write_suite(scratch / "marked", marker, args.steps)
    pytest = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        *args.pytest_args.split(),
    ]
    commands = {
        "plain": ([*pytest, "-p", "no:torchexport"], scratch / "plain"),
        "marked": (pytest, scratch / "marked"),
        "hand": (
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--hand-loop",
                str(scratch / "plain"),
                "--examples",
                str(args.examples),
                "--backends",
                args.backends,
            ],
            scratch,
        ),
    }
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{os.cpu_count()} cpus; TORCHEXPORT_JOBS={os.environ.get('TORCHEXPORT_JOBS', 'unset')}"
    )
    print(f"marker: {marker}; {args.steps} training steps per test")
    subprocess.run([sys.executable, "-c", "import torch, onnxruntime"], check=True)  # warm the file cache
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for round_ in range(args.repeat):
        names = list(commands)
        for name in names[round_ % 3 :] + names[: round_ % 3]:  # rotate who runs first
            cmd, cwd = commands[name]
            log = scratch / f"{name}-{round_}.log"
            result = measure(cmd, cwd, log)
            if name == "hand":
                loop = re.search(r"loop ([\d.]+) s", log.read_text())
                result["loop"] = float(loop.group(1)) if loop else float("nan")
                result["summary"] = summary_line(log, r"^hand loop:|Error")
            else:
                result["summary"] = summary_line(log, r"passed|failed|error")
            if result["rc"] != 0 and name != "marked":
                # The plain suite and the hand loop must pass, or there is nothing to compare.
                sys.exit(f"{name} exited {result['rc']}; log {log}:\n{log.read_text()[-4000:]}")
            runs[name].append(result)
            print(f"  round {round_ + 1} {name:7} {result['wall']:7.2f} s  {result['summary']}", flush=True)

    best = {name: min(r["wall"] for r in rs) for name, rs in runs.items()}
    hand_loop_s = min(r["loop"] for r in runs["hand"])
    print(f"\n{len(backends)} backends ({args.backends}), {args.examples} examples, best of {args.repeat}")
    print(f"{'run':8} {'wall s':>8} {'largest process MB':>19} {'tree PSS MB':>12}  outcome")
    for name, rs in runs.items():
        rss = max(r["maxrss_kb"] for r in rs) / 1024
        pss = max(r["pss_kb"] for r in rs) / 1024
        print(f"{name:8} {best[name]:8.2f} {rss:19.0f} {pss:12.0f}  {rs[-1]['summary']} (rc {rs[-1]['rc']})")
    print(f"{'hand loop':8} {hand_loop_s:8.2f}  (its loop alone, without the interpreter and imports)")
    budget = best["plain"] + hand_loop_s
    print(
        f"marked / (plain + hand loop) = {best['marked']:.2f} / {budget:.2f} = {best['marked'] / budget:.2f}x "
        "(target <= 1.10x)"
    )
    print(
        f"marked / (plain + hand)      = {best['marked']:.2f} / {best['plain'] + best['hand']:.2f} = "
        f"{best['marked'] / (best['plain'] + best['hand']):.2f}x"
    )
    print(
        f"marked - plain = {best['marked'] - best['plain']:.2f} s of checks; the hand loop does them in "
        f"{hand_loop_s:.2f} s ({(best['marked'] - best['plain']) / hand_loop_s:.2f}x)"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.keep:
        print(f"suites and logs kept in {scratch}")
    else:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
