"""C++ load (contract section 4; docs/howto-verify.md): the saved artifact loaded and run by libtorch in C++.

The standalone stage proves a TorchScript file or an AOTInductor package loads in a Python
that never imported the test's code; a C++ deployment has no Python at all. So, after a
check has passed, its saved file is loaded by the C++ runner (``isolation/cpp.py``:
``torch::jit::load`` or ``AOTIModelPackageLoader``, built once per torch from the installed
wheel) and run on the recorded example; the outputs are compared with eager's as the
standalone load's are. A file C++ cannot load (a custom op registered only in Python, a
missing library) is the ``load_error`` it is, a difference the ``mismatch``, each with a
``cpp_load`` finding; the row's ``cpp`` says what ran, or why nothing did. No compiler, or
no headers in this torch: the stage is skipped with its reason, never a failure.
"""

from __future__ import annotations

from typing import Any

from ..backends import _jit, aoti
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


def _skip(check: Check, reason: str) -> None:
    check.result.extra["cpp"] = {"status": "skipped", "reason": reason}


def step(check: Check) -> None:
    """Load and run the saved artifact in C++ on the recorded example; raises ``Stop`` with a
    ``load_error`` or ``mismatch`` where C++ disagrees with the check's verdict of pass."""
    result = check.result
    if check.name not in RUNTIMES:
        return  # not a format C++ loads: no key on the row
    kind, filename, runtime = RUNTIMES[check.name]
    if check.options.cpp == "off":
        return _skip(check, "off (--torchexport-cpp=off)")
    if result.status != "pass":
        return  # the check has failed already: C++ would add nothing to its verdict
    model = check.scratch / "artifact" / filename
    if not model.exists():
        return _skip(check, "not applicable: no saved artifact (roundtrip=False)")
    chain = cpp.toolchain()
    if isinstance(chain, str):
        return _skip(check, chain)
    runner.stage(result, "cpp_load")
    inputs = check.scratch / "cpp-inputs.bin"
    args, kwargs = check.recorded.args, check.recorded.kwargs
    try:
        if kind == "aoti":  # the package takes the call's tensors, flat, as aoti_load_package feeds them
            from .._compat import pytree

            args, kwargs = tuple(v for v in pytree.tree_leaves((args, kwargs)) if hasattr(v, "dtype")), {}
        cpp.write_values(inputs, args, kwargs)
    except cpp.Unsupported as exc:
        return _skip(check, f"not applicable: the recorded call passes {exc}, which the C++ runner does not feed")
    try:
        built = cpp.ensure(chain)
    except cpp.BuildFailed as exc:
        return _skip(check, str(exc))
    import torch

    ran = cpp.run(built, kind, model, inputs, device=check.device, threads=torch.get_num_threads())
    note: dict[str, Any] = {"status": "pass", "runtime": runtime, "run_s": round(ran.seconds, 3)}
    if built.waited_s > 0.5:  # this check paid (part of) the build: said once, on its row
        note["runner_build_s"] = round(built.build_s, 1)
    result.timings["cpp_s"] = ran.seconds
    result.extra["cpp"] = note
    if ran.outputs is None:
        note["status"] = "load_error" if ran.stage in ("load", "inputs") else "run_error"
        _failed(check, runtime, ran)
    comparison = check.compare(check.recorded.outputs, ran.outputs)
    if not comparison.ok:
        note["status"] = "mismatch"
        problem = "runs there, but its outputs differ from eager's on the recorded example: " + "; ".join(comparison.lines()[:2])
        result.findings.append(Finding("cpp_load", f"{check.name}: loaded in C++ with {runtime}, the saved artifact {problem}"))
        raise Stop(
            "mismatch",
            f"{check.name} artifact differs from eager when run from C++ {check.header}\n"
            f"loaded with {runtime} (libtorch {torch.__version__}) and run on the recorded example, it {problem}\n"
            f"Example inputs: {check.plan.describe()}\n"
            f"Likely cause: the C++ runtime computes differently from the Python one on this artifact\n"
            f'If {check.name} is not a path you ship from C++, turn the stage off with --torchexport-cpp=off or xfail={{"{check.name}": "reason"}}',
            "the C++ runtime computes differently from the Python one on this artifact", "cpp_load",
        )


def _failed(check: Check, runtime: str, ran: cpp.Ran) -> None:
    import torch

    from ..isolation.loader import reached_for

    reached = cpp.reached_for(ran.error) or reached_for(ran.error)
    first = next((line.strip() for line in ran.error.splitlines() if line.strip()), "(no message)")[:300]
    problem = {"load": "does not load", "run": "loads but fails to run", "inputs": "cannot be fed the example"}[ran.stage or "load"]
    if reached:
        problem += f": it reaches for {reached}, which C++ does not have"
    check.result.findings.append(Finding("cpp_load", f"{check.name}: loaded in C++ with {runtime}, the saved artifact {problem} ({first})"))
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
        cause, "cpp_load",
    )
