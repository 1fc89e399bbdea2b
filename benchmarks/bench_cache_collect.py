"""What collecting a check's files costs during an export (issue 30, ``sources.py``), side by side.

Each exporter (trace, script, torch.export, dynamo ONNX) exports a small MLP three ways,
interleaved, ``--repeat`` times (the best time of each is kept):

- ``plain``: as the check does with the verdict cache off;
- ``read``: with ``sources.reading()``, the ``linecache`` hook the check uses for every export;
- ``traced``: also under ``sources.watching()``, a file tracer on every Python frame, which the
  check uses only for the exporters that run the forward in Python (trace, onnx-legacy).

It prints the ratios and the user files each way found: the reason dynamo-based exports are
not traced (their ratio), and what the hook alone finds (the model's file, read for
TorchScript and for the graph's stack traces).

    python benchmarks/bench_cache_collect.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from pytest_torchexport._compat import quiet_torch
    from pytest_torchexport.cache import sources

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    model, x = MLP().eval(), torch.randn(4, 16)
    batch = {0: torch.export.Dim("batch", min=1, max=32)}
    exporters = {
        "trace": lambda: torch.jit.trace(model, (x,)),
        "script": lambda: torch.jit.script(MLP().eval()),
        "export": lambda: torch.export.export(model, (x,), dynamic_shapes=(batch,)),
        "onnx": lambda: torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=(batch,), verbose=False),
    }

    class Row:
        sources: list[str] | None = None

    print(f"{os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'exporter':9} {'plain s':>8} {'read':>8} {'traced':>8}  read/plain  traced/plain  user files (read, traced)")
    for name, export in exporters.items():
        with quiet_torch(fds=True), torch.no_grad():
            export()  # first use: lazy imports
            best: dict[str, float] = {}
            found: dict[str, int] = {}
            for _ in range(args.repeat):
                for mode in ("plain", "read", "traced"):
                    row = Row()
                    t0 = time.perf_counter()
                    with sources.collecting(row):
                        if mode == "plain":
                            export()
                        elif mode == "read":
                            with sources.reading():
                                export()
                        else:
                            with sources.reading(), sources.watching():
                                export()
                    best[mode] = min(best.get(mode, 1e9), time.perf_counter() - t0)
                    found[mode] = sum(1 for p in row.sources or () if sources.hashed(p))
        print(f"{name:9} {best['plain']:8.3f} {best['read']:8.3f} {best['traced']:8.3f}  "
              f"{best['read'] / best['plain']:9.2f}x  {best['traced'] / best['plain']:11.2f}x  "
              f"{found['read']}, {found['traced']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
