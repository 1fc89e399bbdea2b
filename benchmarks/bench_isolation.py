"""What process isolation costs: the plugin's engine (``process`` and ``inline``) against the
leanest hand-written loop doing the same work, in one run, side by side.

Hand-written: per backend, export once, save and load the artifact, then the same number
of random inputs (random batch sizes), eager and the loaded artifact, ``assert_close``.
Engine: ``check()`` with ``examples=N`` on the same backends, with each check in a
forked child (``isolation="process"``): side by side (``runner.parallel_checks()`` of them
at once, the default) and one at a time (``TORCHEXPORT_JOBS=1``, as before side-by-side
checks); and in this process (``"inline"``). Every
path runs once untimed first (the exporters' first-use warm-up), then ``--repeat`` times;
the best time is kept. Also prints what one ``fork`` costs in a process that imported torch.

    python benchmarks/bench_isolation.py                 # 3 models x 4 backends, 25 examples
    python benchmarks/bench_isolation.py --examples 10 --repeat 1
    python benchmarks/bench_isolation.py --threads 1     # what is left once threads are equal
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from small_models import MLP, ConvNet, Encoder
from torch import nn

from pytest_torchexport import check
from pytest_torchexport._compat import quiet_torch

BACKENDS = ["trace", "script", "onnx", "export"]


MODELS = {
    "mlp": (MLP, (4, 16)),
    "conv": (ConvNet, (2, 3, 16, 16)),
    "encoder": (Encoder, (2, 6, 12)),
}


def hand_written(model: nn.Module, example: torch.Tensor, n: int) -> None:
    """Export once per backend, save, load, then ``n`` random batch sizes through eager and the loaded artifact."""
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        for backend in BACKENDS:
            hand_check(model, example, backend, n, gen, Path(scratch))


def hand_check(
    model: nn.Module,
    example: torch.Tensor,
    backend: str,
    n: int,
    gen: torch.Generator,
    scratch: Path,
    where: str = "",
    *,
    compare: bool = True,
    max_batch: int = 16,
) -> None:
    """One backend by hand: export at ``example`` (batch dim dynamic, 1..16), save to ``scratch``,
    load, then ``n`` random batch sizes through eager and the loaded artifact, ``assert_close``
    (``compare=False``: the same exports and forwards, no comparison: the floor)."""
    import onnxruntime as ort
    from torch.export import Dim

    dynamic = {"x": {0: Dim("batch", min=1, max=max_batch)}}
    path = scratch / backend
    with quiet_torch(fds=True), torch.no_grad():
        if backend in ("trace", "script"):
            artifact = torch.jit.trace(model, (example,)) if backend == "trace" else torch.jit.script(model)
            torch.jit.save(artifact, str(path))
            run = torch.jit.load(str(path))
        elif backend == "export":
            torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic), str(path))
            run = torch.export.load(str(path)).module()
        elif backend == "onnx":
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=dynamic, verbose=False)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def run(x, session=session):
                return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        else:
            raise ValueError(f"the hand loop knows trace, script, onnx and export, not {backend!r}")
    random_batches(
        model, run, example, backend, n, gen, label=f"{where} {backend}".strip(), compare=compare, max_batch=max_batch
    )


def random_batches(
    model: nn.Module,
    run: Any,
    example: torch.Tensor,
    backend: str,
    n: int,
    gen: torch.Generator,
    *,
    label: str = "",
    compare: bool = True,
    max_batch: int = 16,
) -> None:
    """The hand loop's checks: ``n`` random batch sizes (1..``max_batch``) through eager and ``run``, ``assert_close``
    (onnxruntime at rtol 1e-3, atol 1e-4); ``compare=False`` runs both and compares nothing."""
    tol = {"rtol": 1e-3, "atol": 1e-4} if backend == "onnx" else {}
    for _ in range(n):
        batch = int(torch.randint(1, max_batch + 1, (1,), generator=gen))
        x = torch.randn(batch, *example.shape[1:], generator=gen)
        with torch.no_grad(), quiet_torch():
            expected = model(x)
            actual = run(x)
        if compare:
            torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{label or backend}: {m}")
        del expected, actual  # a large output goes before the next is made, as the plugin's do


def engine(model: nn.Module, example: torch.Tensor, n: int, isolation: str, jobs: str = "") -> None:
    os.environ["TORCHEXPORT_JOBS"] = jobs
    check(model, (example,), backends=BACKENDS, examples=n, dims={"batch": (1, 16)}, seed=0, isolation=isolation)


def fork_cost(repeat: int = 20) -> float:
    """Median ms of fork + a child that exits at once + waitpid, from this (torch-laden) process."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1000


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads here (the hand-written loop and inline); a process child always runs one",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        cls, shape = MODELS[name]
        model, example = cls().eval(), torch.randn(*shape)
        paths = {
            "hand": functools.partial(hand_written, model, example, args.examples),
            "process": functools.partial(engine, model, example, args.examples, "process"),
            "serial": functools.partial(engine, model, example, args.examples, "process", "1"),
            "inline": functools.partial(engine, model, example, args.examples, "inline"),
        }
        for fn in paths.values():
            fn()  # warm-up, untimed
        rows.append((name, {k: best(fn, args.repeat) for k, fn in paths.items()}))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"fork + exit + waitpid with torch imported and exporters warm: {fork_cost():.1f} ms (median of 20); "
        f"parent peak RSS {rss:.0f} MB, largest child {children:.0f} MB"
    )
    from pytest_torchexport.isolation.runner import parallel_checks

    print(
        f"{len(BACKENDS)} backends, {args.examples} examples, best of {args.repeat}; torch threads "
        f"{torch.get_num_threads()}; checks side by side: {parallel_checks()}; load {os.getloadavg()[0]:.1f}"
    )
    names = {"hand": "hand s", "process": "process s", "serial": "1-at-a-time s", "inline": "inline s"}
    print(
        f"{'model':10} "
        + " ".join(f"{v:>13}" for v in names.values())
        + f" {'process/hand':>13} {'1-at-a-time/hand':>17} {'inline/hand':>12}"
    )
    total = dict.fromkeys(names, 0.0)
    for name, t in rows + [("all", total)]:
        if name != "all":
            for k in total:
                total[k] += t[k]
        print(
            f"{name:10} "
            + " ".join(f"{t[k]:13.2f}" for k in names)
            + f" {t['process'] / t['hand']:13.2f} {t['serial'] / t['hand']:17.2f} {t['inline'] / t['hand']:12.2f}"
        )


if __name__ == "__main__":
    main()
