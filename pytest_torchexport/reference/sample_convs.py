"""[Float64 Convolutions] The noise oracle's float64 convolution layers, a few batch samples at a time.

On CPU a float64 convolution has no oneDNN kernel: it takes the slow path, which unfolds the
whole batch into one column buffer (``slow_conv3d``, ``slow_conv2d``: input channels x the
kernel's volume x every output position, for every sample at once) before one matrix
product. A 7x7x7 stem over a 16 x 2 x 32 x 64 x 48 input is 1.1 GB of columns, where float32's
kernel needs none: MONAI's DenseNet169 3-D drawn at batch 16 peaked at 2.5 GB in the check's
child for the oracle alone (eager's float32 forward at that batch: 0.3 GB over its module).

A convolution layer computes each batch sample from that sample alone, so running it on
slices of the batch and concatenating gives the same outputs (bitwise: the slow path loops
over the samples anyway). ``slice_batches(module)`` makes each of torch's own convolution
layers in the oracle's double copy (its class's ``forward`` one of torch's: a subclass with a
forward of its own may do anything) run so whenever, on a CPU float64 batch, its columns would
pass ``COLUMNS_BYTES``; the rest of the module is untouched, so what the oracle computes is
unchanged. (A dispatch mode would reach functional convolutions too, but under one torch
2.13's convolution took twice the memory it takes plain.) ``benchmarks/bench_memory.py --oracle``:
a DenseNet-style 3-D stem and dense block at batch 16 grows the process by 55 MB in float32,
1,125 MB in float64 as one batch, 288 MB sliced, in the same time and to the same outputs; in
the check's child on MONAI's DenseNet169 3-D the ONNX check's peak went from 2.5 GB to 1.6 GB.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from .._compat import conv_module_types

#: A float64 convolution whose column buffer would pass this many bytes runs on slices of the
#: batch, each within it (one sample at least). Not much lower: glibc serves a buffer under 32
#: MiB from its heap, which a loop of them fragments and keeps (a slice a sample at a time of 32
#: MiB columns held 214 MB after the call, slices of 64 MiB none).
COLUMNS_BYTES = 64 * 2**20

_TORCH_CONVOLUTIONS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


def columns_per_sample(x: torch.Tensor, layer: Any) -> int:
    """Bytes of the slow path's column buffer for one sample: the channels the kernel unfolds
    times its volume times the positions it is unfolded at (the output's for a convolution,
    the input's for a transposed one, which folds its columns back into the output)."""
    kernel = math.prod(layer.kernel_size)
    if layer.transposed:
        return layer.out_channels * kernel * math.prod(x.shape[2:]) * x.element_size()
    return layer.in_channels * kernel * math.prod(_output_sizes(x.shape[2:], layer)) * x.element_size()


def _output_sizes(sizes: Any, layer: Any) -> list[int]:
    """A convolution's output size along each spatial dim (``padding="same"`` keeps the input's)."""
    if layer.padding == "same":
        return list(sizes)
    padding = (0,) * len(sizes) if layer.padding == "valid" else layer.padding
    return [
        max(1, (n + 2 * p - d * (k - 1) - 1) // s + 1)
        for n, p, d, k, s in zip(sizes, padding, layer.dilation, layer.kernel_size, layer.stride)
    ]


def samples_per_slice(x: Any, layer: Any) -> int | None:
    """How many samples of ``x`` ``layer`` should take at once, or None to take it whole."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float64 or x.device.type != "cpu":
        return None  # only CPU float64 takes the slow path
    if x.dim() != len(layer.kernel_size) + 2 or x.shape[0] < 2:
        return None  # an unbatched input, or one sample: nothing to slice
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


def _sliced(layer: Any, forward: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    step = samples_per_slice(x, layer)
    if step is None:
        return forward(x, *args, **kwargs)
    return torch.cat([forward(x[i : i + step], *args, **kwargs) for i in range(0, x.shape[0], step)])
