"""The engine against the same work written by hand, measured side by side in one run.

Hand-written: export once per backend, then N random inputs (random batch sizes, as the
engine draws), eager and artifact, ``torch.testing.assert_close``. Engine: ``check()``
with ``examples=N`` on the same backends; it also saves and reloads each artifact,
runs the in-memory one for the round trip, records control-flow paths, probes small
sizes, and shrinks (nothing to shrink on a clean model).

    python benchmarks/bench_engine.py            # prints a table of wall times and ratios
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from bench_isolation import random_batches
from small_models import ConvNet
from torch import nn

from pytest_torchexport import check
from pytest_torchexport._compat import quiet_torch


def hand_written(model: nn.Module, example: torch.Tensor, backends: list[str], n: int, spin: bool = True) -> None:
    """What a careful user writes today: export once, loop over random batch sizes.

    ``spin=False`` also turns off onnxruntime's spin-waiting, as the engine does: with the
    default, the pool's threads spin after each run and starve the eager call that follows
    on a small machine.
    """
    from torch.export import Dim

    gen = torch.Generator().manual_seed(0)
    for backend in backends:
        with quiet_torch(fds=True):
            if backend == "trace":
                artifact = torch.jit.trace(model, (example,))
                run = artifact
            elif backend == "export":
                program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: Dim("batch", min=1, max=16)}})
                run = program.module()
            else:
                import onnxruntime as ort

                program = torch.onnx.export(model, (example,), dynamo=True,
                                            dynamic_shapes={"x": {0: Dim("batch", min=1, max=16)}}, verbose=False)
                so = ort.SessionOptions()
                if not spin:
                    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(program.model_proto.SerializeToString(), so,
                                               providers=["CPUExecutionProvider"])

                def run(x, session=session):
                    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        random_batches(model, run, example, backend, n, gen)


def engine(model: nn.Module, example: torch.Tensor, backends: list[str], n: int) -> None:
    check(model, (example,), backends=backends, examples=n, dims={"batch": (1, 16)}, seed=0)


def timed(fn, *args, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="trace,export,onnx")
    opts = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = ConvNet().eval()
    example = torch.randn(4, 3, 32, 32)
    backends = opts.backends.split(",")
    engine(model, example, backends, 2)  # warm-up: first exports import and compile a lot
    hand_written(model, example, backends, 2)

    n = opts.examples
    print(f"ConvNet {tuple(example.shape)}, backends {','.join(backends)}, median of {opts.repeat} runs, torch {torch.__version__}")
    print(f"{'':32}{'by hand':>10}{'by hand, no spin':>18}{'engine':>9}{'engine / best by hand':>23}")
    rows = {}
    for count in (n, 2 * n):
        hand = timed(hand_written, model, example, backends, count, repeat=opts.repeat)
        still = timed(lambda *a: hand_written(*a, spin=False), model, example, backends, count, repeat=opts.repeat)
        eng = timed(engine, model, example, backends, count, repeat=opts.repeat)
        rows[count] = (hand, still, eng)
        print(f"{f'{count} examples per backend (s)':32}{hand:>10.2f}{still:>18.2f}{eng:>9.2f}{eng / min(hand, still):>23.2f}")
    (h1, s1, e1), (h2, s2, e2) = rows[n], rows[2 * n]
    per = len(backends) * n
    hand_ms, still_ms, eng_ms = (1000 * (b - a) / per for a, b in ((h1, h2), (s1, s2), (e1, e2)))
    best = min(hand_ms, still_ms)
    ratio = f"{eng_ms / best:.2f}" if best > 0 and eng_ms > 0 else "n/a (noise: rerun with --repeat)"
    print(f"{'cost per extra example (ms)':32}{hand_ms:>10.1f}{still_ms:>18.1f}{eng_ms:>9.1f}{ratio:>23}")


if __name__ == "__main__":
    main()
