"""The float64 noise oracle: is a failing difference rounding, or an export defect?

[Noise Oracle] On ill-conditioned inputs eager's float32 output is far from exact too. For an
input that fails the plain comparison, the module runs again in float64 and the artifact is
judged by its distance from that run relative to eager's, as ``torch._dynamo.utils.same(...,
fp64_ref=...)`` does. A shared input's float64 run is made once per call and stored
(``Float64Store``): every child would compute the same outputs. See docs/howto-tolerances.md.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import shutil
import tempfile
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .._compat import conv_module_types, pytree
from ..cache import sources
from ..inputs.strategies import Draw
from ..results.report import Finding, Result
from .compare import CHUNK, Comparison, flatten
from .eager import Eager, nbytes, restore, seed_rng, snapshot

if TYPE_CHECKING:
    from typing import TypeAlias

    #: The torch convolution layers ``slice_batches`` slices.
    _Convolution: TypeAlias = (
        torch.nn.Conv1d
        | torch.nn.Conv2d
        | torch.nn.Conv3d
        | torch.nn.ConvTranspose1d
        | torch.nn.ConvTranspose2d
        | torch.nn.ConvTranspose3d
    )

RMSE_MULTIPLE = 8.0
MAX_MULTIPLE = 10.0
# A few ulps of headroom for outputs eager computes exactly (an error of 0 would allow none).
ULPS = 4.0


@dataclass
class LeafNoise:
    """How far the artifact and eager float32 are from the float64 run on one output leaf."""

    path: str
    artifact_rmse: float
    eager_rmse: float
    artifact_max: float
    eager_max: float
    rmse_bound: float
    max_bound: float

    @property
    def ratio(self) -> float:
        """The artifact's error in units of what the rule allows (<= 1 is rounding)."""
        return max(_div(self.artifact_rmse, self.rmse_bound), _div(self.artifact_max, self.max_bound))

    @property
    def rounding(self) -> bool:
        return self.artifact_rmse <= self.rmse_bound and self.artifact_max <= self.max_bound

    def describe(self) -> str:
        return (
            f"{self.path or '(the output)'}: vs a float64 run, the artifact's RMSE is {_g(self.artifact_rmse)} "
            f"(eager float32: {_g(self.eager_rmse)}), greatest error {_g(self.artifact_max)} "
            f"(eager float32: {_g(self.eager_max)})"
        )


@dataclass
class NoiseVerdict:
    """The oracle's answer for one failing input. ``note`` is set when it could not judge."""

    leaves: list[LeafNoise] = field(default_factory=list)
    note: str | None = None

    @property
    def judged(self) -> bool:
        return self.note is None and bool(self.leaves)

    @property
    def rounding(self) -> bool:
        return self.judged and all(leaf.rounding for leaf in self.leaves)

    @property
    def worst(self) -> LeafNoise | None:
        return max(self.leaves, key=lambda leaf: leaf.ratio, default=None)

    def as_dict(self) -> dict[str, Any]:
        w = self.worst
        if w is None:
            return {"note": self.note}
        return {
            "output": w.path,
            "artifact_rmse": w.artifact_rmse,
            "eager_rmse": w.eager_rmse,
            "artifact_max_abs": w.artifact_max,
            "eager_max_abs": w.eager_max,
            # ratios to eager's own error; of_allowed in units of the bound (<= 1 passes)
            "rmse_ratio": _div(w.artifact_rmse, w.eager_rmse),
            "max_ratio": _div(w.artifact_max, w.eager_max),
            "of_allowed": w.ratio,
        }


class Float64Store:
    """The float64 outputs of the shared inputs, one file each, for the children of one call.
    Outputs over ``max_bytes`` are not stored: each child computes its own."""

    def __init__(self, names: dict[Draw, str], max_bytes: int) -> None:
        self.names = names
        self.max_bytes = max_bytes
        self.directory = os.path.join(
            tempfile.gettempdir(), f"torchexport-float64-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        )
        weakref.finalize(self, _remove, self.directory, os.getpid())

    def holds(self, draw: Draw) -> bool:
        return draw in self.names and _fcntl() is not None

    @property
    def _refused(self) -> str:
        return os.path.join(self.directory, "unavailable.txt")

    def refusal(self) -> str | None:
        """Why the module cannot run in float64, as the first child found."""
        try:
            with open(self._refused, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    @contextlib.contextmanager
    def locked(self, draw: Draw) -> Iterator[str]:
        """The file of ``draw``'s float64 outputs, under its lock."""
        fcntl = _fcntl()
        assert fcntl is not None
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, self.names[draw])
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or its holder dies
            yield path + ".pt"

    def load(self, path: str) -> tuple[Any, list[str]] | None:
        if not os.path.exists(path):
            return None
        try:
            stored = torch.load(path, weights_only=False)  # only this store writes it
        except Exception:  # noqa: BLE001 - an output this child cannot unpickle: compute it
            return None
        return stored["outputs"], stored["files"]

    def save(self, path: str, outputs: object, files: list[str]) -> None:
        if nbytes(outputs) > self.max_bytes:
            return
        partial = f"{path}.{os.getpid()}.partial"
        try:
            torch.save({"outputs": outputs, "files": files}, partial)
            os.replace(partial, path)  # atomic: a child killed mid-write leaves no half file
        except Exception:  # noqa: BLE001 - outputs pickle cannot write: each child computes its own
            with contextlib.suppress(OSError):
                os.remove(partial)

    def refuse(self, why: str) -> None:
        with contextlib.suppress(OSError):
            with open(self._refused + f".{os.getpid()}", "w", encoding="utf-8") as f:
                f.write(why)
            os.replace(self._refused + f".{os.getpid()}", self._refused)


def _remove(directory: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked child leaves the directory alone
        shutil.rmtree(directory, ignore_errors=True)


def _fcntl() -> types.ModuleType | None:
    try:
        import fcntl
    except ImportError:  # no fork either: nothing is shared
        return None
    return fcntl


class Float64Reference:
    """A double copy of the eager module, made on first use; the latest draw's output is kept."""

    def __init__(self, eager: Eager, store: Float64Store | None = None) -> None:
        self._eager = eager
        self._store = store
        self._module: torch.nn.Module | None = None
        self._initial: dict[str, torch.Tensor] | None = None
        self._cache: dict[Draw, Any] = {}
        self.unavailable: str | None = None

    def __call__(self, draw: Draw, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """The float64 outputs for this draw, or None (``unavailable`` says why)."""
        if self.unavailable is not None:
            return None
        if draw not in self._cache:
            self._cache.clear()  # one at a time: float64 outputs are twice eager's size
            store = self._store
            self._cache[draw] = (
                self._shared(store, draw, args, kwargs) if store and store.holds(draw) else self._run(args, kwargs)
            )
        return self._cache[draw]

    def _shared(self, store: Float64Store, draw: Draw, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        """Loaded where another check of this call ran it; else run here and stored."""
        with store.locked(draw) as path:
            self.unavailable = store.refusal()
            if self.unavailable is not None:
                return None
            found = store.load(path)
            if found is not None:
                outputs, files = found
                sources.note(files)  # [Sources] the verdict rests on the files the run went through
                return outputs
            seen = types.SimpleNamespace(sources=None)
            with sources.collecting(seen):
                outputs = self._run(args, kwargs)
            sources.note(seen.sources or ())
            if self.unavailable is not None:
                store.refuse(self.unavailable)
                return None
            store.save(path, outputs, list(seen.sources or ()))
            return outputs

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Only the user's module and torch are inside a try, so a plugin bug keeps its traceback.
        if self._module is None:
            try:
                with torch.no_grad():
                    module = copy.deepcopy(self._eager.module).double().eval()
            except Exception as exc:  # noqa: BLE001 - the user's module may refuse a copy or cast in any way
                return self._refused(exc)
            slice_batches(module)  # same outputs, a fraction of the memory
            self._module, self._initial = module, snapshot(module)
        a, k = pytree.tree_map(_double, (args, kwargs))
        with torch.random.fork_rng(devices=[]), torch.no_grad(), sources.watching():
            seed_rng(0, self._eager.device)
            try:
                out = self._module(*a, **k)
            except Exception as exc:  # noqa: BLE001 - the user's forward may lack a double kernel
                return self._refused(exc)
        restore(self._module, self._initial)  # a stateful module restarts, as eager does
        return out

    def _refused(self, exc: Exception) -> None:
        self.unavailable = (
            f"the module cannot run in float64 ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})"
        )
        return None


def _double(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64)
    return value


def judge_noise(cmp: Comparison, expected: object, actual: object, reference: object) -> NoiseVerdict:
    """Judge each failing leaf of ``cmp`` against the float64 ``reference``."""
    if reference is None:
        return NoiseVerdict(note="no float64 reference")
    if cmp.problem is not None or cmp.custom_message is not None or not cmp.diffs:
        return NoiseVerdict(note="not a difference in values")
    exp = {p: v for p, v in flatten(expected)[0] if v is not None}
    act = dict(zip(exp, [v for _, v in flatten(actual)[0] if v is not None]))
    ref = {p: v for p, v in flatten(reference)[0] if v is not None}
    verdict = NoiseVerdict()
    for diff in cmp.diffs:
        e, a, r = exp.get(diff.path), act.get(diff.path), ref.get(diff.path)
        if not (isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor) and isinstance(r, torch.Tensor)) or (
            not e.is_floating_point()
        ):
            return NoiseVerdict(note=f"output {diff.path or '(the output)'} has no floating float64 counterpart")
        if r.dtype != torch.float64 or r.shape != e.shape:
            return NoiseVerdict(
                note=f"output {diff.path or '(the output)'} is not computed in float64 by the double copy"
            )
        verdict.leaves.append(leaf_noise(diff.path, e, torch.as_tensor(a), r))
    return verdict


def leaf_noise(path: str, e: torch.Tensor, a: torch.Tensor, r: torch.Tensor) -> LeafNoise:
    """Errors of eager and the artifact against the float64 run, chunk by chunk.

    A NaN or inf on one side only is an infinite error: no rounding makes a finite value infinite.
    """
    e_flat, a_flat, r_flat = (t.detach().cpu().reshape(-1) for t in (e, a, r))
    sq = {"e": 0.0, "a": 0.0, "r": 0.0}
    mx = {"e": 0.0, "a": 0.0, "r": 0.0}
    n = 0
    for start in range(0, e_flat.numel(), CHUNK):
        ec, ac, rc = (t[start : start + CHUNK].to(torch.float64) for t in (e_flat, a_flat, r_flat))
        fe, fa = torch.isfinite(ec), torch.isfinite(ac)
        if bool((fe != fa).any()) or bool(((~fe) & (ec != ac) & ~(ec.isnan() & ac.isnan())).any()):
            mx["a"] = sq["a"] = math.inf
        keep = fe & fa & torch.isfinite(rc)
        ec, ac, rc = ec[keep], ac[keep], rc[keep]
        n += ec.numel()
        for key, err in (("e", ec - rc), ("a", ac - rc), ("r", rc)):
            if err.numel():
                sq[key] += float(err.square().sum())
                mx[key] = max(mx[key], float(err.abs().max()))
    rms = {k: math.sqrt(v / n) if n else (0.0 if math.isfinite(v) else math.inf) for k, v in sq.items()}
    eps = torch.finfo(e.dtype).eps
    return LeafNoise(
        path=path,
        artifact_rmse=rms["a"],
        eager_rmse=rms["e"],
        artifact_max=mx["a"],
        eager_max=mx["e"],
        rmse_bound=RMSE_MULTIPLE * rms["e"] + ULPS * eps * rms["r"],
        max_bound=MAX_MULTIPLE * mx["e"] + ULPS * eps * mx["r"],
    )


def _div(x: float, y: float) -> float:
    if x == 0:
        return 0.0
    return x / y if y > 0 else math.inf


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def noise_finding(result: Result, passed: list[NoiseVerdict], examples: int) -> None:
    """A ``numeric_noise`` finding for the inputs that passed as rounding, with both errors."""
    if not passed:
        return
    worst = max(passed, key=lambda v: v.worst.ratio if v.worst else 0.0)
    result.extra["numeric_noise"] = {"inputs": len(passed), **worst.as_dict()}
    leaf = worst.worst
    detail = (
        f"{len(passed)} of {examples} inputs differ from eager beyond the default tolerances, but by float32 rounding "
        f"only: the artifact is as close to a float64 run of the model as eager is"
        + (f" (worst: {leaf.describe()})" if leaf else "")
    )
    result.findings.append(Finding("numeric_noise", detail))


def verdict_words(verdict: NoiseVerdict | None) -> str | None:
    """The verdict in brackets on a mismatch's "Would pass with ..." line."""
    if verdict is None:
        return None
    if not verdict.judged:
        return f"not judged against float64: {verdict.note}" if verdict.note and "float64" in verdict.note else None
    leaf = verdict.worst
    if verdict.rounding:
        return (
            "within eager's own float32 rounding: the artifact is as close to a float64 run as eager is, "
            "so only the explicit rtol/atol fail it" + (f"; {leaf.describe()}" if leaf else "")
        )
    assert leaf is not None  # judged implies at least one leaf
    return (
        f"a defect, not a tolerance question: {_g(leaf.ratio)}x further from a float64 run than eager's own rounding "
        f"allows; {leaf.describe()}"
    )


# On CPU a float64 convolution has no oneDNN kernel: its slow path unfolds the whole batch into
# one huge column buffer. Each sample is computed alone, so slicing the batch gives the same
# outputs. Only torch's own convolution classes are sliced; a dispatch mode would reach
# functional convolutions too, but under torch 2.13 it doubled a convolution's memory.

#: Column buffers above this many bytes are sliced. Not lower: glibc's heap keeps smaller ones.
COLUMNS_BYTES = 64 * 2**20

_TORCH_CONVOLUTIONS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


def columns_per_sample(x: torch.Tensor, layer: _Convolution) -> int:
    """Bytes of the slow path's column buffer for one sample."""
    kernel = math.prod(layer.kernel_size)
    if layer.transposed:
        return layer.out_channels * kernel * math.prod(x.shape[2:]) * x.element_size()
    return layer.in_channels * kernel * math.prod(_output_sizes(x.shape[2:], layer)) * x.element_size()


def _output_sizes(sizes: torch.Size, layer: Any) -> list[int]:
    """A convolution's output size along each spatial dim."""
    if layer.padding == "same":
        return list(sizes)
    padding = (0,) * len(sizes) if layer.padding == "valid" else layer.padding
    return [
        max(1, (n + 2 * p - d * (k - 1) - 1) // s + 1)
        for n, p, d, k, s in zip(sizes, padding, layer.dilation, layer.kernel_size, layer.stride)
    ]


def samples_per_slice(x: object, layer: _Convolution) -> int | None:
    """How many samples of ``x`` ``layer`` should take at once, or None to take it whole."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float64 or x.device.type != "cpu":
        return None  # only CPU float64 takes the slow path
    if x.dim() != len(layer.kernel_size) + 2 or x.shape[0] < 2:
        return None  # unbatched, or one sample: nothing to slice
    per_sample = columns_per_sample(x, layer)
    if per_sample * x.shape[0] <= COLUMNS_BYTES:
        return None
    return max(1, COLUMNS_BYTES // max(per_sample, 1))


def slice_batches(module: torch.nn.Module) -> int:
    """Make ``module``'s torch convolution layers take large float64 batches in slices; how many."""
    plain = {cls.forward for cls in _TORCH_CONVOLUTIONS}
    layers = [m for m in module.modules() if isinstance(m, conv_module_types()) and type(m).forward in plain]
    for layer in layers:
        layer.forward = functools.partial(_sliced, layer, layer.forward)
    return len(layers)


def _sliced(
    layer: Any, forward: Callable[..., torch.Tensor], x: torch.Tensor, *args: object, **kwargs: object
) -> torch.Tensor:
    step = samples_per_slice(x, layer)
    if step is None:
        return forward(x, *args, **kwargs)
    return torch.cat([forward(x[i : i + step], *args, **kwargs) for i in range(0, x.shape[0], step)])
