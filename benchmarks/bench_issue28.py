"""What issue 28 costs in check time on the real models of tests/test_real_models.py, measured
side by side in one run: each model checked with the new stages on and off.

- ``static_size`` (static_sizes.py): after a pass, the undeclared dims at n-1, n+1 and 2n.
  Off: ``static_sizes.MAX_DIMS = 0``. Its own time is also in each row's ``static_size_s``.
- ``introduced`` (localize.py): at a localised mismatch, the values entering the first
  diverging module (a second run of the artifact's graph). Off: ``localize._introduced``
  answers "cannot tell". Only failing rows localise: the encoder's fast path is the real one.
- ``sizes`` (a min/max per drawn input) and the one-call state replay (which already ran:
  side_effects._state_updated) cost nothing measurable and are not toggled.

Printed per model and backend: the check's total_s with the stage off and on, their ratio,
and the stage's own seconds. Checks run as a marked test runs them (each in a forked child,
which inherits the toggles).

    python benchmarks/bench_issue28.py [--models cnn,gru,bert,encoder] [--backends trace,onnx,export]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_real_models import BiGRUClassifier, EfficientNetLike, Encoder, _calibrated, _hf, _tokens  # noqa: E402

from pytest_torchexport import static_sizes  # noqa: E402
from pytest_torchexport.engine.pipeline import Session, run  # noqa: E402
from pytest_torchexport.options import Options  # noqa: E402
from pytest_torchexport.search import localize


def models() -> dict[str, tuple[torch.nn.Module, tuple, dict]]:
    torch.manual_seed(0)
    ids, mask = _tokens(99)
    bert = _hf("Bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=37, max_position_embeddings=64)
    padding = torch.tensor([[False, False, False, True, True], [False] * 5])
    return {
        "cnn": (_calibrated(EfficientNetLike(), 4, 3, 32, 32), (torch.randn(2, 3, 32, 32),), {}),
        "gru": (BiGRUClassifier(), (torch.randint(0, 50, (2, 7)),), {}),
        "bert": (bert, (), {"input_ids": ids, "attention_mask": mask}),
        "encoder": (Encoder(), (torch.randn(2, 5, 16), padding), {}),
    }


def check(module, args, kwargs, backends):
    torch.manual_seed(0)
    opts = Options.build(backends=backends, examples=6, seed=0, dims={"batch": (1, 4)})
    return {r.backend: r for r in run(module.eval(), args, kwargs, opts, Session()).results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,gru,bert,encoder")
    parser.add_argument("--backends", default="trace,onnx,export")
    ns = parser.parse_args()
    backends = ns.backends.split(",")
    real_introduced = localize._introduced
    print(f"{'model':8} {'backend':8} {'status':9} {'off s':>7} {'on s':>7} {'on/off':>6}  stage s, what it found")
    for name, (module, args, kwargs) in models().items():
        if name not in ns.models.split(","):
            continue
        static_sizes.MAX_DIMS, localize._introduced = 0, lambda *a, **k: (None, None)
        off = check(module, args, kwargs, backends)
        static_sizes.MAX_DIMS, localize._introduced = 4, real_introduced
        on = check(module, args, kwargs, backends)
        for backend in backends:
            a, b = off[backend], on[backend]
            found = [f.kind for f in b.findings if f.kind == "static_size"]
            where = b.extra.get("diverges_at") or {}
            stage = b.timings.get("static_size_s")
            note = f"static_size {stage:.3f}s x{len(found)}" if stage is not None else ""
            if "introduced" in where:
                note += f"introduced={where['introduced']} (localize {where['seconds']:.3f}s vs {a.extra.get('diverges_at', {}).get('seconds', 0):.3f}s off)"
            print(f"{name:8} {backend:8} {b.status:9} {a.timings['total_s']:7.2f} {b.timings['total_s']:7.2f} "
                  f"{b.timings['total_s'] / a.timings['total_s']:6.2f}  {note}")


if __name__ == "__main__":
    main()
