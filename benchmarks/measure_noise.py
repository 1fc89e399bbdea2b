"""Where does rounding end and a defect begin? The numbers behind the noise oracle's rule.

For real-ish models (an EfficientNet-style CNN and a segmentation net with BatchNorm, SiLU
and squeeze-excitation, an ``nn.TransformerEncoder``, a bidirectional GRU) on inputs at the
data's scale and far outside it (x100, where float32 rounding is large), this exports each
on the real backends (clean: no defect) and builds artifacts with real defects injected
(an approximate GELU/SiLU lowering, a BatchNorm eps folded wrong, a layer run in float16,
one weight drifted by 1e-3 in a save path, a log(sigmoid(x)) lowering). For every output
it prints the artifact's error against a float64 run of the model divided by eager
float32's own error, as RMSE and as the greatest error (noise.leaf_noise).

    python benchmarks/measure_noise.py          # a table, then the extremes per group
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from noise_models import Encoder, GRUClassifier, TinyEfficientNet, TinySegNet, calibrated
from torch import nn

from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends.base import ExportContext, load_backend
from pytest_torchexport.inputs.specs import plan_inputs
from pytest_torchexport.options import BUILTIN_BACKENDS
from pytest_torchexport.reference.noise import leaf_noise

BACKENDS = ["trace", "script", "export", "onnx", "onnx-legacy"]


def models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return {
        "cnn": (calibrated(TinyEfficientNet(c=24, blocks=6)), torch.randn(2, 3, 32, 32)),
        "segnet": (calibrated(TinySegNet()), torch.randn(2, 3, 48, 48)),
        "encoder": (Encoder().eval(), torch.randn(2, 10, 32)),
        "gru": (GRUClassifier().eval(), torch.randn(2, 12, 8)),
    }


class _Swap(nn.Module):
    """Wraps a module, replacing submodules of one type: a defect in a lowering."""

    def __init__(self, model: nn.Module, kind: type, make) -> None:  # noqa: ANN001
        super().__init__()
        self.model = copy.deepcopy(model)
        for sub in list(self.model.modules()):
            for child_name, child in list(sub.named_children()):
                if isinstance(child, kind):
                    setattr(sub, child_name, make(child))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Half(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(inner).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


class _ApproxSiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # a hard-sigmoid approximation
        return x * nn.functional.hardsigmoid(x)


class _LogSigmoidSiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x * exp(log(sigmoid(x))): -inf at large negative x
        return x * torch.exp(torch.log(torch.sigmoid(x)))


def _bn_eps(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    bad = copy.deepcopy(bn)
    bad.eps = 1e-3
    return bad


def _drift(model: nn.Module) -> nn.Module:
    bad = copy.deepcopy(model)
    with torch.no_grad():
        p = next(bad.parameters())
        p.view(-1)[0] *= 1.001
    return bad


def defects(name: str, model: nn.Module) -> dict[str, nn.Module]:
    out = {"weight drift 1e-3": _drift(model)}
    if name in ("cnn", "segnet"):
        out["BatchNorm eps 1e-3"] = _Swap(model, nn.BatchNorm2d, _bn_eps)
        out["SiLU as x*hardsigmoid"] = _Swap(model, nn.SiLU, lambda m: _ApproxSiLU())
        out["SiLU via log(sigmoid)"] = _Swap(model, nn.SiLU, lambda m: _LogSigmoidSiLU())
        out["conv in float16"] = _Swap(model, nn.Conv2d, _Half)
    if name == "encoder":
        out["GELU tanh approx"] = _Swap(model, nn.TransformerEncoderLayer, _gelu_tanh)
        out["encoder in float16"] = _Half(model)
    if name == "gru":
        out["GRU in float16"] = _Swap(model, nn.GRU, _HalfGRU)
    return out


def _gelu_tanh(layer: nn.TransformerEncoderLayer) -> nn.TransformerEncoderLayer:
    bad = copy.deepcopy(layer)
    bad.activation = lambda x: nn.functional.gelu(x, approximate="tanh")
    bad.activation_relu_or_gelu = 0
    return bad


class _HalfGRU(nn.Module):
    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.inner = copy.deepcopy(gru).half()

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        out, h = self.inner(x.half())
        return out.float(), h.float()


def clean_runners(model: nn.Module, x: torch.Tensor, scratch: Path) -> dict[str, object]:
    plan = plan_inputs(model, (x,), None, dims=None, dynamic=None, inputs=None)
    runners = {}
    for name in BACKENDS:
        backend = load_backend(BUILTIN_BACKENDS[name])
        ctx = ExportContext(device="cpu", plan=plan, module=model, scratch=scratch)
        try:
            with quiet_torch(), torch.no_grad():
                artifact = backend.export(copy.deepcopy(model), (x,), {}, ctx)
        except Exception as exc:  # noqa: BLE001 - a real defect of its own (the encoder fast path)
            print(f"  {name}: export failed ({type(exc).__name__})")
            continue
        runners[name] = lambda t, b=backend, a=artifact: b.run(a, (t,), {})
    return runners


def main() -> None:
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (model, x) in models().items():
            m64 = copy.deepcopy(model).double()
            runners = {f"clean {k}": v for k, v in clean_runners(model, x, Path(scratch)).items()}
            runners.update({f"defect: {k}": (lambda t, m=m: m(t)) for k, m in defects(name, model).items()})
            for scale in (1.0, 100.0, 1000.0):
                for seed in range(3):
                    g = torch.Generator().manual_seed(seed)
                    xs = torch.randn(x.shape, generator=g) * scale
                    with torch.no_grad():
                        e, r = model(xs), m64(xs.double())
                        e, r = (e[0], r[0]) if isinstance(e, tuple) else (e, r)
                        for label, run in runners.items():
                            with quiet_torch():
                                a = run(xs)
                            a = a[0] if isinstance(a, (tuple, list)) else a
                            n = leaf_noise("", e, torch.as_tensor(a).float(), r)
                            rows.append((name, scale, label, n))
    print(f"{'model':8} {'scale':>6} {'artifact':28} {'rmse ratio':>11} {'max ratio':>10} {'of allowed':>10} verdict")
    for name, scale, label, n in rows:
        rr = n.artifact_rmse / n.eager_rmse if n.eager_rmse else float("inf")
        mr = n.artifact_max / n.eager_max if n.eager_max else float("inf")
        print(
            f"{name:8} {scale:6g} {label:28} {rr:11.3g} {mr:10.3g} {n.ratio:10.3g} {'rounding' if n.rounding else 'DEFECT'}"
        )
    clean = [n for *_, label, n in rows if label.startswith("clean")]
    worst = max(clean, key=lambda n: n.ratio)
    print(
        f"\nclean exports: {sum(n.rounding for n in clean)} of {len(clean)} judged rounding; worst rmse ratio "
        f"{max(_ratio(n, 'rmse') for n in clean):.3g}, worst max ratio {max(_ratio(n, 'max') for n in clean):.3g}, "
        f"worst of allowed {worst.ratio:.3g}"
    )
    print("defects (a defect below eager's own rounding on an input is invisible there, and judged rounding):")
    for label in sorted({label for *_, label, _ in rows if label.startswith("defect")}):
        ns = [n for *_, lab, n in rows if lab == label]
        caught = [n for n in ns if not n.rounding]
        low = min((min(_ratio(n, "rmse"), _ratio(n, "max")) for n in caught), default=float("nan"))
        print(
            f"  {label[8:]:24} caught on {len(caught):2} of {len(ns)} inputs; smallest ratio when caught {low:9.3g}; "
            f"largest when not {max((n.ratio for n in ns if n.rounding), default=float('nan')):.3g} of allowed"
        )


def _ratio(n, attr: str) -> float:  # noqa: ANN001
    art, eag = getattr(n, f"artifact_{attr}"), getattr(n, f"eager_{attr}")
    return art / eag if eag else float("inf")


if __name__ == "__main__":
    main()
