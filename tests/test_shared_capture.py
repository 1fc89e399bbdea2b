"""[Shared Capture] One torch.export capture per recorded call, whatever the number of backends
that start from it, counted across every process of a session.

The pytester session's conftest wraps ``torch.export.export``: each call appends the captured
module's class and whether it was strict to the file ``CAPTURES_LOG`` names, from the test's
process and from every check's forked child alike.
"""

from __future__ import annotations

import inspect
import os
import textwrap

import pytest
from helpers import report_rows
from models import GRUClassifier

CONFTEST = textwrap.dedent(
    """
    import os

    import torch

    _real = torch.export.export


    def _counting(module, *args, **kwargs):
        with open(os.environ["CAPTURES_LOG"], "a") as log:
            log.write(f"{type(module).__name__} strict={kwargs.get('strict', 'unset')}\\n")
        _misbehave(module)
        return _real(module, *args, **kwargs)


    def _misbehave(module):
        pass  # a test that makes a capture fail defines it again below this conftest


    def pytest_configure(config):
        torch.export.export = _counting


    def pytest_unconfigure(config):
        torch.export.export = _real
    """
)

MODELS = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Clean(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, x):
            return self.net(x)


    class Pooled(nn.Module):
        # Adaptive pooling over dynamic h and w: ONNX's lowering fixes its kernel at the export's
        # size, torch.export's program does not. Only the onnx backend can show it.
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d((2, 2))

        def forward(self, x):
            return self.pool(self.conv(x)).flatten(1)


    class Branchy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent: torch.export refuses it, non-strict and strict alike
                return x * 2
            return x - 1


    @pytest.mark.torchexport(backends="export,onnx,{third}")
    def test_clean():
        Clean().eval()(torch.randn(3, 8))


    @pytest.mark.torchexport(backends="export,onnx", dynamic={{"x": {{0: "batch", 2: "h", 3: "w"}}}},
                             dims={{"h": (1, 16), "w": (1, 16)}})
    def test_pooled():
        Pooled().eval()(torch.randn(2, 3, 8, 8))


    @pytest.mark.torchexport(backends="export,onnx,{third}")
    def test_branchy():
        Branchy().eval()(torch.ones(3, 4))
    """
)


def _session(tester, monkeypatch, third: str, *args: str, subprocess: bool = False) -> tuple[dict, list[str]]:
    from pytest_torchexport.isolation.runner import THIS
    from pytest_torchexport.options import BUILTIN_BACKENDS

    if not subprocess:
        # Outside the inline run: what the test's process imports for this backend (its warm-up, its
        # availability) would be dropped after the run and re-imported by the next (tests/conftest.py).
        THIS.warmup.warm_up(third, BUILTIN_BACKENDS[third], now=True)
    log = tester.path / "captures.log"
    if log.exists():
        log.unlink()
    monkeypatch.setenv("CAPTURES_LOG", str(log))
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_m=MODELS.format(third=third))
    (tester.runpytest_subprocess if subprocess else tester.runpytest)(*args, "--torchexport-report=out.json")
    rows = report_rows(tester, key=lambda r: (r["test"].split("::")[-1], r["backend"]))
    return rows, log.read_text().splitlines() if log.exists() else []


def test_one_capture_per_recorded_call_and_each_lowering_still_judged_alone(tester, monkeypatch):
    # In its own process: executorch imports torchao, whose ops an inline run would leave registered
    # but dropped from sys.modules ("Only a single TORCH_LIBRARY ... quantized_decomposed" in a later test).
    rows, captures = _session(tester, monkeypatch, "executorch", subprocess=True)

    # The clean model: one capture in the whole session, where three backends used to make three.
    assert captures.count("Clean strict=False") == 1, captures
    for backend in ("export", "onnx", "executorch"):
        row = rows[("test_clean", backend)]
        assert row["status"] == "pass", row["message"]
        assert row["capture"] == "shared"
        assert row["timings"]["capture_s"] > 0 and "export_s" in row["timings"]

    # A defect only ONNX's lowering has is still found on onnx alone, and shrunk there.
    assert captures.count("Pooled strict=False") == 1, captures
    onnx, export = rows[("test_pooled", "onnx")], rows[("test_pooled", "export")]
    assert onnx["status"] in ("mismatch", "run_error"), onnx["message"]
    assert onnx["capture"] == "shared" and onnx["failing_example"]["inputs"]["x"]["shape"][2:] != [8, 8]
    assert export["status"] == "pass" and export["failing_example"] is None, export["message"]

    # A capture that fails is made once too: its error is every sharing backend's, whose row
    # names the true cause and line, and only torch.onnx's strict fallback (other options) captures again.
    _failed_capture_shared(rows, captures, ("export", "onnx", "executorch"))


def _failed_capture_shared(rows: dict, captures: list[str], backends: tuple[str, ...]) -> None:
    assert captures.count("Branchy strict=False") == 1, captures
    assert captures.count("Branchy strict=True") == 1, captures  # onnx's strict fallback
    for backend in backends:
        row = rows[("test_branchy", backend)]
        assert row["status"] == "export_error" and row["capture"] == "shared", row
        assert "branches on a tensor's value" in row["message"], row["message"]
        assert "`if x.sum() > 0:" in row["message"], row["message"]
        assert "GuardOnDataDependentSymNode" in row["message"] or "data-dependent" in row["message"], row["message"]
        assert row["timings"]["capture_s"] > 0


def test_inline_checks_capture_on_their_own(tester, monkeypatch):
    # The contrast that makes the count above mean something: inline, no prelude is shared, so each
    # backend captures the call itself, and its row says so.
    rows, captures = _session(tester, monkeypatch, "export", "-k", "pooled", "--torchexport-isolation=inline")
    assert captures.count("Pooled strict=False") == 2, captures
    assert {rows[("test_pooled", b)]["capture"] for b in ("export", "onnx")} == {"own"}
    assert rows[("test_pooled", "onnx")]["status"] in ("mismatch", "run_error")


@pytest.mark.slow
def test_aoti_starts_from_the_shared_capture_too(tester, monkeypatch):
    # In its own process: Inductor imported by an inline run and dropped after it breaks the next
    # ("duplicate name: eager"), whatever that run checks.
    rows, captures = _session(tester, monkeypatch, "aoti", "-k", "clean or branchy", subprocess=True)
    assert captures.count("Clean strict=False") == 1, captures
    _failed_capture_shared(rows, captures, ("export", "onnx", "aoti"))
    assert {rows[("test_clean", b)]["capture"] for b in ("export", "onnx", "aoti")} == {"shared"}
    assert {rows[("test_clean", b)]["status"] for b in ("export", "onnx", "aoti")} == {"pass"}


GRU_MODELS = (
    "import pytest\nimport torch\n\n\n"
    + inspect.getsource(GRUClassifier)
    + textwrap.dedent(
        """

        @pytest.mark.torchexport(backends=["export", "onnx", "aoti"], examples=6, dims={"batch": (1, 8), "seq": (2, 32)},
                                 dynamic={0: {0: "batch", 1: "seq"}})
        def test_gru():
            torch.manual_seed(0)
            GRUClassifier().eval()(torch.randint(0, 50, (2, 16)))
        """
    )
)


@pytest.mark.slow
def test_a_recurrent_module_shares_its_capture_but_with_onnx(tester, monkeypatch):
    # torch.onnx captures an LSTM or a GRU with its own while-loop decompositions: its onnx check
    # captures on its own, while export and aoti share the plain capture (before, a recurrent module
    # shared nothing: 5 non-strict captures here, 3 now). The plain capture refuses seq's declared
    # range and is made again with seq left to torch, both once, in the capture child: the onnx
    # verdict is the one it has alone (test_isolation_crashes.py).
    log = tester.path / "captures.log"
    monkeypatch.setenv("CAPTURES_LOG", str(log))
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_gru=GRU_MODELS)
    tester.runpytest_subprocess("--torchexport-report=out.json")
    rows = report_rows(tester, key=lambda r: r["backend"])
    captures = log.read_text().splitlines()
    assert captures.count("GRUClassifier strict=False") == 3, captures
    assert rows["onnx"]["capture"] == "own" and rows["onnx"]["status"] == "pass", rows["onnx"]["message"]
    for backend in ("export", "aoti"):
        assert rows[backend]["capture"] == "shared", rows[backend]
        assert rows[backend]["status"] == "run_error", rows[backend]["message"]  # torch.export pins seq


#: The counting conftest, with the first capture of ``Hangs`` hanging and of ``Dies`` dying.
CAPTURE_FAILS = CONFTEST + textwrap.dedent(
    """
    import signal
    import time


    def _first(module):
        # Only the first process to capture the module (the capture child) fails.
        try:
            os.close(os.open(os.path.join(os.environ["CAPTURE_FLAGS"], type(module).__name__), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True


    def _misbehave(module):
        if type(module).__name__ == "Hangs" and _first(module):
            with open(os.path.join(os.environ["CAPTURE_FLAGS"], "hung.pid"), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        if type(module).__name__ == "Dies" and _first(module):
            os.kill(os.getpid(), signal.SIGKILL)
    """
)

FAILING_MODELS = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Hangs(nn.Linear):
        pass


    class Dies(nn.Linear):
        pass


    @pytest.mark.torchexport(backends="export,onnx")
    def test_hangs():
        Hangs(8, 4).eval()(torch.randn(3, 8))


    @pytest.mark.torchexport(backends="export,onnx")
    def test_dies():
        Dies(8, 4).eval()(torch.randn(3, 8))
    """
)


def test_a_capture_that_hangs_or_dies_leaves_each_check_to_capture_its_own(tester, monkeypatch):
    # The capture child that hangs is killed, process group and all, at the check's time limit;
    # one that dies is let go: either way each check captures the call itself, and passes.
    flags = tester.path / "flags"
    flags.mkdir()
    log = tester.path / "captures.log"
    monkeypatch.setenv("CAPTURE_FLAGS", str(flags))
    monkeypatch.setenv("CAPTURES_LOG", str(log))
    tester.makeconftest(CAPTURE_FAILS)
    tester.makepyfile(test_m=FAILING_MODELS)
    tester.runpytest("--torchexport-report=out.json", "--torchexport-timeout=20")
    rows = report_rows(tester, key=lambda r: (r["test"].split("::")[-1], r["backend"]))
    captures = log.read_text().splitlines()
    for model in ("Hangs", "Dies"):
        assert captures.count(f"{model} strict=False") == 3, captures  # the child's, then each check's
        for backend in ("export", "onnx"):
            row = rows[(f"test_{model.lower()}", backend)]
            assert row["status"] == "pass" and row["capture"] == "own", row
    hung = int((flags / "hung.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # killed and waited for
