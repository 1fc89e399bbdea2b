"""State across calls: a module with state is checked over the test's own sequence of calls."""

from helpers import by_test_and_backend, run_with_report

MODELS = """
import pytest
import torch
from torch import nn


class Accumulator(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x):
        self.total.add_(x.sum(0))        # updated in place
        out = x + self.total             # read for the output
        self.total = self.total * 0.5    # then reassigned
        return out


class StreamingConv(nn.Module):
    # A causal convolution for streaming: the last k-1 samples of the previous chunk are
    # kept in a buffer and prepended to the next chunk.
    def __init__(self, k=3):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, k)
        self.register_buffer("cache", torch.zeros(1, 2, k - 1))

    def forward(self, chunk):
        x = torch.cat([self.cache, chunk], dim=-1)
        self.cache = x[..., -(self.conv.kernel_size[0] - 1):]
        return self.conv(x)


class Stateless(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)

BACKENDS = ["trace", "script", "onnx", "export", "onnx-legacy"]


@pytest.mark.torchexport(backends=BACKENDS, examples=3)
def test_accumulator_three_calls():
    model = Accumulator().eval()
    for _ in range(3):
        model(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["trace", "export"], examples=3)
def test_streaming_chunks():
    model = StreamingConv().eval()
    signal = torch.randn(1, 2, 32)
    for chunk in signal.split(8, dim=-1):
        model(chunk)


@pytest.mark.torchexport(backends=["trace", "export"], examples=3)
def test_stateless_loop():
    model = Stateless().eval()
    for _ in range(5):
        model(torch.randn(2, 4))
"""


def test_state_is_checked_over_the_test_s_sequence_of_calls(tester):
    tester.makepyfile(test_s=MODELS)
    result, rows = run_with_report(tester, "-p", "no:randomly", key=by_test_and_backend)
    acc = {b: rows[("test_accumulator_three_calls", b)] for b in ("trace", "script", "onnx", "export", "onnx-legacy")}
    # The artifacts that drop or freeze the update are caught; the ones that carry it pass.
    for backend in ("trace", "onnx", "onnx-legacy"):
        assert acc[backend]["status"] == "mismatch", (backend, acc[backend]["message"])
    for backend in ("trace", "onnx"):
        assert "of the 3 calls the test made" in acc[backend]["message"], acc[backend]["message"]
    assert "total" in acc["trace"]["message"]
    for backend in ("script", "export"):
        assert acc[backend]["status"] == "pass", (backend, acc[backend]["message"])
    # The streaming convolution: trace freezes the reassigned cache, export carries it.
    stream = {b: rows[("test_streaming_chunks", b)] for b in ("trace", "export")}
    assert stream["trace"]["status"] == "mismatch" and "cache" in stream["trace"]["message"], stream["trace"]["message"]
    assert "of the 4 calls the test made" in stream["trace"]["message"]
    assert stream["export"]["status"] == "pass", stream["export"]["message"]
    # A stateless module called in a loop keeps the one-call check.
    for backend in ("trace", "export"):
        row = rows[("test_stateless_loop", backend)]
        assert row["status"] == "pass" and row["recorded_calls"] == 5
        assert not any(f["kind"] == "mutates_state" for f in row["findings"])
    result.assert_outcomes(passed=5, failed=4)
