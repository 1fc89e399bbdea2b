"""Standalone load (docs/howto-standalone.md): each saved artifact loaded and run where the test's code never was.

A check's round trip loads the artifact back in the test's process, where every custom op,
Python class and pytree type the test file registered is still there; a deployment has
none of them. So the check also sends the saved files and the recorded example to the
loader (``loader.py``: a fresh interpreter that never imported the test's code), which
loads them with the backend's own ``load`` and runs them with its ``run``; the check
compares the outputs with eager's, with its own tolerances.

Nothing waits for the loader while there is work to do: ``step`` sends the request and
returns a ``Loading``, whose request waits on the loader's socket in a thread (IPC only,
no torch), while the side-effect checks and the search run in the check's own thread.
``Loading.join`` at the end of the pipeline reads the answer and settles what it means,
in the check's thread. The verdict is the one the check had when the load ran before the
search: a ``load_error`` still ends the check with its own status and message, and the
result is then as it was when the request went out (what the search found meanwhile is
dropped, as that search never ran).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from .._compat import quiet_torch
from ..backends.base import call_tensors, load_backend
from ..isolation import loader, runner
from ..isolation.loader import TIMEOUT_S, LoaderUnavailable
from ..isolation.runner import THIS
from ..results.outcome import Stop
from ..results.report import Finding, Status
from .check import Check

#: The report's ``standalone`` key while the request is out: a check stopped before it read
#: the answer (its time limit, a crash during the search) keeps it.
IN_FLIGHT = "not read: the check ended before the loader's answer was read"


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
    if not isinstance(spec, str):
        return
    try:
        backend = load_backend(spec)
    except Exception:  # noqa: BLE001 - an unloadable backend is reported by the check itself
        return
    if applies(backend, spec, options) is None:
        loader.start()


def step(check: Check) -> Loading:
    """Send the saved artifact (``scratch/artifact``) to the loader, to be
    loaded where the test's code never was. The returned ``Loading``'s ``join()`` reads the
    answer; why nothing was sent is in ``result.extra["standalone"]``."""
    result, scratch = check.result, check.scratch
    loading = Loading(check)
    why = applies(check.backend, check.spec, check.options)
    if why:
        result.extra["standalone"] = why
        return loading
    handle = loader.current()
    if handle is not None and THIS.channel is None:
        # In the loader's owner (an inline check): one that died on an earlier check (a crash,
        # [Crash Preflight]) is started again here; a forked child leaves that to its parent.
        handle.ensure()
    if handle is None or handle.proc is None:
        result.extra["standalone"] = "not run: no loader was started for this check"
        return loading
    import torch

    runner.stage(result, "standalone")  # until the request is out; the check then goes on to "run"

    loading.directory = scratch / "artifact"
    inputs, loading.outputs = scratch / "standalone-inputs.pt", scratch / "standalone-outputs.pt"
    example = loading.example
    if getattr(check.backend, "feeds_flat_tensors", False):
        # A runtime fed tensors by position (onnxruntime) is fed them as a deployment would: the
        # call's tensors in this process's pytree order, where the test registered its own pytree
        # types (a transformers cache), which the fresh process has never heard of.
        example = (tuple(call_tensors(*example)), {})
    torch.save(example, inputs)
    plan = check.plan
    request = {
        "backend": check.spec,
        "directory": str(loading.directory),
        "inputs": str(inputs),
        "outputs": str(loading.outputs),
        "device": check.device,
        "scratch": str(scratch),
        "plan": {"scalars": dict(plan.scalars), "kwargs": {k: None for k in plan.kwargs}},
    }
    loading.send(handle, request, timeout=min(TIMEOUT_S, float(check.options.timeout)))
    return loading


def preflight(check: Check) -> Loading | None:
    """[Crash Preflight] On CUDA, where a check runs in the test's own process (a forked child
    cannot use the CUDA its parent initialised: ``runner.choose``), the saved artifact is first
    loaded and run in the loader's fresh process, before the test's process loads it: a runtime
    that crashes (AOTInductor's loader on CUDA, seen on an H100) then kills the loader, and the
    check ends with the status of the stage it died in and the signal, instead of taking the
    session down. Returns the ``Loading`` the pipeline joins later in place of ``step``'s (one
    request either way), or None where this does not apply (a forked child is already apart)."""
    if not _in_this_process_on_cuda(check):
        return None
    loading = step(check)
    if not loading.wait():
        return loading
    failed = loading.crash()
    if failed is not None and failed.signal is not None:
        running = failed.stage == "run"  # else load, where the log says no stage
        status: Status = "run_error" if running else "load_error"
        doing = "running" if running else "loading"
        cause = f"the {check.name} runtime crashed while {doing} the artifact (signal {failed.signal})"
        loading.abandon()
        check.result.extra["standalone"] = (
            f"crashed: the loader was killed by {failed.signal} while {doing} the artifact"
        )
        raise Stop(
            status,
            f"{check.name} artifact killed the process {doing} it with signal {failed.signal} {check.header}\n"
            f"a fresh process {doing} the saved artifact on the recorded example died; on CUDA this check "
            "runs in the test's process, so the artifact was tried there first, and the test's process "
            "never loaded it (the session goes on)\n"
            f"Example inputs: {check.plan.describe()}\n"
            f"Likely cause: {cause}\n"
            "Reproduce it in a process of its own: --torchexport-bundle=DIR, then "
            "python -m pytest_torchexport verify DIR; report it to the runtime's maintainers with that bundle",
            cause,
            "standalone_load",
        )
    return loading


def _in_this_process_on_cuda(check: Check) -> bool:
    """The check runs in the test's process (not a forked child) on a CUDA device."""
    return THIS.channel is None and check.device.startswith("cuda")


@dataclasses.dataclass
class StandaloneVerdict:
    """What the loader's answer means: the report's ``standalone`` note, a finding, and the
    load_error message where it is one."""

    note: str
    finding: str | None = None
    load_error: str | None = None
    cause: str | None = None  # the load_error's likely cause


class Loading:
    """One check's request to the loader, answered while the check goes on.

    ``send`` snapshots the result and starts the request in a thread; ``join`` waits for the
    answer (at most the request's own time limit), then judges it in the caller's thread:
    the in-process fallback loads the artifact there, and a load_error restores the snapshot
    and ends the check (``outcome.Stop``) as it did when the load ran before the search.
    """

    def __init__(self, check: Check) -> None:
        self.check, self.result = check, check.result
        self.directory: Path | None = None
        self.outputs: Path | None = None  # where the loader saves the outputs' leaves
        self.example = (check.recorded.args, check.recorded.kwargs)  # the recorded call
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._timeout = TIMEOUT_S
        self._answer: dict[str, Any] | None = None
        self._failed: BaseException | None = None  # LoaderUnavailable, or what the request raised
        self._request_s = 0.0
        self._saved: dict[str, Any] = {}
        self._at = 0  # where the step's finding goes: after the findings made before it

    # -- the request, in its thread --------------------------------------------------------

    def send(self, handle: Any, request: dict[str, Any], *, timeout: float) -> None:
        result = self.result
        result.extra["standalone"] = IN_FLIGHT
        self._saved = result.facts()  # [One Writer] not the verdict: no stage settles one before the join
        self._at = len(result.findings)
        self._handle, self._timeout = handle, timeout
        # A daemon: a check interrupted from outside (KeyboardInterrupt, an outer time limit)
        # does not wait for it; the request ends by its own deadline.
        self._thread = threading.Thread(target=self._ask, args=(request,), name="torchexport-standalone", daemon=True)
        self._thread.start()

    def _ask(self, request: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            self._answer = self._handle.request(request, timeout=self._timeout)
        except BaseException as exc:  # noqa: BLE001 - raised again (or reported) by join()
            self._failed = exc
        finally:
            self._request_s = time.perf_counter() - t0

    # -- the join, in the check's thread ---------------------------------------------------

    def answered(self) -> bool:
        """The answer is in (or nothing was sent): ``join()`` will not wait."""
        return self._thread is None or not self._thread.is_alive()

    def wait(self) -> bool:
        """Wait for the answer without judging it (``preflight``): True once it is in, False where
        nothing was sent."""
        if self._thread is None:
            return False
        self._thread.join(self._timeout + 5.0)
        return not self._thread.is_alive()

    def crash(self) -> LoaderUnavailable | None:
        """The loader's death (a ``LoaderUnavailable`` whose ``signal`` says by what), once answered."""
        return self._failed if isinstance(self._failed, LoaderUnavailable) else None

    def abandon(self) -> None:
        """Drop the request: the check ends without joining it (``preflight``'s crash)."""
        self._thread = None

    def join_if_answered(self) -> None:
        """Settle the verdict now if the answer is already in: a load_error then ends the check
        before the search starts, as it did when the load came first."""
        if self._thread is not None and self.answered():
            self.join()

    def join(self) -> None:
        """Wait for the answer and settle what it means; raises ``Stop`` on a load_error."""
        if self._thread is None:  # nothing sent, or joined already
            return
        result, thread = self.result, self._thread
        self._thread = None
        runner.stage(result, "standalone")  # a wait here, or a crash of the in-process load, is this stage's
        t0 = time.perf_counter()
        thread.join(self._timeout + 5.0)  # the request keeps its own deadline; this is a safety net
        if thread.is_alive():
            self._handle.kill()  # its connection closes: the thread's recv ends
            thread.join(5.0)
            self._failed = LoaderUnavailable(
                f"the standalone loader did not answer within {self._timeout:g} s; it was restarted"
            )
        waited = time.perf_counter() - t0
        if self._failed is not None and not isinstance(self._failed, LoaderUnavailable):
            raise self._failed  # an engine bug in the request: raised where it was raised before the overlap
        verdict = self._judge()
        if verdict.load_error is not None:
            self.result.restore(
                self._saved
            )  # as when the load ran first: the side-effect checks and the search never ran
        result.extra["standalone"] = verdict.note
        if verdict.finding is not None:
            result.findings.insert(self._at, Finding("standalone_load", verdict.finding))
        result.timings["standalone_s"] = self._request_s
        result.timings["standalone_wait_s"] = waited  # what the check waited for it, the overlap left over
        if verdict.load_error is not None:
            raise Stop("load_error", verdict.load_error, verdict.cause, "standalone_load")

    def _judge(self) -> StandaloneVerdict:
        """What the answer means: a finding, or a load_error where the backend's format is meant
        to load without Python. ``_in_process()`` tells a failure of the artifact itself (the
        search's to report) from one that only the fresh process sees."""
        if isinstance(self._failed, LoaderUnavailable):
            return StandaloneVerdict(f"not checked: {self._failed}", f"not checked: {self._failed}")
        import torch

        answer, backend, name = self._answer, self.check.backend, self.check.name
        assert answer is not None  # join() set _failed where no answer came
        if answer["ok"]:
            # Mapped, not read: a 268 MB output is compared straight from the page cache the
            # loader wrote it to, without a second copy in this process.
            leaves = torch.load(self.outputs, weights_only=False, mmap=True)  # type: ignore[arg-type]  # set with the request
            cmp = self._against_eager(leaves)
            if cmp.ok:
                return StandaloneVerdict(f"loaded and ran in a fresh process ({answer['load_s']:.2f} s load)")
            here = self._in_process()
            if here is None or not self._against_eager(here).ok:
                return StandaloneVerdict("ran; differs from eager in the test's process too (see the search)")
            problem = (
                "runs there, but its outputs differ from eager's on the recorded example, "
                "though in the test's process they match: " + "; ".join(cmp.lines()[:2])
            )
        elif answer["stage"] == "run" and self._in_process() is None:
            return StandaloneVerdict("the artifact fails on the recorded example in the test's process too")
        else:
            reached = answer.get("reached")
            stage = {"load": "does not load", "run": "loads but fails to run", "inputs": "cannot be fed the example"}
            problem = f"{stage[answer['stage']]} there" + (
                f": it reaches for {reached}, which only the test's process had" if reached else ""
            )
            if not reached or reached.split()[-1] in answer["error"]:  # not torch.export's "see the warnings above"
                problem += f" ({answer['error'][:300]})"
        finding = f"{name}: in a process that never imported the test's code, the saved artifact {problem}"
        verdict = StandaloneVerdict("failed: " + problem, finding)
        python_free = getattr(backend, "loads_without_python", False)
        if not python_free or answer.get("stage") == "inputs":
            return verdict
        what = answer.get("reached") or "something the test's process defines"
        remedy = (
            f"Register {what} in a library the deployment loads too (a C++ extension loaded with "
            "torch.ops.load_library, or a module imported before loading), not in the test file; "
            f'or, if {name} is not a path you ship, drop it with backends=[...] or xfail={{"{name}": "reason"}}'
        )
        # A model with no test file (``check``, ``--torchexport-model``) has no test's code to name.
        test = self.check.session.test or ""
        whose = (
            "the test's code"
            if test and not test.startswith("torchexport-model::")
            else "the code that built the model"
        )
        verdict.cause = f"the model uses {what}, which exists only while {whose} is imported"
        verdict.load_error = (
            f"{name} artifact does not work outside the test's process {self.check.header}\n"
            f"loaded as a deployment loads it (a fresh process, with the backend's own load), it {problem}\n"
            f"Example inputs: {self.check.plan.describe()}\n"
            f"Likely cause: {verdict.cause}\n" + remedy
        )
        return verdict

    def _against_eager(self, outputs: Any) -> Any:
        return self.check.compare(self.check.recorded.outputs, outputs)

    def _in_process(self) -> Any:
        """The same saved files, loaded afresh here, on the example: only where the loader's
        run failed or differs. Never the check's own artifact, whose state (a running mean)
        a call would have advanced."""
        check = self.check
        assert check.artifacts is not None
        try:
            with quiet_torch(fds=True):
                loaded = check.backend.load(self.directory, check.artifacts.ctx)  # type: ignore[arg-type]  # set with the request
                return check.run(loaded, *self.example)[0]
        except Exception:  # noqa: BLE001 - a failing run is the search's to report
            return None
