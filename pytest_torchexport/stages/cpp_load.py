"""C++ load (docs/howto-verify.md): the saved artifact loaded and run by libtorch in C++.

The standalone stage proves a TorchScript file or an AOTInductor package loads in a Python
that never imported the test's code; a C++ deployment has no Python at all. So, once a
check has saved its artifact, the file is loaded by the C++ runner (``isolation/cpp.py``:
``torch::jit::load`` or ``AOTIModelPackageLoader``, built once per torch from the installed
wheel) and run on the recorded example, in its own process beside the check's search (``begin``);
after a pass, its outputs are compared with eager's as the standalone load's are (``step``). A file C++ cannot load (a custom op registered only in Python, a
missing library) is the ``load_error`` it is, a difference the ``mismatch``, each with a
``cpp_load`` finding; the row's ``cpp`` says what ran, or why nothing did. No compiler, or
no headers in this torch: the stage is skipped with its reason, never a failure.
"""

from __future__ import annotations

from typing import Any

from .._compat import pytree
from ..backends import _jit, aoti, trace
from ..isolation import cpp, runner
from ..results.outcome import Stop
from ..results.report import Finding
from .check import Check

#: The backends whose artifacts a C++ deployment loads: (runner kind, saved file, the C++ entry point).
RUNTIMES = {
    "trace": ("jit", _jit.FILENAME, "torch::jit::load"),
    "script": ("jit", _jit.FILENAME, "torch::jit::load"),
    "aoti": ("aoti", aoti.FILENAME, "torch::inductor::AOTIModelPackageLoader"),
}


def start(name: str, options: Any) -> None:
    """In the session's process, before the check forks: start the runner's build (once per
    torch) so that it overlaps the exports."""
    if options.cpp != "off" and name in RUNTIMES and options.roundtrip:
        cpp.start_build()


class Started:
    """What ``begin`` left for ``step``: the runner on its way, or why nothing runs."""

    def __init__(
        self,
        runtime: str,
        *,
        skipped: str | None = None,
        running: cpp.Running | None = None,
        built: cpp.Runner | None = None,
    ) -> None:
        self.runtime, self.skipped, self.running, self.built = runtime, skipped, running, built


def begin(check: Check) -> None:
    """Once the artifact is saved: start the C++ runner on it and the recorded example, to run beside
    the side-effect checks and the search (one thread: the check has the other). None: not a format
    C++ loads (the row gets no ``cpp`` key). What it started is ``check.cpp``."""
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
        # The package takes the call's tensors, flat, as aoti_load_package feeds them; so does a trace
        # made through trace's tensors-only wrapper (keywords, scalars or None in the call): its
        # TorchScript forward takes the tensors as positions, as TraceBackend.run feeds them.
        if kind == "aoti" or (check.name == "trace" and trace.takes_tensors_only(args, kwargs)):
            args, kwargs = tuple(v for v in pytree.tree_leaves((args, kwargs)) if hasattr(v, "dtype")), {}
        cpp.write_values(inputs, args, kwargs)
    except cpp.Unsupported as exc:
        return Started(
            runtime, skipped=f"not applicable: the recorded call passes {exc}, which the C++ runner does not feed"
        )
    runner.stage(check.result, "cpp_load")  # the first check of a torch waits for the runner's build here
    try:
        built = cpp.ensure(chain)
    except cpp.BuildFailed as exc:
        return Started(runtime, skipped=str(exc))
    running = cpp.Running(built, kind, model, inputs, device=check.device, threads=1)
    return Started(runtime, running=running, built=built)


def step(check: Check) -> None:
    """After the verdict: read the C++ run ``begin`` started and compare it with eager; raises ``Stop``
    with a ``load_error``, ``run_error`` or ``mismatch`` where C++ disagrees with a pass."""
    result, started = check.result, check.cpp
    if started is None:
        return  # not a format C++ loads: no key on the row
    if started.running is not None and result.status != "pass":
        started.running.stop()
        return  # the check has failed already: C++ would add nothing to its verdict
    if started.skipped is not None or started.running is None:
        result.extra["cpp"] = {"status": "skipped", "reason": started.skipped}
        return
    runner.stage(result, "cpp_load")
    ran = started.running.result()
    runtime, built = started.runtime, started.built
    assert built is not None
    note: dict[str, Any] = {"status": "pass", "runtime": runtime, "run_s": round(ran.seconds, 3)}
    if built.waited_s > 0.5:  # this check paid (part of) the build: said once, on its row
        note["runner_build_s"] = round(built.build_s, 1)
    result.timings["cpp_s"] = ran.seconds  # the runner's own time, from its start to its exit
    result.timings["cpp_wait_s"] = started.running.waited_s  # what the check still waited for it, the overlap left over
    result.extra["cpp"] = note
    if ran.outputs is None:
        note["status"] = "load_error" if ran.stage in ("load", "inputs") else "run_error"
        _failed(check, runtime, ran)
    comparison = check.compare(check.recorded.outputs, ran.outputs)
    if not comparison.ok:
        import torch

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
    import torch

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
