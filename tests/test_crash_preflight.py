"""[Crash Preflight] On CUDA a check runs in the test's own process, so a runtime that crashes
there would end the session: the saved artifact is first loaded and run in the loader's fresh
process, and a crash there is the check's row.

CUDA cannot run here: these tests stand in for it by making ``standalone._in_this_process_on_cuda``
answer True for a CPU check run inline (a mock, said so), with backends whose load or run really
kills the process it runs in (SIGSEGV). Without the preflight the test's own process would load
them and this test session would die, so a pass here means the test's process never touched them.
"""

import os
import textwrap

import pytest
import torch

from pytest_torchexport.engine.pipeline import Session, run
from pytest_torchexport.isolation import loader
from pytest_torchexport.options import BUILTIN_BACKENDS, Options
from pytest_torchexport.stages import standalone

CRASHING = textwrap.dedent("""
    import os, signal
    from pytest_torchexport.backends.trace import TraceBackend

    class _Here(TraceBackend):
        def unavailable_reason(self):  # TorchScript's own check looks for torch.jit.<name>
            return None

    class CrashOnLoad(_Here):
        name = "crash_on_load"
        def load(self, directory, ctx):
            os.kill(os.getpid(), signal.SIGSEGV)

    class CrashOnRun(_Here):
        name = "crash_on_run"
        def run(self, artifact, args, kwargs):
            if os.environ.get("CRASH_PREFLIGHT_TEST_PID") != str(os.getpid()):
                os.kill(os.getpid(), signal.SIGSEGV)  # anywhere but the test's process
            return super().run(artifact, args, kwargs)

    class Fine(_Here):
        name = "fine"
""")


@pytest.fixture
def on_cuda_inline(tmp_path, monkeypatch):
    """The crashing backends importable here and in a fresh loader; the CUDA condition mocked."""
    (tmp_path / "crashing_backends.py").write_text(CRASHING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CRASH_PREFLIGHT_TEST_PID", str(os.getpid()))
    monkeypatch.setattr(standalone, "_in_this_process_on_cuda", lambda check: True)  # mock: no CUDA here
    loader.shutdown()  # a loader started with this PYTHONPATH
    yield
    loader.shutdown()


def _check(name: str, cls: str):
    backends = {**BUILTIN_BACKENDS, name: f"crashing_backends:{cls}"}
    options = Options.build(valid_backends=backends, backends=[name], examples=2, isolation="inline")
    (result,) = run(
        torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), None, options, Session(backends=backends)
    ).results
    return result


@pytest.mark.parametrize(
    ("name", "cls", "status", "doing"),
    [("crash_on_load", "CrashOnLoad", "load_error", "loading"), ("crash_on_run", "CrashOnRun", "run_error", "running")],
)
def test_a_runtime_crash_is_the_row_of_the_stage_it_died_in(on_cuda_inline, name, cls, status, doing):
    result = _check(name, cls)
    assert result.status == status, result.message
    first, *rest = result.message.splitlines()
    assert first.startswith(
        f"{name} artifact killed the process {doing} it with signal SIGSEGV [backend={name}, device=cpu]"
    )
    assert any(line.startswith("Likely cause:") and "crashed while" in line for line in rest)
    assert "never loaded it" in result.message
    assert rest[-1].startswith("Reproduce it in a process of its own")  # the remedy last
    assert result.extra["standalone"] == f"crashed: the loader was killed by SIGSEGV while {doing} the artifact"


def test_a_sound_artifact_is_loaded_once_in_the_fresh_process_and_passes(on_cuda_inline, monkeypatch):
    """The preflight's request is the standalone step's: one request a check, not two."""
    sent = []
    handle = loader.start()
    request = handle.request
    monkeypatch.setattr(
        handle, "request", lambda message, timeout=loader.TIMEOUT_S: sent.append(message) or request(message, timeout)
    )
    result = _check("fine", "Fine")
    assert result.status == "pass", result.message
    assert result.extra["standalone"].startswith("loaded and ran in a fresh process")
    assert len(sent) == 1


def test_the_next_check_gets_a_loader_again(on_cuda_inline):
    """Checks started together share one loader; the one the crash killed is started again
    for the next check, whose standalone step then runs (the H100 run showed it skipped)."""
    backends = {**BUILTIN_BACKENDS, "crash_on_load": "crashing_backends:CrashOnLoad"}
    options = Options.build(
        valid_backends=backends, backends=["crash_on_load", "trace"], examples=2, isolation="inline"
    )
    report = run(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), None, options, Session(backends=backends))
    crashed, trace = report.results
    assert crashed.status == "load_error", crashed.message
    assert trace.status == "pass", trace.message
    assert trace.extra["standalone"].startswith("loaded and ran in a fresh process"), trace.extra["standalone"]
