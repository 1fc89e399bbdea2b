"""The noise oracle's float64 convolution layers run a few samples at a
time: the same outputs, a fraction of the slow path's column buffer."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from pytest_torchexport.reference import noise
from pytest_torchexport.reference.eager import Eager
from pytest_torchexport.reference.noise import Float64Reference

CASES = [
    # (layer, input shape): 1-, 2- and 3-D, strided, grouped, transposed, dilated
    (nn.Conv3d(2, 4, 5, stride=2, padding=2), (6, 2, 12, 14, 10)),
    (nn.Conv2d(4, 8, 3, padding=1, groups=2), (5, 4, 20, 18)),
    (nn.ConvTranspose3d(4, 2, 3, stride=2, groups=2), (4, 4, 6, 7, 5)),
    (nn.Conv1d(3, 6, 7, dilation=2), (9, 3, 40)),
]


class Net(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return torch.tanh(self.layer(x))


@pytest.mark.parametrize("layer,shape", CASES, ids=lambda c: type(c).__name__ if isinstance(c, nn.Module) else None)
def test_sliced_convolutions_give_the_whole_batchs_outputs_bitwise(monkeypatch, layer, shape):
    monkeypatch.setattr(noise, "COLUMNS_BYTES", 1)  # every call sliced, a sample at a time
    calls = []
    model = Net(layer).double().eval()
    model.layer.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        whole = model(x)
        assert noise.slice_batches(model) == 1
        sliced = model(x)
    assert calls == [shape[0], shape[0]]  # the hooks see the layer called once, on the whole batch
    assert torch.equal(whole, sliced)


def test_only_a_batched_cpu_float64_input_with_large_columns_is_sliced():
    layer = nn.Conv3d(2, 8, 7, padding=3)
    big = torch.zeros(16, 2, 32, 64, 48, dtype=torch.float64)
    # 2 channels x 343 x 98,304 output positions x 8 bytes = 514 MiB a sample: one at a time.
    assert noise.columns_per_sample(big, layer) == 2 * 343 * 32 * 64 * 48 * 8
    strided = nn.Conv3d(2, 8, 7, stride=2)  # output 13 x 29 x 21
    assert noise.columns_per_sample(big, strided) == 2 * 343 * 13 * 29 * 21 * 8
    assert noise.samples_per_slice(big, layer) == 1
    assert noise.samples_per_slice(torch.zeros(16, 2, 4, 4, 4, dtype=torch.float64), layer) is None  # small
    assert noise.samples_per_slice(big.float(), layer) is None  # float32 has oneDNN
    assert noise.samples_per_slice(big[:1], layer) is None  # one sample: nothing to slice
    assert noise.samples_per_slice(big[0], layer) is None  # unbatched input
    transposed = nn.ConvTranspose2d(4, 6, 3, stride=2)
    assert noise.columns_per_sample(torch.zeros(1, 4, 10, 12), transposed) == 6 * 9 * 10 * 12 * 4


def test_a_convolution_subclass_with_a_forward_of_its_own_is_left_whole():
    class Centered(nn.Conv2d):
        def forward(self, x):  # mixes the batch: slicing would change it
            return super().forward(x - x.mean())

    model = nn.Sequential(nn.Conv2d(3, 3, 3), Centered(3, 3, 3), nn.ConvTranspose2d(3, 3, 2))
    assert noise.slice_batches(model) == 2


def test_the_oracles_float64_run_is_the_double_modules_own():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU(), nn.Conv3d(4, 3, 3)).eval()
    x = torch.randn(4, 2, 20, 20, 20)
    reference = Float64Reference(Eager(module, "cpu"))
    out = reference(None, (x,), {})
    assert reference.unavailable is None and out.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(out, module.double()(x.double()))


def test_a_float64_3d_convolution_peaks_at_a_fraction_of_its_whole_batch_columns():
    """The point of it, measured in a fresh interpreter: 8 samples whose columns are 256 MiB as
    one batch grow the peak by that much; sliced, by about one 64 MiB slice (Linux: /proc)."""
    script = textwrap.dedent("""
        import sys, torch
        from pytest_torchexport.reference import noise

        def status_mb(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) / 1024

        conv = torch.nn.Conv3d(2, 8, 7).double()
        x = torch.randn(8, 2, 24, 24, 24, dtype=torch.float64)
        if sys.argv[1] == "sliced":
            noise.slice_batches(conv)
        with torch.no_grad():
            conv(x[:1])  # first use paid before measuring
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) starts again from what is resident now
            before = status_mb("VmRSS")
            conv(x)
        print(status_mb("VmHWM") - before)
    """)
    grown = {}
    for how in ("whole", "sliced"):
        run = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        grown[how] = float(run.stdout.split()[-1])
    assert grown["whole"] > 200, grown
    assert grown["sliced"] < grown["whole"] / 2, grown
