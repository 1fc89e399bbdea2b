"""[Bounded Comparison] How one output leaf differs from eager's: mismatched elements, the
greatest absolute and relative errors and where, the quantiles and the tolerances that would
pass, gathered chunk by chunk so that a huge output is never copied whole."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class LeafDiff:
    """How one output leaf differs; every number is what a person reads in the message."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    mismatched: int
    numel: int
    max_abs: float
    max_rel: float
    abs_index: tuple[int, ...]
    rel_index: tuple[int, ...]
    p50: float
    p99: float
    rtol: float
    atol: float
    needed_atol: float
    needed_rtol: float
    one_sided_nonfinite: int = 0  # NaN/inf on one side only: no tolerance covers these
    scale: float | None = None  # [Scale Budget] the leaf's greatest finite |eager|, where a budget judged it
    budget: float | None = None  # the error allowed, as a fraction of ``scale``
    #: The error allowed at the element of the greatest absolute error (atol + rtol * |eager| there):
    #: the tolerance line of the HTML report's per-input plot, read from one element.
    allowed: float = 0.0

    @property
    def of_scale(self) -> float:
        """The greatest error as a fraction of the output's scale (inf where it has none)."""
        if self.scale is None:
            return 0.0
        if self.one_sided_nonfinite:  # inf or NaN where the other side is finite: no budget is that large
            return math.inf
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else math.inf)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# [Bounded Comparison] Outputs can be hundreds of MB (a segmentation map): statistics work
# in the output's own dtype (half types in float32), CHUNK elements at a time, and the
# quantiles of the message on a fixed sample of SAMPLE elements; never a float64 copy of a
# whole output.
# [One Pass] A chunk is small enough to stay in the CPU's cache (128 KB of float32 a side),
# so the few operations on it read each element from memory once: a comparison costs about
# one read of both outputs, not one per operation. At 2**15 elements, torch's grain size,
# each operation also stays on one thread: split over threads on a loaded machine, thousands
# of small operations each waited for a busy core. A 268 MB float32 pair, 2 loaded cores
# (benchmarks/bench_compare_memory.py at 87ab5ce): 10 s a passing comparison with 4M-element chunks and
# a dozen passes over each, 0.3 s now; a failing one 6.4 s, 0.9 s now.
CHUNK = 1 << 15
SAMPLE = 1 << 20


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        return dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype == torch.complex32:
        return torch.complex64
    return torch.float64  # integers and bools: exact below 2**53, one chunk at a time


def _errors(e: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(absolute error, relative error, |eager|) of one chunk; NaN==NaN and equal infs are 0."""
    work = _work_dtype(e.dtype)
    e, a = e.to(work), a.to(work)
    abs_err = (a - e).abs()
    abs_err = torch.where((e.isnan() & a.isnan()) | (e == a), torch.zeros_like(abs_err), abs_err)
    abs_err = torch.nan_to_num(abs_err, nan=math.inf)
    mag = e.abs()
    rel_err = torch.where(abs_err == 0, torch.zeros_like(abs_err), abs_err / mag)
    rel_err = torch.nan_to_num(rel_err, nan=math.inf, posinf=math.inf)
    return abs_err, rel_err, mag


@dataclass
class _Tally:
    """One leaf's statistics, gathered chunk by chunk (the first greatest error wins a tie)."""

    mismatched: int = 0
    one_sided: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    abs_i: int = 0
    rel_i: int = 0
    needed_atol: float = 0.0
    needed_rtol: float = 0.0

    def greatest(self, start: int, abs_at: tuple[float, int], rel_at: tuple[float, int]) -> None:
        if start == 0 or abs_at[0] > self.max_abs:
            self.max_abs, self.abs_i = abs_at[0], start + abs_at[1]
        if start == 0 or rel_at[0] > self.max_rel:
            self.max_rel, self.rel_i = rel_at[0], start + rel_at[1]


_FAST_DTYPES = (torch.float32, torch.float64)


def _matching_chunk(ec: torch.Tensor, ac: torch.Tensor, rtol: float, atol: float) -> tuple | None:
    """[One Pass] The greatest errors of a chunk where every element matches, in a few
    operations on the cached chunk; None where an element is NaN, inf or a mismatch (then
    ``_exact_chunk`` says which). Every number equals ``_errors``' there:
    with the difference finite everywhere, no NaN or inf needs its special case."""
    diff = torch.sub(ac, ec).abs_()
    i = int(diff.argmax())
    max_abs = float(diff[i])
    if not math.isfinite(max_abs):
        return None
    if max_abs == 0:
        return (0.0, 0), (0.0, 0)
    # isclose allows atol + |rtol * eager| >= atol: within atol, every element matches.
    if not max_abs <= atol and not bool(torch.isclose(ac, ec, rtol=rtol, atol=atol).all()):
        return None
    rel = diff.div_(ec.abs()).nan_to_num_(nan=0.0, posinf=math.inf)  # 0/0: equal elements
    j = int(rel.argmax())
    return (max_abs, i), (float(rel[j]), j)


def _exact_chunk(tally: _Tally, start: int, chunk: tuple[torch.Tensor, torch.Tensor], rtol: float, atol: float) -> None:
    ec, ac = chunk
    close = torch.isclose(ac, ec, rtol=rtol, atol=atol, equal_nan=True)
    abs_err, rel_err, mag = _errors(ec, ac)
    i, j = int(abs_err.argmax()), int(rel_err.argmax())
    tally.greatest(start, (float(abs_err[i]), i), (float(rel_err[j]), j))
    bad = int((~close).sum())
    if not bad:
        return
    # Only a mismatch is explained: the would-pass tolerances and the one-sided NaN/infs.
    tally.mismatched += bad
    tally.one_sided += int((torch.isfinite(ec) != torch.isfinite(ac)).sum())
    need_a = (abs_err - rtol * mag).nan_to_num(nan=math.inf, posinf=math.inf).clamp(min=0).max()
    over = (abs_err - atol).clamp(min=0)
    need_r = torch.where(over == 0, torch.zeros_like(over), over / mag).nan_to_num(nan=math.inf, posinf=math.inf).max()
    tally.needed_atol = max(tally.needed_atol, float(need_a))
    tally.needed_rtol = max(tally.needed_rtol, float(need_r))


def leaf_diff(path: str, e: torch.Tensor, a: torch.Tensor, rtol: float, atol: float) -> LeafDiff:
    """One leaf's differences at the tolerances its dtype resolved to (``tolerances_for``)."""
    shape, dtype = tuple(e.shape), dtype_name(e.dtype)
    if e.numel() == 0:  # shapes already agree: nothing to differ
        return LeafDiff(path, shape, dtype, 0, 0, 0.0, 0.0, (), (), 0.0, 0.0, rtol, atol, 0.0, 0.0)
    e_flat = e.detach().cpu().reshape(-1)
    a_flat = a.detach().cpu().to(e_flat.dtype).reshape(-1)
    if e_flat.dtype == torch.bool:
        e_flat, a_flat = e_flat.to(torch.uint8), a_flat.to(torch.uint8)
    tally = _Tally()
    # Bit-equal outputs (an artifact running eager's own kernels) are one read of each.
    if not torch.equal(e_flat, a_flat):
        fast = e_flat.dtype in _FAST_DTYPES
        for start in range(0, e_flat.numel(), CHUNK):
            chunk = e_flat[start : start + CHUNK], a_flat[start : start + CHUNK]
            greatest = _matching_chunk(*chunk, rtol, atol) if fast else None
            if greatest is not None:
                tally.greatest(start, *greatest)
            else:
                _exact_chunk(tally, start, chunk, rtol, atol)
    allowed = _allowed_at(e_flat, tally.abs_i, rtol, atol)
    if not tally.mismatched:
        # The common case, once per example: only the greatest errors feed the summary;
        # quantiles (a sort) and the would-pass tolerances explain a mismatch.
        return LeafDiff(
            path,
            shape,
            dtype,
            0,
            e.numel(),
            tally.max_abs,
            tally.max_rel,
            (),
            (),
            0.0,
            0.0,
            rtol,
            atol,
            0.0,
            0.0,
            allowed=allowed,
        )
    p50, p99 = _abs_quantiles(e_flat, a_flat)
    return LeafDiff(
        path=path,
        shape=shape,
        dtype=dtype,
        mismatched=tally.mismatched,
        numel=e.numel(),
        max_abs=tally.max_abs,
        max_rel=tally.max_rel,
        abs_index=_unravel(tally.abs_i, e.shape),
        rel_index=_unravel(tally.rel_i, e.shape),
        p50=p50,
        p99=p99,
        rtol=rtol,
        atol=atol,
        needed_atol=tally.needed_atol,
        needed_rtol=tally.needed_rtol,
        one_sided_nonfinite=tally.one_sided,
        allowed=allowed,
    )


def _allowed_at(e_flat: torch.Tensor, index: int, rtol: float, atol: float) -> float:
    """The error ``isclose`` allows at one element: atol + rtol * |eager| (atol where it is not finite)."""
    magnitude = abs(float(e_flat[index])) if e_flat.numel() else 0.0
    return atol + rtol * magnitude if math.isfinite(magnitude) else atol


def _abs_quantiles(e_flat: torch.Tensor, a_flat: torch.Tensor) -> tuple[float, float]:
    """p50 and p99 of the finite absolute errors: exact up to SAMPLE elements, else on a fixed sample."""
    if e_flat.numel() > SAMPLE:
        index = torch.randint(e_flat.numel(), (SAMPLE,), generator=torch.Generator().manual_seed(0))
        e_flat, a_flat = e_flat[index], a_flat[index]
    abs_err = _errors(e_flat, a_flat)[0]
    finite = abs_err[torch.isfinite(abs_err)]
    if not finite.numel():
        return math.inf, math.inf
    q = torch.quantile(finite, torch.tensor([0.5, 0.99], dtype=finite.dtype))
    return float(q[0]), float(q[1])


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def scale_of(e: torch.Tensor) -> float:
    """The greatest finite |value| of a leaf, chunk by chunk ([Bounded Comparison])."""
    flat, scale = e.detach().reshape(-1), 0.0
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start : start + CHUNK].abs()
        chunk = chunk[torch.isfinite(chunk)]
        if chunk.numel():
            scale = max(scale, float(chunk.max()))
    return scale
