"""Standalone load: each saved artifact loaded and run where the test's code never was.

A check's round trip loads the artifact back in the test's process, where every custom op,
Python class and pytree type the test file registered is still there; a deployment has
none of them. So each check sends the loader (``loader.py``: a fresh interpreter that never
imported the test's code) the artifact's directory and the recorded example; it loads with
the backend's own ``load``, runs with its ``run`` and saves the outputs' leaves; the check
compares them with eager's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import loader
from .loader import TIMEOUT_S, LoaderUnavailable


def applies(backend: Any, spec: Any, options: Any) -> str | None:
    """Why the standalone step is skipped for this check, or None when it runs."""
    if not options.standalone:
        return "off (standalone=False)"
    if not options.roundtrip:
        return "off (roundtrip=False)"
    if not getattr(backend, "saveable", True):
        return f"not applicable: {backend.name} artifacts are not saved"
    if not isinstance(spec, str):
        return "not applicable: the backend is an object, which a fresh process cannot import by name"
    return None


def start(spec: Any, options: Any) -> None:
    """Start the loader for a check that will use it: in the check's parent, before its fork,
    so every child shares one loader."""
    from .backends.base import load_backend

    if not isinstance(spec, str):
        return
    try:
        backend = load_backend(spec)
    except Exception:  # noqa: BLE001 - an unloadable backend is reported by the check itself
        return
    if applies(backend, spec, options) is None:
        loader.start()


def step(
    backend: Any, spec: Any, ctx: Any, plan: Any, device: str, options: Any, result: Any, header: str,
    scratch: Path, seed_args: Any, seed_kwargs: Any, expected: Any,
) -> None:
    """Contract section 4: the saved artifact (``scratch/artifact``), loaded where the test's
    code never was, or why not in ``result.extra["standalone"]``."""
    why = applies(backend, spec, options)
    if why:
        result.extra["standalone"] = why
        return
    from . import runner
    from ._compat import quiet_torch
    from .eager import run_artifact

    runner.stage(result, "standalone")
    directory = scratch / "artifact"

    def in_process() -> Any:
        """The same saved files, loaded afresh here, on the example: only where the loader's
        run failed or differs. Never the check's own artifact, whose state (a running
        mean) a call would advance before the search."""
        try:
            with quiet_torch(fds=True):
                loaded = backend.load(directory, ctx)
                return run_artifact(lambda a, k: backend.run(loaded, a, k), seed_args, seed_kwargs)[0]
        except Exception:  # noqa: BLE001 - a failing run is the search's to report
            return None

    check_artifact(
        backend, spec, directory, plan, device, seed_args, seed_kwargs, expected, in_process, options, result, header
    )


def check_artifact(
    backend: Any, spec: str, directory: Path, plan: Any, device: str, seed_args: Any, seed_kwargs: Any,
    expected: Any, in_process: Any, options: Any, result: Any, header: str,
) -> None:
    """Load and run the saved artifact in the loader; a failure there is a finding, or a load_error.

    ``in_process()`` runs the same files loaded in the test's process (None where that fails
    too): a run failure or a difference the test's process shares is the search's to report.
    """
    import torch

    from .compare import compare
    from .outcome import finish
    from .report import Finding

    handle = loader.current()
    if handle is None or handle.proc is None:
        result.extra["standalone"] = "not run: no loader was started for this check"
        return
    scratch = directory.parent
    inputs, outputs = scratch / "standalone-inputs.pt", scratch / "standalone-outputs.pt"
    torch.save((seed_args, seed_kwargs), inputs)
    request = {
        "backend": spec, "directory": str(directory), "inputs": str(inputs), "outputs": str(outputs),
        "device": device, "scratch": str(scratch),
        "plan": {"scalars": dict(plan.scalars), "kwargs": {k: None for k in plan.kwargs}},
    }
    t0 = time.perf_counter()
    try:
        answer = handle.request(request, timeout=min(TIMEOUT_S, float(options.timeout)))
    except LoaderUnavailable as exc:
        result.findings.append(Finding("standalone_load", f"not checked: {exc}"))
        result.extra["standalone"] = f"not checked: {exc}"
        return
    finally:
        result.timings["standalone_s"] = time.perf_counter() - t0
    name = result.backend
    problem = None
    if answer["ok"]:
        leaves = torch.load(outputs, weights_only=False)
        rtol, atol = options.tolerance("rtol", name), options.tolerance("atol", name)

        def against_eager(outputs: Any) -> Any:
            return compare(expected, outputs, relowered=backend.relowered, rtol=rtol, atol=atol, compare_fn=options.compare)

        cmp = against_eager(leaves)
        if cmp.ok:
            result.extra["standalone"] = f"loaded and ran in a fresh process ({answer['load_s']:.2f} s load)"
            return
        here = in_process()
        if here is None or not against_eager(here).ok:
            result.extra["standalone"] = "ran; differs from eager in the test's process too (see the search)"
            return
        problem = ("runs there, but its outputs differ from eager's on the recorded example, "
                   "though in the test's process they match: " + "; ".join(cmp.lines()[:2]))
    elif answer["stage"] == "run" and in_process() is None:
        result.extra["standalone"] = "the artifact fails on the recorded example in the test's process too"
        return
    else:
        reached = answer.get("reached")
        stage = {"load": "does not load", "run": "loads but fails to run", "inputs": "cannot be fed the example"}
        problem = f"{stage[answer['stage']]} there" + (f": it reaches for {reached}, which only the test's process had" if reached else "")
        if not reached or reached.split()[-1] in answer["error"]:  # not torch.export's "see the warnings above"
            problem += f" ({answer['error'][:300]})"
    detail = f"{name}: in a process that never imported the test's code, the saved artifact {problem}"
    result.findings.append(Finding("standalone_load", detail))
    result.extra["standalone"] = "failed: " + problem
    python_free = getattr(backend, "loads_without_python", False)
    if not python_free or answer.get("stage") == "inputs":
        return
    what = answer.get("reached") or "something the test's process defines"
    remedy = (
        f"Register {what} in a library the deployment loads too (a C++ extension loaded with "
        "torch.ops.load_library, or a module imported before loading), not in the test file; "
        f'or, if {name} is not a path you ship, drop it with backends=[...] or xfail={{"{name}": "reason"}}'
    )
    finish(
        result, "load_error",
        f"{name} artifact does not work outside the test's process {header}\n"
        f"loaded as a deployment loads it (a fresh process, with the backend's own load), it {problem}\n"
        f"Example inputs: {plan.describe()}\n"
        f"Likely cause: the model uses {what}, which exists only while the test's code is imported\n"
        + remedy,
    )
