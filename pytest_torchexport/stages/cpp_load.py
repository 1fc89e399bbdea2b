"""C++ load: the saved TorchScript or AOTInductor artifact loaded and run by libtorch.

A C++ deployment has no Python, so the C++ runner (``isolation/cpp.py``) runs the saved file on
the recorded example beside the search, and after a pass its outputs are compared with eager's.
Without a compiler the stage is skipped, never failed. See docs/howto-verify.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._compat import pytree
from ..backends import _jit, aoti, trace
from ..isolation import cpp, loader, runner
from ..results.outcome import Stop
from ..results.report import Finding
from .check import Check

if TYPE_CHECKING:
    from ..options import Options
    from ..results.outcome import Outcome
    from ..results.row_extra import CppNote

#: Backends whose artifacts a C++ deployment loads: (runner kind, saved file, C++ entry point).
RUNTIMES = {
    "trace": ("jit", _jit.FILENAME, "torch::jit::load"),
    "script": ("jit", _jit.FILENAME, "torch::jit::load"),
    "aoti": ("aoti", aoti.FILENAME, "torch::inductor::AOTIModelPackageLoader"),
}


def start(name: str, options: Options) -> None:
    """Before the check forks: start the runner's build, so it overlaps the exports, and the
    session's loader, which serves every C++ run from one process (``loader.CppRelay``)."""
    if options.cpp != "off" and name in RUNTIMES and options.roundtrip:
        cpp.start_build()
        loader.start()


class Started:
    """What ``begin`` left for ``step``: the runner on its way, or why nothing runs."""

    def __init__(
        self,
        runtime: str,
        *,
        skipped: str | None = None,
        running: cpp.Running | cpp.Served | None = None,
        built: cpp.Runner | None = None,
    ) -> None:
        self.runtime, self.skipped, self.running, self.built = runtime, skipped, running, built


def begin(check: Check) -> None:
    """Start the C++ runner on the saved artifact, to run beside the search; sets ``check.cpp``."""
    if check.name in RUNTIMES:
        check.cpp = _begin(check, *RUNTIMES[check.name])


def _begin(check: Check, kind: str, filename: str, runtime: str) -> Started:
    if check.options.cpp == "off":
        return Started(runtime, skipped="off (--torchexport-cpp=off)")
    model = check.scratch / "artifact" / filename
    if not model.exists():
        return Started(runtime, skipped="not applicable: no saved artifact (roundtrip=False)")
    chain = cpp.toolchain()
    if isinstance(chain, str):
        return Started(runtime, skipped=chain)
    inputs = check.scratch / "cpp-inputs.bin"
    args, kwargs = check.recorded.args, check.recorded.kwargs
    try:
        # An AOTI package, and a trace through the tensors-only wrapper, take flat positional tensors.
        if kind == "aoti" or (check.name == "trace" and trace.takes_tensors_only(args, kwargs)):
            args, kwargs = tuple(v for v in pytree.tree_leaves((args, kwargs)) if hasattr(v, "dtype")), {}
        cpp.write_values(inputs, args, kwargs)
    except cpp.UnsupportedArgument as exc:
        return Started(
            runtime, skipped=f"not applicable: the recorded call passes {exc}, which the C++ runner does not feed"
        )
    runner.stage(check.result, "cpp_load")  # the first check may wait here for the runner's build
    try:
        built = cpp.ensure(chain)
    except cpp.BuildFailed as exc:
        return Started(runtime, skipped=str(exc))
    running = cpp.start(built, kind, model, inputs, device=check.device, threads=1)
    return Started(runtime, running=running, built=built)


class CppLoad:
    """The optional stage (``stages/optional.py``): the saved TorchScript or AOTInductor artifact
    run by libtorch beside the search, judged after a pass."""

    name = "cpp_load"

    def prepare(self, backend: str, spec: object, options: Options) -> None:
        start(backend, options)

    def begin(self, check: Check) -> None:
        begin(check)

    def join(self, check: Check, verdict: Outcome | None) -> None:
        if verdict is not None:
            step(check, passed=verdict.status == "pass")
        elif check.cpp is not None and check.cpp.running is not None:
            check.cpp.running.stop()  # the search raised: nothing to judge


def step(check: Check, *, passed: bool) -> None:
    """Compare the C++ run with eager where the search passed; raises ``Stop`` where C++ disagrees."""
    result, started = check.result, check.cpp
    if started is None:
        return  # not a format C++ loads: no key on the row
    if started.running is not None and not passed:
        started.running.stop()
        return  # the check has already failed: C++ would add nothing
    if started.skipped is not None or started.running is None:
        result.extra["cpp"] = {"status": "skipped", "reason": started.skipped}
        return
    runner.stage(result, "cpp_load")
    ran = started.running.result()
    runtime, built = started.runtime, started.built
    assert built is not None
    note: CppNote = {"status": "pass", "runtime": runtime, "run_s": round(ran.seconds, 3), "served": ran.served}
    if built.waited_s > 0.5:  # this check waited for the build: say so on its row
        note["runner_build_s"] = round(built.build_s, 1)
    result.timings["cpp_s"] = ran.seconds
    result.timings["cpp_wait_s"] = started.running.waited_s  # time not overlapped with the search
    result.extra["cpp"] = note
    if ran.outputs is None:
        note["status"] = "load_error" if ran.stage in ("load", "inputs") else "run_error"
        _failed(check, runtime, ran)
    comparison = check.compare(check.recorded.outputs, ran.outputs)
    if not comparison.ok:
        note["status"] = "mismatch"
        problem = "runs there, but its outputs differ from eager's on the recorded example: " + "; ".join(
            comparison.lines()[:2]
        )
        result.findings.append(
            Finding("cpp_load", f"{check.name}: loaded in C++ with {runtime}, the saved artifact {problem}")
        )
        raise Stop(
            "mismatch",
            f"{check.name} artifact differs from eager when run from C++ {check.header}\n"
            f"loaded with {runtime} (libtorch {torch.__version__}) and run on the recorded example, it {problem}\n"
            f"Example inputs: {check.plan.describe()}\n"
            f"Likely cause: the C++ runtime computes differently from the Python one on this artifact\n"
            f'If {check.name} is not a path you ship from C++, turn the stage off with --torchexport-cpp=off or xfail={{"{check.name}": "reason"}}',
            "the C++ runtime computes differently from the Python one on this artifact",
            "cpp_load",
        )


def _failed(check: Check, runtime: str, ran: cpp.Ran) -> None:
    reached = cpp.reached_for(ran.error)
    first = next((line.strip() for line in ran.error.splitlines() if line.strip()), "(no message)")[:300]
    problem = {"load": "does not load", "run": "loads but fails to run", "inputs": "cannot be fed the example"}[
        ran.stage or "load"
    ]
    if reached:
        problem += f": it reaches for {reached}, which C++ does not have"
    check.result.findings.append(
        Finding("cpp_load", f"{check.name}: loaded in C++ with {runtime}, the saved artifact {problem} ({first})")
    )
    what = reached or "something only the test's Python process provides"
    cause = f"the model uses {what}, which a C++ deployment does not have"
    raise Stop(
        "load_error" if ran.stage in ("load", "inputs") else "run_error",
        f"{check.name} artifact does not work from C++ {check.header}\n"
        f"loaded with {runtime} (libtorch {torch.__version__}), it {problem}\n"
        f"C++ said: {first}\n"
        f"Example inputs: {check.plan.describe()}\n"
        f"Likely cause: {cause}\n"
        f"Register {what} in C++ (TORCH_LIBRARY in a library the deployment links or loads), not only in Python; "
        f'or, if {check.name} is not a path you ship from C++, turn the stage off with --torchexport-cpp=off or xfail={{"{check.name}": "reason"}}',
        cause,
        "cpp_load",
    )
