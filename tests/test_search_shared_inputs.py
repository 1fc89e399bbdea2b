"""[One Search] One set of inputs per recorded call for every backend; declared bounds on every run.

Real test files through pytest, as users run them: the model counts its own forward calls
(a forward hook appending to a file, so forked children count too), a bounded runtime is a
third-party backend whose run refuses sizes past its plan, and a defect at one backend only
is a backend that adds a bias where the batch is odd.
"""

from __future__ import annotations

import pytest
from helpers import run_with_report
from models import Norm, source

COUNTING = """
import os

import pytest
import torch


def _count(module, args, output):
    fd = os.open(os.environ["FORWARD_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"x")
    os.close(fd)


@pytest.mark.torchexport(dims={{"batch": (1, 16)}}, backends={backends!r}, examples=10)
def test_net():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    model.register_forward_hook(_count)
    model(torch.randn(3, 8))
"""


def _forwards(tester: pytest.Pytester, backends: list[str], counter, source: str = COUNTING) -> int:
    counter.write_bytes(b"")
    tester.makepyfile(test_count=source.format(backends=backends))
    result = tester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=len(backends))
    return len(counter.read_bytes())


def test_more_backends_add_only_their_exports_forwards_not_another_search(tester, tmp_path, monkeypatch):
    # Eager runs each shared input once: two more backends add their exports' tracing calls
    # and no eager search of their own (before: 2.6x the forwards of one backend).
    counter = tmp_path / "forwards"
    monkeypatch.setenv("FORWARD_COUNT_FILE", str(counter))
    monkeypatch.setenv("CI", "1")
    one = _forwards(tester, ["onnx"], counter)
    three = _forwards(tester, ["trace", "onnx", "export"], counter)
    assert one >= 10, one  # the search did run eager on its inputs
    assert three <= 1.3 * one, (one, three)


BOUNDED_CONFTEST = """
from pytest_torchexport.backends.trace import TraceBackend


class Planned(TraceBackend):
    '''A runtime whose memory plan holds batch 12 at most, as an ExecuTorch program planned
    below the declared max: it refuses a larger input as that runtime does.'''

    name = "planned"

    def unavailable_reason(self):
        return None

    def run(self, artifact, args, kwargs):
        if args[0].shape[0] > 12:
            raise RuntimeError(f"Attempted to resize a bounded tensor to batch {args[0].shape[0]} (planned for 12)")
        return super().run(artifact, args, kwargs)


def pytest_torchexport_backends(config):
    return {"planned": Planned}
"""

BOUNDED_TEST = """
import pytest
import torch


@pytest.mark.torchexport(backends=["planned", "trace"], dims={"batch": (1, 16)}, examples=1)
def test_model():
    torch.nn.Linear(6, 3).eval()(torch.randn(4, 6))
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_runtime_bound_below_the_declared_max_is_found_on_every_run(tester, seed):
    # One drawn example: hypothesis alone would reach batch 16 by luck; the declared max is
    # an explicit input, so the planned runtime's bound fails every run, at that size.
    tester.makeconftest(BOUNDED_CONFTEST)
    tester.makepyfile(test_bounded=BOUNDED_TEST)
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", f"--torchexport-seed={seed}")
    result.assert_outcomes(passed=1, failed=1)
    planned = rows["planned"]
    assert planned["status"] == "run_error", planned["message"]
    assert planned["failing_example"]["inputs"]["input"]["shape"][0] > 12
    assert "bounded tensor" in planned["message"]
    assert rows["trace"]["status"] == "pass"
    assert rows["trace"]["sizes"]["batch"] == [1, 16]  # min and max tried on the backend that passes too


ODD_CONFTEST = """
import torch

from pytest_torchexport.backends.trace import TraceBackend


class OddBatch(TraceBackend):
    '''A defect at this backend only: its artifact adds 1 where the batch is odd and over 2.'''

    name = "oddbatch"

    def unavailable_reason(self):
        return None

    def run(self, artifact, args, kwargs):
        out = super().run(artifact, args, kwargs)
        n = args[0].shape[0]
        return out + 1.0 if n % 2 and n > 2 else out


def pytest_torchexport_backends(config):
    return {"oddbatch": OddBatch}
"""

ODD_TEST = """
import pytest
import torch


@pytest.mark.torchexport(backends=["trace", "oddbatch", "export"], dims={"batch": (2, 40)}, examples=15)
def test_model():
    torch.nn.Linear(5, 2).eval()(torch.randn(6, 5))
"""


def test_a_defect_at_one_backend_is_found_and_shrunk_there_and_the_others_pass(tester, monkeypatch):
    monkeypatch.setenv("CI", "1")
    tester.makeconftest(ODD_CONFTEST)
    tester.makepyfile(test_odd=ODD_TEST)
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=2, failed=1)
    odd = rows["oddbatch"]
    assert odd["status"] == "mismatch", odd["message"]
    # Shrunk on its own: the smallest odd batch over 2 the range allows.
    assert odd["failing_example"]["inputs"]["input"]["shape"][0] == 3, odd["failing_example"]
    assert rows["trace"]["status"] == rows["export"]["status"] == "pass"
    assert rows["trace"]["examples"] == rows["export"]["examples"]  # the same shared inputs


FLOAT64_COUNTING = (
    "\nimport os\n"
    + source(Norm)
    + """


def _count(module, args, output):
    if args[0].dtype == torch.float64:  # the oracle's double copy (reference/noise.py)
        fd = os.open(os.environ["FORWARD_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"x")
        os.close(fd)


@pytest.mark.torchexport(backends={backends!r}, examples=10, seed=0)
def test_norm():
    torch.manual_seed(0)
    model = Norm().eval()
    model.register_forward_hook(_count)
    model(torch.randn(4, 256) + 3e4)
"""
)


def test_the_float64_oracle_runs_once_per_input_however_many_backends_need_it(tester, tmp_path, monkeypatch):
    # Both ONNX exporters differ from eager by rounding on most inputs: each such input
    # needs a float64 run, made once for the test, not once per backend (before: 15 with onnx, 30 with three).
    counter = tmp_path / "forwards"
    monkeypatch.setenv("FORWARD_COUNT_FILE", str(counter))
    monkeypatch.setenv("CI", "1")
    counts, rows = {}, {}
    for backends in (["onnx"], ["onnx", "onnx-legacy", "trace"]):
        counter.write_bytes(b"")
        tester.makepyfile(test_f64=FLOAT64_COUNTING.format(backends=backends))
        result, rows[len(backends)] = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
        result.assert_outcomes(passed=len(backends))
        counts[len(backends)] = len(counter.read_bytes())
    assert rows[3]["onnx-legacy"]["numeric_noise"]["inputs"] >= 5  # the second exporter needed the oracle too
    assert rows[3]["onnx"]["numeric_noise"] == rows[1]["onnx"]["numeric_noise"]  # the same verdicts, the same numbers
    assert counts[1] >= 5, counts
    assert counts[3] == counts[1], counts


SCALAR_COUNTING = """
import os

import pytest
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x, scale: float = 1.0):
        return self.fc(x) * scale


def _count(module, args, output):
    if args[1] != 2.0:  # eager at the scalar's other value (side_effects.baked_arguments)
        fd = os.open(os.environ["FORWARD_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"x")
        os.close(fd)


@pytest.mark.torchexport(backends=["trace", "onnx", "export"], examples=4)
def test_scaled():
    model = Scaled().eval()
    model.register_forward_hook(_count)
    model(torch.randn(3, 8), 2.0)
"""


def test_eager_at_a_scalars_other_value_runs_once_for_every_backend(tester, tmp_path, monkeypatch):
    # Each backend asks whether its artifact baked the scalar in; eager's answer
    # at the other value is the same for all of them, computed once (before: once per backend).
    counter = tmp_path / "forwards"
    counter.write_bytes(b"")
    monkeypatch.setenv("FORWARD_COUNT_FILE", str(counter))
    tester.makepyfile(test_scalar=SCALAR_COUNTING)
    result, rows = run_with_report(tester, "-q", "-p", "no:cacheprovider", "--torchexport-cache=off")
    result.assert_outcomes(passed=3)
    for backend in ("trace", "onnx", "export"):
        assert any(f["kind"] == "baked_argument" for f in rows[backend]["findings"]), rows[backend]["findings"]
    assert len(counter.read_bytes()) == 1


SMALL_HOLD = """
import pytest_torchexport.stages.shared_search as shared_search


def pytest_configure(config):
    shared_search.HOLD_BYTES = {hold}
"""


def test_an_output_not_held_is_run_by_eager_once_not_here_and_again_in_the_child(tester, tmp_path, monkeypatch):
    # Outputs beyond what the test's process holds for the children (HOLD_BYTES,
    # 1 GB; here 4 KB so that a tiny model crosses it) are made by eager in the child that compares
    # them. An input whose outputs would not fit (estimated from the recorded call's output bytes per
    # input byte) is not run here too: each such input was two forwards (a 268 MB output's trace check
    # paid ~15 extra forwards; with the estimate made only after the first that did not fit, one).
    counter = tmp_path / "forwards"
    monkeypatch.setenv("FORWARD_COUNT_FILE", str(counter))
    monkeypatch.setenv("CI", "1")
    wide = COUNTING.replace("Linear(8, 4)", "Linear(8, 256)")  # 1 KB of output a row: 3 KB recorded, 16 KB at most
    tester.makeconftest(SMALL_HOLD.format(hold=1 << 40))
    held = _forwards(tester, ["trace"], counter, wide)
    tester.makeconftest(SMALL_HOLD.format(hold=4096))
    unheld = _forwards(tester, ["trace"], counter, wide)
    assert held >= 10, held  # the search did run eager on its inputs
    # every input's forward is made once, here or in the child (the estimate is exact for a Linear)
    assert unheld <= held, (held, unheld)
