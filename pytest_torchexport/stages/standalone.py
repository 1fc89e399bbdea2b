"""Standalone load: each saved artifact loaded and run where the test's code never was.

The round trip loads the artifact where the test's custom ops and pytree types still exist; a
deployment has none. So the saved files also go to ``isolation/loader.py``, a fresh interpreter.
The request runs in a thread beside the search, and ``Loading.join`` settles the answer.
See docs/howto-standalone.md.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._compat import quiet_torch
from ..backends.base import call_tensors, load_backend
from ..isolation import loader, runner
from ..isolation.loader import TIMEOUT_S, LoaderUnavailable
from ..isolation.runner import THIS
from ..results.outcome import Stop
from ..results.report import Finding, Status
from .check import Check

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..options import Options
    from ..reference.compare import Comparison
    from ..results.outcome import Outcome

#: The report's ``standalone`` key while the request is out.
IN_FLIGHT = "not read: the check ended before the loader's answer was read"


def applies(backend: Backend, spec: Any, options: Options) -> str | None:
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


def start(spec: Any, options: Options) -> None:
    """Start the loader before the fork, so every child shares one."""
    if not isinstance(spec, str):
        return
    try:
        backend = load_backend(spec)
    except Exception:  # noqa: BLE001 - an unloadable backend is reported by the check itself
        return
    if applies(backend, spec, options) is None:
        loader.start()


def step(check: Check) -> Loading:
    """Send the saved artifact to the loader; ``Loading.join()`` reads the answer."""
    result, scratch = check.result, check.scratch
    loading = Loading(check)
    why = applies(check.backend, check.spec, check.options)
    if why:
        result.extra["standalone"] = why
        return loading
    handle = loader.current()
    if handle is not None and THIS.channel is None:
        # Restart a loader that died on an earlier check ([Crash Preflight]); children leave that to the parent.
        handle.ensure()
    if handle is None or handle.proc is None:
        result.extra["standalone"] = "not run: no loader was started for this check"
        return loading

    runner.stage(result, "standalone")  # until the request is out

    loading.directory = scratch / "artifact"
    inputs, loading.outputs = scratch / "standalone-inputs.pt", scratch / "standalone-outputs.pt"
    example = loading.example
    if getattr(check.backend, "feeds_flat_tensors", False):
        # Flatten here, where the test's pytree types are registered: the fresh process lacks them.
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


class Standalone:
    """The optional stage (``stages/optional.py``): the saved artifact loaded in a fresh process,
    answered beside the search."""

    name = "standalone"

    def prepare(self, backend: str, spec: object, options: Options) -> None:
        start(spec, options)

    def begin(self, check: Check) -> None:
        # [Crash Preflight] On CUDA the request went out with the export and may be answered
        # already: a load_error known now skips the search, which would run the artifact here.
        check.loading = check.loading or step(check)
        check.loading.join_if_answered()

    def join(self, check: Check, verdict: Outcome | None) -> None:
        if check.loading is not None:
            check.loading.join()


def preflight(check: Check) -> Loading | None:
    """[Crash Preflight] On CUDA, run the artifact in the loader before the test's process loads it.

    CUDA checks run in the test's own process, so a crashing runtime would take the session down;
    here it kills only the loader. Returns the ``Loading`` to join later, or None."""
    if not _in_this_process_on_cuda(check):
        return None
    loading = step(check)
    if not loading.wait():
        return loading
    failed = loading.crash()
    if failed is not None and failed.signal is not None:
        running = failed.stage == "run"  # otherwise it died while loading
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
    """Whether the check runs in the test's process on CUDA."""
    return THIS.channel is None and check.device.startswith("cuda")


@dataclasses.dataclass
class StandaloneVerdict:
    """What the loader's answer means."""

    note: str
    finding: str | None = None
    load_error: str | None = None
    cause: str | None = None  # the load_error's likely cause


class Loading:
    """One check's request to the loader, answered in a thread while the check goes on."""

    def __init__(self, check: Check) -> None:
        self.check, self.result = check, check.result
        self.directory: Path | None = None
        self.outputs: Path | None = None
        self.example = (check.recorded.args, check.recorded.kwargs)
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._timeout = TIMEOUT_S
        self._answer: dict[str, Any] | None = None
        self._failed: BaseException | None = None
        self._request_s = 0.0
        self._saved: dict[str, Any] = {}
        self._at = 0  # where the step's finding is inserted

    # -- the request, in its thread --

    def send(self, handle: loader.Loader, request: dict[str, Any], *, timeout: float) -> None:
        result = self.result
        result.extra["standalone"] = IN_FLIGHT
        self._saved = result.facts()  # [One Writer] no stage settles a verdict before the join
        self._at = len(result.findings)
        self._handle, self._timeout = handle, timeout
        # A daemon, so an interrupted check does not wait for it.
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

    # -- the join, in the check's thread --

    def answered(self) -> bool:
        """Whether ``join()`` would return without waiting."""
        return self._thread is None or not self._thread.is_alive()

    def wait(self) -> bool:
        """Wait for the answer without judging it."""
        if self._thread is None:
            return False
        self._thread.join(self._timeout + 5.0)
        return not self._thread.is_alive()

    def crash(self) -> LoaderUnavailable | None:
        """The loader's death, if it died."""
        return self._failed if isinstance(self._failed, LoaderUnavailable) else None

    def abandon(self) -> None:
        """Drop the request; the check ends without joining it."""
        self._thread = None

    def join_if_answered(self) -> None:
        """Settle now if the answer is already in."""
        if self._thread is not None and self.answered():
            self.join()

    def join(self) -> None:
        """Wait for the answer and settle what it means; raises ``Stop`` on a load_error."""
        if self._thread is None:  # nothing sent, or joined already
            return
        result, thread = self.result, self._thread
        self._thread = None
        runner.stage(result, "standalone")  # a hang or crash from here on belongs to this stage
        t0 = time.perf_counter()
        thread.join(self._timeout + 5.0)  # the request keeps its own deadline; this is a safety net
        if thread.is_alive():
            self._handle.kill()  # closes the connection, which ends the thread's recv
            thread.join(5.0)
            self._failed = LoaderUnavailable(
                f"the standalone loader did not answer within {self._timeout:g} s; it was restarted"
            )
        waited = time.perf_counter() - t0
        if self._failed is not None and not isinstance(self._failed, LoaderUnavailable):
            raise self._failed  # an engine bug in the request
        verdict = self._judge()
        if verdict.load_error is not None:
            self.result.restore(self._saved)  # as if the load had run first: drop what the search found meanwhile
        result.extra["standalone"] = verdict.note
        if verdict.finding is not None:
            result.findings.insert(self._at, Finding("standalone_load", verdict.finding))
        result.timings["standalone_s"] = self._request_s
        result.timings["standalone_wait_s"] = waited  # time not overlapped with the search
        if verdict.load_error is not None:
            raise Stop("load_error", verdict.load_error, verdict.cause, "standalone_load")

    def _judge(self) -> StandaloneVerdict:
        """Judge the answer: a finding, or a load_error where the format is meant to load without Python."""
        if isinstance(self._failed, LoaderUnavailable):
            return StandaloneVerdict(f"not checked: {self._failed}", f"not checked: {self._failed}")

        answer, backend, name = self._answer, self.check.backend, self.check.name
        assert answer is not None  # join() set _failed where no answer came
        if answer["ok"]:
            # Memory-mapped: no second copy of large outputs.
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
            if not reached or reached.split()[-1] in answer["error"]:  # skip torch.export's "see the warnings above"
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
        # A model checked by name has no test code to blame.
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

    def _against_eager(self, outputs: Any) -> Comparison:
        return self.check.compare(self.check.recorded.outputs, outputs)

    def _in_process(self) -> Any:
        """The saved files loaded afresh here and run; not the check's artifact, whose state a call would advance."""
        check = self.check
        assert check.artifacts is not None
        try:
            with quiet_torch(fds=True):
                loaded = check.backend.load(self.directory, check.artifacts.ctx)  # type: ignore[arg-type]  # set with the request
                return check.run(loaded, *self.example)[0]
        except Exception:  # noqa: BLE001 - a failing run is the search's to report
            return None
