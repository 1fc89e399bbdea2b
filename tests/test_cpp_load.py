"""C++ load (docs/howto-verify.md): the saved TorchScript file and AOTInductor
package loaded by libtorch in C++ with the runner built once per torch, compared with eager."""

import pytest
import torch
from helpers import checked_one, shared_run
from models import fresh_process_lacks

from pytest_torchexport.isolation import cpp

# The runner is built against the installed wheel's headers: torch's C++ API is what a new torch may change.
pytestmark = pytest.mark.torch_compat


@pytest.fixture(scope="session")
def runner():
    """The runner, built once for the whole test session (under the user's cache folder, so a
    later session pays nothing); the tests skip where this machine cannot build it."""
    chain = cpp.toolchain()
    if isinstance(chain, str):
        pytest.skip(f"no C++ toolchain here: {chain}")
    try:
        return cpp.ensure(chain)
    except cpp.BuildFailed as exc:
        pytest.skip(str(exc))


# Registered by this file only, and loaded without the standalone step (standalone=False), so that
# what finds the missing op is C++.
MODELS = (
    fresh_process_lacks("cpp_tests")
    + """

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x, scale: float = 2.0):
        return self.lin(x).relu() * scale, (x.sum(1), x * 2)


@pytest.mark.torchexport(backends=["trace", "script", "onnx"], examples=3)
def test_net():
    Net().eval()(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["trace"], examples=3, standalone=False)
def test_op():
    WithOp().eval()(torch.randn(2, 4))
"""
)


@pytest.fixture
def rows(tester, runner):
    return shared_run(tester, MODELS, "--torchexport-cpp=auto", passed=3, failed=1)


def test_traced_and_scripted_models_are_loaded_and_compared_in_cpp(rows):
    for backend in ("trace", "script"):
        row = rows[("test_net", backend)]
        assert row["status"] == "pass", row["message"]
        cpp_key = row["cpp"]
        assert cpp_key["status"] == "pass" and cpp_key["runtime"] == "torch::jit::load", cpp_key
        assert cpp_key["run_s"] > 0 and row["timings"]["cpp_s"] > 0
        assert cpp_key["served"] is True  # by the session's one runner process, not one of its own
        assert not [f for f in row["findings"] if f["kind"] == "cpp_load"]
    assert "cpp" not in rows[("test_net", "onnx")]  # not a format C++ loads: no key at all


def test_a_custom_op_registered_only_in_python_is_a_load_error_naming_the_op(rows):
    row = rows[("test_op", "trace")]
    assert row["status"] == "load_error", row["message"]
    assert row["cpp"]["status"] == "load_error" and row["cpp"]["served"] is True
    (finding,) = [f for f in row["findings"] if f["kind"] == "cpp_load"]
    assert "the custom op cpp_tests::twice, which C++ does not have" in finding["detail"]
    first, *rest = row["message"].splitlines()
    assert first == "trace artifact does not work from C++ [backend=trace, device=cpu] (WithOp)"
    assert rest[0].startswith("loaded with torch::jit::load (libtorch 2.")
    assert any(line.startswith("C++ said: Unknown builtin op: cpp_tests::twice") for line in rest)
    assert row["cause_kind"] == "cpp_load" and "cpp_tests::twice" in row["likely_cause"]
    assert rest[-1].startswith("Register the custom op cpp_tests::twice in C++")


def test_a_difference_only_cpp_sees_is_a_mismatch(runner, monkeypatch):
    """The runner's outputs replaced by wrong ones: the stage compares what C++ returned."""
    real = cpp.read_values
    monkeypatch.setattr(cpp, "read_values", lambda path: [v + 1 for v in real(path)])
    row = checked_one(
        torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4),), backend="trace", examples=2, isolation="inline"
    )
    assert row.status == "mismatch" and row.extra["cpp"]["status"] == "mismatch"
    assert row.message.startswith("trace artifact differs from eager when run from C++ [backend=trace, device=cpu]")
    assert [f.kind for f in row.findings if f.kind == "cpp_load"] == ["cpp_load"]


def test_no_compiler_skips_the_stage_with_its_reason_and_off_turns_it_off(monkeypatch):
    model, args = torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4),)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    row = checked_one(model, args, backend="trace", examples=2)
    assert row.status == "pass"
    assert row.extra["cpp"] == {
        "status": "skipped",
        "reason": "no C++ compiler (CXX=/nonexistent/c++ is not an executable)",
    }
    monkeypatch.delenv("CXX")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "no c++, g++ or clang++ on PATH" in cpp.toolchain()
    monkeypatch.undo()
    row = checked_one(model, args, backend="script", examples=2, cpp="off")
    assert row.status == "pass" and row.extra["cpp"] == {"status": "skipped", "reason": "off (--torchexport-cpp=off)"}


def test_the_tensor_file_carries_every_value_kind_both_ways(tmp_path):
    values = (
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.zeros(0, 4),
        torch.tensor(True),
        3,
        2.5,
        False,
        None,
    )
    cpp.write_values(tmp_path / "v.bin", values, {"mask": torch.ones(2, dtype=torch.bool)})
    back = cpp.read_values(tmp_path / "v.bin")
    assert [type(v) for v in back[3:7]] == [int, float, bool, type(None)]
    for a, b in zip([*values[:3], torch.ones(2, dtype=torch.bool)], [*back[:3], back[7]]):
        assert a.dtype == b.dtype and torch.equal(a, b)
    with pytest.raises(cpp.UnsupportedArgument, match="a list argument"):
        cpp.write_values(tmp_path / "w.bin", ([torch.ones(1)],))


@pytest.mark.slow
def test_an_aoti_package_is_loaded_in_cpp(runner):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    row = checked_one(model, (torch.randn(3, 4),), backend="aoti", examples=2)
    assert row.status == "pass", row.message
    assert row.extra["cpp"]["status"] == "pass"
    assert row.extra["cpp"]["runtime"] == "torch::inductor::AOTIModelPackageLoader"


# The served runner's relay (isolation/loader.py's CppRelay) on stand-in runners: a shell script
# that reads the request line and then dies or hangs, as a runner crashing on an artifact would.
def _stand_in(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_served_runner_that_dies_on_an_artifact_answers_its_signal_and_the_next_request_gets_a_fresh_one(
    tmp_path, monkeypatch
):
    from pytest_torchexport.isolation.loader import CppRelay

    monkeypatch.chdir(tmp_path)  # the relay keeps its runner's log in the loader's folder
    relay = CppRelay()
    fields = ["jit", "m.pt", "in.bin", "out.bin", "err.txt", "cpu", "1"]
    dies = _stand_in(tmp_path, "dies", 'read line; echo "segfault in the load" >&2; kill -SEGV $$')
    answer = relay.run({"cpp": [dies, *fields], "timeout": 30})
    assert answer["code"] == -11 and "segfault in the load" in answer["log"]
    ran = cpp._ran(answer["code"], tmp_path / "out.bin", tmp_path / "err.txt", 0.1, log=answer["log"])
    assert (ran.outputs, ran.stage) == (None, "load")
    assert ran.error.startswith("the C++ runner died of SIGSEGV: segfault in the load")
    answers = _stand_in(tmp_path, "answers", "while read line; do echo 3; done")
    assert relay.run({"cpp": [answers, *fields], "timeout": 30}) == {"code": 3}
    assert relay.run({"cpp": [answers, *fields], "timeout": 30}) == {"code": 3}  # the same process, served
    hangs = _stand_in(tmp_path, "hangs", "read line; sleep 60")
    assert relay.run({"cpp": [hangs, *fields], "timeout": 0.5}) == {"timeout": True}
    assert relay.proc is None  # killed: the next request starts another
    relay.stop()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # deprecated: a DeprecationWarning, a FutureWarning on 2.14
def test_a_loader_gone_before_the_answer_runs_the_artifact_in_a_process_of_its_own(runner, tmp_path, monkeypatch):
    from pytest_torchexport.isolation import loader
    from pytest_torchexport.isolation.runner import THIS

    model = torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.randn(2, 4))
    model.save(str(tmp_path / "m.pt"))
    x = torch.randn(2, 4)
    cpp.write_values(tmp_path / "in.bin", (x,))
    handle = loader.Loader()
    handle.ensure()
    monkeypatch.setattr(THIS, "loader", handle)  # this test's own, as a session's parent holds one
    served = cpp.start(runner, "jit", tmp_path / "m.pt", tmp_path / "in.bin")
    assert isinstance(served, cpp.Served)
    assert served.result().served and cpp.read_values(tmp_path / "in-outputs.bin")
    handle.kill()  # the session's loader died: the run falls back to a process of its own
    try:
        served = cpp.Served(handle, runner, "jit", tmp_path / "m.pt", tmp_path / "in.bin", device="cpu", threads=1)
        ran = served.result()
    finally:
        handle.close()
    assert ran.stage is None and not ran.served, ran.error
    torch.testing.assert_close(ran.outputs[0], model(x))


def test_the_runners_detached_build_is_started_once_per_process(tmp_path, monkeypatch):
    # Each item's setup and each check ask for the build; while it runs, every extra builder would
    # import torch only to wait on the build's lock.
    from pytest_torchexport.isolation.runner import THIS

    spawned = []
    chain = cpp.Toolchain("c++", tmp_path, "0.0", True)
    monkeypatch.setattr(cpp, "toolchain", lambda: chain)
    monkeypatch.setenv("TORCHEXPORT_CPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpp.subprocess, "run", lambda args, **kw: spawned.append(args))
    monkeypatch.setattr(THIS, "cpp_build_started", False)
    for _ in range(3):
        cpp.start_build()
    assert len(spawned) == 1 and "pytest_torchexport.isolation.cpp" in spawned[0][2]
    monkeypatch.setattr(THIS, "cpp_build_started", False)
    (tmp_path / "cache" / chain.key).mkdir(parents=True)
    (tmp_path / "cache" / chain.key / "build.json").write_text("{}")
    cpp.start_build()  # built already: nothing to start
    assert len(spawned) == 1
