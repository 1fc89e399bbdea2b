"""The float64 noise oracle: rounding passes as ``numeric_noise``, a defect stays a defect."""

import functools

import pytest
import torch
from helpers import checked, run_with_report
from models import Norm
from torch import nn

# An EfficientNet-style segmentation net (BatchNorm, SiLU, squeeze-excitation, per-pixel
# logits) with calibrated BatchNorm statistics. Fed images at +-4000, eager's own float32
# output is ~5e-4 away from a float64 run, so near-zero logits fail the plain comparison
# with onnxruntime's equally exact output.
SEGNET = """
import pytest
import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(s))))


class MBBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        e = 4 * c
        self.body = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.SiLU(),
            nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.SiLU(),
            SqueezeExcite(e), nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


class SegNet(nn.Module):
    def __init__(self, c=16, blocks=3, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.blocks = nn.Sequential(*[MBBlock(c) for _ in range(blocks)])
        self.classify = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        y = self.classify(self.blocks(self.stem(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def calibrated(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()
"""


def test_clean_cnn_at_ill_conditioned_inputs_passes_with_numeric_noise(tester):
    tester.makepyfile(
        test_seg=SEGNET
        + """
# The suite's 8 examples may all stay within the plain tolerance; 25 (the default) do not.
@pytest.mark.torchexport(backends=["onnx"], seed=0, examples=25)
def test_segment():
    torch.manual_seed(0)  # the weights too: unseeded, a few draws of them never leave rounding
    model = calibrated(SegNet())
    model(torch.randn(2, 3, 48, 48) * 4000)
"""
    )
    result, (row,) = run_with_report(tester, "-v", key=None)
    result.assert_outcomes(passed=1)
    assert row["status"] == "pass"
    finding = next(f for f in row["findings"] if f["kind"] == "numeric_noise")
    assert "by float32 rounding only" in finding["detail"]
    assert "eager float32:" in finding["detail"]
    noise = row["numeric_noise"]
    assert noise["inputs"] >= 1
    # Both errors are reported, and the artifact is about as far from float64 as eager is.
    assert 0 < noise["artifact_rmse"] <= 5 * noise["eager_rmse"]
    assert noise["of_allowed"] <= 1
    assert "numeric_noise" in row["message"]


def test_a_small_real_defect_is_still_a_defect(tester):
    # A frozen branch whose wrong path is off by only 0.1%: by size alone "a tolerance
    # question", against the float64 run a defect.
    tester.makepyfile(
        test_leaky="""
import pytest
import torch
from torch import nn


class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        if x.sum() > 0:
            return y
        return y * 1.001


@pytest.mark.torchexport(backends=["trace"])
def test_leaky():
    Leaky().eval()(torch.ones(2, 8))
"""
    )
    result = tester.runpytest("-rA", "-W", "ignore::torch.jit.TracerWarning")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "a defect, not a tolerance question" in text
    assert "further from a float64 run than eager's own rounding allows" in text


_results = functools.partial(checked, examples=6, seed=0)


def test_explicit_tolerances_stay_strict_but_say_it_is_rounding():
    torch.manual_seed(0)
    r = _results(Norm().eval(), (torch.randn(4, 256) + 3e4,), ["onnx"], atol=1e-4, rtol=1e-4)["onnx"]
    assert r.status == "mismatch"
    assert "within eager's own float32 rounding" in r.message
    assert "a defect, not a tolerance question" not in r.message
    assert r.extra["float64_check"]["of_allowed"] <= 1


class NoDouble(nn.Module):
    """A float32-only kernel (as a custom op or a quantized model has): no float64 twin."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.dtype == torch.float64:
            raise RuntimeError("no float64 kernel")
        y = self.fc(x)
        if x.sum() > 0:
            return y
        return y * 1.001


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_module_without_float64_keeps_the_plain_comparison_with_a_note():
    r = _results(NoDouble().eval(), (torch.ones(2, 4),), ["trace"])["trace"]
    assert r.status == "mismatch"
    assert "not judged against float64: the module cannot run in float64 (RuntimeError: no float64 kernel)" in r.message
    assert "a defect, not a tolerance question" not in r.message
