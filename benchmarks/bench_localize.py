"""Localisation (diverges_at) against one more export, on a 12-layer encoder.

The encoder's layer 7 feed-forward computes differently once exported (as a wrong
lowering would), so every backend fails with a ``mismatch`` and the engine localises it
once on the shrunk input. Printed per backend: the export (export + save + load) the
check did, the localisation, their ratio (the issue's bar: below 1), the module named,
and the latency measurement's cost.

    python benchmarks/bench_localize.py                 # all five backends
    python benchmarks/bench_localize.py --backends trace,onnx
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

from pytest_torchexport import check
from pytest_torchexport.errors import ExportMismatch


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="trace,script,export,onnx,onnx-legacy")
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = Encoder().eval()
    x = torch.randn(2, 10, 16)
    print(f"{'backend':12} {'export+load s':>13} {'localize s':>10} {'ratio':>6} {'latency s':>9}  diverges_at")
    for backend in args.backends.split(","):
        try:
            report = check(model, (x,), backends=[backend], examples=args.examples, dims={"batch": (1, 4)},
                           dynamic={0: {0: "batch"}})
        except ExportMismatch as exc:
            report = exc.report
        (result,) = report.results
        export_s = result.timings.get("export_s", 0.0) + result.timings.get("load_s", 0.0)
        localize_s = result.timings.get("localize_s")
        where = result.extra.get("diverges_at", {})
        named = f"{where.get('module')} ({where.get('class')}), {where.get('compared_modules')} modules compared" if where else (
            result.extra.get("diverges_at_unavailable") or result.status)
        ratio = f"{localize_s / export_s:6.3f}" if localize_s is not None and export_s else "     -"
        loc = f"{localize_s:10.3f}" if localize_s is not None else "         -"
        print(f"{backend:12} {export_s:13.3f} {loc} {ratio} {result.timings.get('latency_s', 0.0):9.3f}  {named}")


if __name__ == "__main__":
    main()
