"""Measure what the ONNX-as-shipped steps do to the real models of tests/test_real_models.py,
and so where the default budgets sit (docs/howto-shipped-onnx.md).

For each clean real model (random weights, BatchNorm calibrated, transformers from configs)
and each step, the engine's own check runs with the default search (25 examples, seed 0)
and a budget too large to fail (1e6), so every input is judged and the report's
``worst_of_scale`` is the greatest error seen, as a fraction of the output's scale (its
greatest |eager| value on that input or on the recorded call). For float16 it is also
printed in units of u * sqrt(op depth) (u = 2**-11, float16's unit roundoff), the
quantity the default float16 budget is a multiple of. ``onnx_optimize`` runs at the
default tolerances: its verdict and greatest errors are printed.

    python benchmarks/measure_onnx_shipped.py [--models effnet,deeplab,gru,bert,gpt2,t5] [--examples 25]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.options import Options

HERE = Path(__file__).resolve().parent
LARGE = 1e6
U16 = 2.0**-11


def _real_models():
    spec = importlib.util.spec_from_file_location("real_models", HERE.parent / "tests" / "test_real_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(rm, names):
    table = {
        "effnet": lambda: (rm._calibrated(rm.EfficientNetLike(), 4, 3, 32, 32), (torch.randn(2, 3, 32, 32),), {}),
        "deeplab": lambda: (rm._calibrated(rm.DeepLabLike(), 2, 3, 64, 64), (torch.randn(1, 3, 64, 64),), {}),
        "gru": lambda: (rm.BiGRUClassifier(), (torch.randint(0, 50, (2, 7)),), {}),
        "bert": lambda: _hf(
            rm,
            "Bert",
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        ),
        "gpt2": lambda: _hf(rm, "GPT2", vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False),
        "t5": lambda: _hf(
            rm,
            "T5",
            vocab_size=99,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            decoder_start_token_id=0,
            use_cache=False,
        ),
    }
    for name in names:
        torch.manual_seed(0)
        yield name, table[name]()


def _hf(rm, name, **config):
    model = rm._hf(name, **config)
    ids, mask = rm._tokens(99)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if name == "T5":
        kwargs["decoder_input_ids"] = ids[:, :4]
    return model, (), kwargs


STEPS = {
    "optimize=basic": {"onnx_optimize": "basic"},
    "optimize=all": {"onnx_optimize": "all"},
    "fp16": {"onnx_fp16": {"budget": LARGE}},
    "fp16+optimize=all": {"onnx_fp16": {"budget": LARGE}, "onnx_optimize": "all"},
    "dynamic QInt8 (ort default)": {"onnx_quantize": {"mode": "dynamic", "budget": LARGE}},
    "dynamic QUInt8": {"onnx_quantize": {"mode": "dynamic", "weight_type": "QUInt8", "budget": LARGE}},
    "dynamic QInt8 reduce_range": {"onnx_quantize": {"mode": "dynamic", "reduce_range": True, "budget": LARGE}},
    "static (ort default)": {"onnx_quantize": {"mode": "static", "budget": LARGE}},
    "static QUInt8": {
        "onnx_quantize": {"mode": "static", "activation_type": "QUInt8", "weight_type": "QUInt8", "budget": LARGE}
    },
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="effnet,deeplab,gru,bert,gpt2,t5")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--examples", type=int, default=25)
    args = parser.parse_args()
    rm = _real_models()
    print(
        f"{'model':8} {'step':28} {'status':9} {'depth':>5} {'worst/scale':>11} {'/(u*sqrt(d))':>12} {'max_abs':>9}  s"
    )
    for name, (model, call_args, kwargs) in models(rm, args.models.split(",")):
        for step in args.steps.split(","):
            options = Options.build(
                backends=["onnx"],
                examples=args.examples,
                seed=0,
                dims={"batch": (1, 4)},
                isolation="inline",
                **STEPS[step],
            )
            t0 = time.perf_counter()
            torch.manual_seed(0)
            row = run(model.eval(), call_args, kwargs, options, Session()).results[0]
            shipped = row.extra.get("shipped", {})
            depth = shipped.get("op_depth", 0)
            worst = shipped.get("worst_of_scale")
            units = worst / (U16 * math.sqrt(depth)) if worst is not None and depth else None
            print(
                f"{name:8} {step:28} {row.status:9} {depth:5d} "
                f"{'-' if worst is None else f'{worst:.3g}':>11} {'-' if units is None else f'{units:.3g}':>12} "
                f"{'-' if row.max_abs_err is None else f'{row.max_abs_err:.2g}':>9}  {time.perf_counter() - t0:.0f}",
                flush=True,
            )
            if row.status != "pass":
                print("   ", row.message.splitlines()[0][:200], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
