"""Localisation (diverges_at) against one more export, on a 12-layer encoder.

The encoder's layer 7 feed-forward computes differently once exported (as a wrong
lowering would), so every backend's artifact differs from eager. Per backend, repeated
and interleaved so machine load hits both alike: one export as the check does it
(export, save, load back) and one localisation of the loaded artifact at the example,
as the check runs it after a mismatch. Printed: the medians, their ratio (the issue's
bar: below 1) and the module named.

    python benchmarks/bench_localize.py                 # all five backends
    python benchmarks/bench_localize.py --backends trace,onnx --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends.base import ExportContext, load_backend
from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.options import BUILTIN_BACKENDS
from pytest_torchexport.reference.compare import compare
from pytest_torchexport.search import localize


class Lowered(nn.Module):
    """A linear layer whose exported form scales by 1.5 (a constant shift would vanish in the next LayerNorm): a stand-in for a wrong lowering."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if torch.jit.is_scripting():
            return y * 1.5
        else:
            if torch.jit.is_tracing() or torch.compiler.is_exporting():
                return y * 1.5
        return y


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int, lowered: bool) -> None:
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.act = nn.GELU()
        self.down = Lowered(hidden, d) if lowered else nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    def __init__(self, d: int, heads: int, lowered: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, 4 * d, lowered)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.ffn(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, layers: int = 12, d: int = 64, heads: int = 4, lowered_at: int = 7) -> None:
        super().__init__()
        self.embed = nn.Linear(16, d)
        self.layers = nn.ModuleList([Layer(d, heads, i == lowered_at) for i in range(layers)])
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def export_and_load(backend: Any, model: nn.Module, x: torch.Tensor, plan: Any, scratch: Path) -> Any:
    """One more export, as the check does it: export, save to a directory, load back."""
    with quiet_torch(fds=True), torch.no_grad():
        ctx = ExportContext(device="cpu", plan=plan, module=model, scratch=scratch)
        artifact = backend.export(model, (x,), {}, ctx)
        directory = scratch / "artifact"
        directory.mkdir()
        backend.save(artifact, directory)
        return backend.load(directory, ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="trace,script,export,onnx,onnx-legacy")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 10, 16)
    plan = plan_inputs(model, (x,), None, dims={"batch": (1, 4)}, dynamic={0: {0: "batch"}})
    with torch.no_grad():
        expected = model(x)
    print(f"median of {args.repeats}, interleaved; seconds")
    print(f"{'backend':12} {'export+load':>11} {'localize':>9} {'ratio':>6}  diverges_at")
    for name in args.backends.split(","):
        backend = load_backend(BUILTIN_BACKENDS[name])
        exports, localizations, located = [], [], None
        try:
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as scratch:  # the loaded ONNX model reads its file
                    t0 = time.perf_counter()
                    loaded = export_and_load(backend, model, x, plan, Path(scratch))
                    exports.append(time.perf_counter() - t0)
                    with quiet_torch():
                        top = compare(expected, backend.run(loaded, (x,), {}), relowered=backend.relowered).max_abs
                    t0 = time.perf_counter()
                    located = localize.locate(
                        backend, loaded, model, (x,), {},
                        judge=lambda e, a: compare(e, a, relowered=backend.relowered), top_error=top,  # noqa: B023 - used at once
                    )
                    localizations.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - an exporter that refuses the model is reported
            print(f"{name:12} {'-':>11} {'-':>9} {'-':>6}  cannot export: {type(exc).__name__}: {str(exc)[:70]}")
            continue
        export_s, localize_s = statistics.median(exports), statistics.median(localizations)
        where = f"{located.module} ({located.cls}), {located.compared} compared, {located.method}" if located else "-"
        print(f"{name:12} {export_s:11.3f} {localize_s:9.3f} {localize_s / export_s:6.3f}  {where}")


if __name__ == "__main__":
    main()
