"""With no dims=, the undeclared dims of the recorded inputs are tried at a few
nearby sizes after a pass: an artifact that fails there gets a ``static_size`` finding (not a
failure), and the dims= line it gives makes the size a checked requirement. The row also says
which sizes the search covered (the report's ``sizes``, docs/report.md)."""

from types import SimpleNamespace

import pytest
from helpers import by_test_and_backend, report_rows

from pytest_torchexport.options import Options
from pytest_torchexport.stages.static_sizes import declared, nearby

# An artifact refusing a size: TorchScript's "The following operation failed" is read for its reason.
pytestmark = pytest.mark.torch_compat

UNET = '''
import pytest
import torch
import torch.nn.functional as F
from torch import nn


class UNet1d(nn.Module):
    """Down by 2, up by 2, resized back to the input's length, read as a Python int: a trace bakes it."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv1d(2, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose1d(4, 2, 2, stride=2)

    def forward(self, x):
        y = self.up(torch.relu(self.down(x)))
        return x + F.interpolate(y, size=int(x.shape[-1]))


class Head(nn.Module):
    """A Linear over the flattened length: eager itself takes one length only."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2 * 33, 3)

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.mark.torchexport(backends=["trace", "script", "export"])
def test_unet():
    UNet1d().eval()(torch.randn(2, 2, 33))


@pytest.mark.torchexport(backends=["trace"])
def test_head():
    Head().eval()(torch.randn(2, 2, 33))


@pytest.mark.torchexport(backends=["trace", "script"], dynamic={"x": {0: "batch", 2: "x_2"}}, dims={"x_2": (32, 66)})
def test_unet_declared():
    UNet1d().eval()(torch.randn(2, 2, 33))
'''


def test_nearby_sizes():
    assert nearby(33) == [32, 34, 66]
    assert nearby(1) == [2]  # no size 0: a dim of one is tried at two
    assert nearby(2) == [1, 3, 4]


def test_only_undeclared_dims_are_probed():
    # dims= naming the batch only still leaves the other dims undeclared; any other declaration
    # says which dims vary, so the rest are meant static.
    def probed(**options):
        return not declared(SimpleNamespace(options=Options.build(**options)))

    assert probed() and probed(dims={"batch": (1, 4)})
    assert not probed(dims={"seq": (2, 64)})
    assert not probed(dynamic={"x": {0: "batch"}})


def test_a_baked_length_is_a_finding_and_declared_a_checked_failure(tester):
    tester.makepyfile(test_unet=UNET)
    result = tester.runpytest("-rA", "--torchexport-report=out.json", "--torchexport-seed=0")
    rows = report_rows(tester, key=by_test_and_backend)
    statuses = {key: r["status"] for key, r in rows.items()}

    # Undeclared: the trace passes at the recorded length and says it holds there only.
    trace = rows["test_unet", "trace"]
    assert trace["status"] == "pass", trace["message"]
    found = [f for f in trace["findings"] if f["kind"] == "static_size"]
    assert len(found) == 1, trace["findings"]
    detail = found[0]["detail"]
    assert found[0]["where"] == "x dim 2"
    assert detail.startswith("x dim 2 (recorded at 33) is not declared dynamic; tried at 32, 34, 66, where eager runs")
    assert (
        "the trace artifact fails: at 32 it raises RuntimeError (The size of tensor a (32) must match the size of tensor b (33)"
        in detail
    )
    assert 'dynamic={"x": {0: "batch", 2: "x_2"}}, dims={"x_2": (32, 66)}' in detail
    assert trace["timings"]["static_size_s"] > 0
    # The row says which sizes its verdict rests on: the batch varied, the length did not.
    assert trace["sizes"]["batch"][0] == 1 and trace["sizes"]["batch"][1] >= 2 and set(trace["sizes"]) == {"batch"}
    # Scripted, the size is read at run time: no finding.
    assert statuses["test_unet", "script"] == "pass"
    assert not [f for f in rows["test_unet", "script"]["findings"] if f["kind"] == "static_size"]
    # Eager itself takes one length: nothing to say.
    assert statuses["test_head", "trace"] == "pass"
    assert not [f for f in rows["test_head", "trace"]["findings"] if f["kind"] == "static_size"]
    # torch.export guards the recorded length: a finding too, which the summary's cause cell names
    # (the trace's cell names its baked_shape, which explains more).
    export = rows["test_unet", "export"]
    assert export["status"] == "pass"
    assert "at 32, 34, 66 it raises" in next(f["detail"] for f in export["findings"] if f["kind"] == "static_size")
    result.stdout.re_match_lines([r"test_unet\s+UNet1d\s+export\s+pass\b.*", r"\s+static_size$"], consecutive=True)

    # Declared with the line the finding gives: the length is searched, and the trace fails it.
    declared = rows["test_unet_declared", "trace"]
    assert declared["status"] in ("run_error", "mismatch"), declared["message"]
    assert declared["sizes"]["x_2"][0] < 33 or declared["sizes"]["x_2"][1] > 33
    assert statuses["test_unet_declared", "script"] == "pass"
    assert not [
        f for r in rows.values() if r["test"].endswith("declared") for f in r["findings"] if f["kind"] == "static_size"
    ]
    result.assert_outcomes(passed=5, failed=1)


COUNTED = """
import os
import sys

import pytest
import torch
from torch import nn


def _count(module, args):
    # Every call, eager's refusals included (a pre-hook runs before the forward can raise): which
    # process made it, and whether the static-size stage did (its frame on the stack).
    frame, stage = sys._getframe(1), "other"
    while frame is not None:
        if frame.f_code.co_filename.replace(os.sep, "/").endswith("pytest_torchexport/stages/static_sizes.py"):
            stage = "static_size"
            break
        frame = frame.f_back
    fd = os.open(os.environ["FORWARDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {stage}\\n".encode())
    os.close(fd)


@pytest.mark.torchexport(backends=["trace", "export"])
def test_conv():
    with open(os.environ["FORWARDS"] + ".pid", "w") as f:
        f.write(str(os.getpid()))
    model = nn.Conv1d(3, 4, 3, padding=1).eval()
    model.register_forward_pre_hook(_count)
    model(torch.randn(2, 3, 16))
"""


def test_eager_runs_the_static_sizes_once_for_every_backend(tester, monkeypatch):
    # The channels (3: eager refuses 2, 4, 6) and the length (16: 15, 17, 32)
    # are eager's six calls, made once in the test's process; each backend's child runs only its
    # artifact there, however many backends check the call.
    forwards = tester.path / "forwards.txt"
    monkeypatch.setenv("FORWARDS", str(forwards))
    tester.makepyfile(test_counted=COUNTED)
    result = tester.runpytest("--torchexport-report=out.json", "--torchexport-seed=0")
    result.assert_outcomes(passed=2)
    rows = report_rows(tester, key=None)
    assert all(r["timings"]["static_size_s"] > 0 for r in rows), [r["timings"] for r in rows]
    parent = (tester.path / "forwards.txt.pid").read_text()
    calls = [line.split() for line in forwards.read_text().splitlines()]
    probes = [pid for pid, stage in calls if stage == "static_size"]
    assert probes.count(parent) == 6, calls
    assert len(probes) == 6, f"{len(probes) - probes.count(parent)} static-size forwards in the children"
