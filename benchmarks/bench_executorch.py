"""The `executorch` backend against `export`, stage by stage and through ``check()``, in one run.

Stages, each timed on its own (best of ``--repeat`` after the first, which pays imports and
op registration and is printed apart): ``torch.export``; lowering (``to_edge_transform_and_lower``
with XNNPACK, then ``.to_executorch()``; ``export`` has none); save; load; one run of the
loaded artifact at the example's size. Then ``check()`` with N examples on each backend,
and the ratio of the two wall times: once over batch 1..15, once over 1..16, where
executorch 1.5.1 plans memory for 15 rows of a Conv2d input and its runtime rejects 16.

    python benchmarks/bench_executorch.py              # a small CNN, N=25
    python benchmarks/bench_executorch.py --examples 10 --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from small_models import ConvNet
from torch import nn

from pytest_torchexport import check
from pytest_torchexport._compat import quiet_torch


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def stages_export(model: nn.Module, x: torch.Tensor, directory: Path) -> dict[str, float]:
    dyn = {"x": {0: torch.export.Dim("batch", min=1, max=16)}}
    times = {}
    with quiet_torch(fds=True), torch.no_grad():
        program, times["export"] = _timed(lambda: torch.export.export(model, (x,), dynamic_shapes=dyn, strict=False))
        times["lower"] = 0.0
        path = directory / "model.pt2"
        _, times["save"] = _timed(lambda: torch.export.save(program, str(path)))
        loaded, times["load"] = _timed(lambda: torch.export.load(str(path)).module())
        _, times["run"] = _timed(lambda: loaded(x))
    return times


def stages_executorch(model: nn.Module, x: torch.Tensor, directory: Path) -> dict[str, float]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    dyn = {"x": {0: torch.export.Dim("batch", min=1, max=16)}}
    times = {}
    with quiet_torch(fds=True), torch.no_grad():
        program, times["export"] = _timed(lambda: torch.export.export(model, (x,), dynamic_shapes=dyn, strict=False))
        lowered, times["lower"] = _timed(
            lambda: to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        )
        path = directory / "model.pte"
        _, times["save"] = _timed(lambda: path.write_bytes(lowered.buffer))
        method, times["load"] = _timed(lambda: Runtime.get().load_program(str(path)).load_method("forward"))
        _, times["run"] = _timed(lambda: method.execute([x.contiguous()]))
    return times


def stage_table(model: nn.Module, x: torch.Tensor, repeat: int) -> None:
    print(f"{'stage':8} {'export (s)':>12} {'executorch (s)':>15} {'ratio':>8}")
    rows = {}
    for name, fn in (("export", stages_export), ("executorch", stages_executorch)):
        runs = []
        for _ in range(repeat + 1):
            with tempfile.TemporaryDirectory() as d:
                runs.append(fn(model, x, Path(d)))
        rows[name] = runs
    first = {name: runs[0] for name, runs in rows.items()}
    best = {name: {k: min(r[k] for r in runs[1:]) for k in runs[0]} for name, runs in rows.items()}
    for stage in ("export", "lower", "save", "load", "run"):
        e, et = best["export"][stage], best["executorch"][stage]
        ratio = f"{et / e:8.1f}" if e > 0 else f"{'-':>8}"
        print(f"{stage:8} {e:12.4f} {et:15.4f} {ratio}")
    total = {name: sum(first[name].values()) for name in first}
    print(f"first call in this process (imports, op registration): export {total['export']:.2f} s, "
          f"executorch {total['executorch']:.2f} s (lowering {first['executorch']['lower']:.2f} s)")


def check_table(model: nn.Module, x: torch.Tensor, examples: int, max_batch: int) -> None:
    from pytest_torchexport import ExportMismatch

    walls = {}
    for backend in ("export", "executorch"):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        try:
            report = check(model, (x,), backends=[backend], examples=examples, dims={"batch": (1, max_batch)}, seed=0)
        except ExportMismatch as exc:
            report = exc.report
        walls[backend] = time.perf_counter() - t0
        r = report.results[0]
        timings = ", ".join(f"{k}={v:.3f}" for k, v in r.timings.items())
        print(f"check() {backend:10} {r.status:9} {r.examples:3} inputs  wall {walls[backend]:6.2f} s  ({timings})")
        if r.status != "pass":
            print("   " + r.message.splitlines()[3])
    print(f"check() ratio executorch/export: {walls['executorch'] / walls['export']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, x = ConvNet().eval(), torch.randn(4, 3, 32, 32)
    print(f"ConvNet on {tuple(x.shape)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    stage_table(model, x, args.repeat)
    # batch <= 15: executorch 1.5.1 plans a Conv2d program declared for batch (1, 16) for at
    # most 15 rows (see the run below with 16), which would time a failure's shrinking.
    check_table(model, x, args.examples, max_batch=15)
    check_table(model, x, args.examples, max_batch=16)


if __name__ == "__main__":
    main()
