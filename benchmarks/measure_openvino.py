"""OpenVINO's tolerance budget per dtype: how far its outputs sit from eager on clean models.

For real-ish models (an EfficientNet-style CNN with BatchNorm, SiLU and squeeze-excitation,
a segmentation net, an ``nn.TransformerEncoder``, a bidirectional GRU)
in float32, float64, bfloat16 and float16, at the data's scale and at x100, this converts
each with the ``openvino`` backend (f32 inference precision pinned, the IR saved and
reloaded) and prints, per dtype: the greatest absolute and relative difference from eager,
the smallest (rtol, atol) pair of the form (r, r/10) that passes every clean output, the
budget the backend applies (the relowered column of compare.py), and how far each clean
output is from a float64 run compared with eager's own rounding (``noise.leaf_noise``).

    python benchmarks/measure_openvino.py
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from measure_noise import models  # the same four models the other backends' budgets were measured on

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends.base import ExportContext
from pytest_torchexport.backends.openvino import OpenVinoBackend
from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.reference.compare import RELOWERED_TOLERANCES
from pytest_torchexport.reference.noise import leaf_noise

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def first(out):  # noqa: ANN001, ANN201
    return out[0] if isinstance(out, (tuple, list)) else out


def convert(model: torch.nn.Module, x: torch.Tensor, scratch: Path):  # noqa: ANN201
    backend = OpenVinoBackend()
    ctx = ExportContext("cpu", plan_inputs(model, (x,), None, dims={"batch": (1, 8)}), model, scratch=scratch)
    directory = Path(tempfile.mkdtemp(dir=scratch))
    with quiet_torch(fds=True), torch.no_grad():
        backend.save(backend.export(copy.deepcopy(model), (x,), {}, ctx), directory)
        loaded = backend.load(directory, ctx)
    return lambda t: first(backend.run(loaded, (t,), {}))


def main() -> None:
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (base, x) in models().items():
            for dtype in DTYPES:
                model = copy.deepcopy(base).to(dtype).eval()
                m64 = copy.deepcopy(base).double().eval()
                try:
                    run = convert(model, x.to(dtype), Path(scratch))
                except Exception as exc:  # noqa: BLE001 - a conversion limit, printed as such
                    print(
                        f"{name:8} {str(dtype):15} conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    )
                    continue
                for scale in (1.0, 100.0):
                    for seed in range(3):
                        xs = (torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)
                        with torch.no_grad():
                            e, r = first(model(xs)), first(m64(xs.double()))
                        with quiet_torch(fds=True):
                            a = run(xs).to(e.dtype)
                        diff = (a.double() - e.double()).abs()
                        finite = torch.isfinite(e) & torch.isfinite(a)
                        rel = (diff / e.double().abs().clamp_min(1e-30))[finite]
                        # the smallest r such that |a - e| <= r/10 + r * |e| everywhere
                        need = (diff / (0.1 + e.double().abs()))[finite].max().item() if finite.any() else 0.0
                        n = leaf_noise("", e, a, r)
                        rows.append((name, dtype, scale, diff[finite].max().item(), rel.max().item(), need, n))
    print(f"{'model':8} {'dtype':15} {'scale':>5} {'max abs':>9} {'max rel':>9} {'rtol needed':>11} {'of allowed':>10}")
    for name, dtype, scale, mabs, mrel, need, n in rows:
        print(f"{name:8} {str(dtype):15} {scale:5g} {mabs:9.3g} {mrel:9.3g} {need:11.3g} {n.ratio:10.3g}")
    print("\nper dtype, over every clean output: the budget needed (rtol, atol=rtol/10) and the one applied")
    for dtype in DTYPES:
        needs = [row[5] for row in rows if row[1] == dtype]
        ratios = [row[6].ratio for row in rows if row[1] == dtype]
        if not needs:
            continue
        rtol, atol = RELOWERED_TOLERANCES.get(dtype, (float("nan"), float("nan")))
        print(
            f"  {str(dtype):15} needed rtol {max(needs):9.3g}  applied (rtol {rtol:g}, atol {atol:g})  "
            f"margin {rtol / max(max(needs), 1e-300):9.3g}x  worst of float64-noise allowed {max(ratios):.3g}"
        )


if __name__ == "__main__":
    main()
