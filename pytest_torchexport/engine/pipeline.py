"""Export once per backend and device, then check many inputs against the loaded artifact.

``check()`` is the public entry point; each (backend, device) check is a ``PendingCheck``
that runs the stages in order (``_pipeline``). See docs/one-check.md.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import freed
from .._compat import pytree
from ..backends.base import Backend, MethodCall, PostProcessed, load_backend
from ..cache import sources
from ..cache.reuse import Reuse
from ..errors import ExportMismatch, InvalidArgument
from ..inputs.specs import InputPlan, plan_inputs
from ..isolation import runner
from ..isolation.runner import CARRIED_ROW, THIS
from ..options import INSTALL, Options, resolve_devices
from ..reference.eager import EAGER_MODE, ModelRaised, module_name
from ..results import outcome
from ..results.outcome import Stop, settle
from ..results.report import Report, Result, tag
from ..search.search import Search
from ..stages import assumptions, bundle, capture, exporting, optional, search_budget, side_effects
from ..stages.check import Check
from ..stages.exporting import compiled_finding, compiled_parts
from ..stages.prelude import EagerOnce, Prelude, SharedCall, run_prelude
from ..stages.session import Session
from ..stages.shared_search import hypothesis_home
from .schedule import TRANSITIONS, CheckState, Scheduler

__all__ = ["PendingCheck", "Session", "tag", "check", "plan_inputs", "raise_if_failed", "resolve_devices", "run"]


def check(
    module: torch.nn.Module,
    /,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Report:
    """Export ``module`` on every selected backend and prove the artifacts match eager.

    Raises ``ExportMismatch`` (an ``AssertionError`` carrying the report) when any backend
    fails. Options are the marker's; see docs/check-api.md.
    """
    session = options.pop("_session", None) or Session()
    if "module" in options:
        raise InvalidArgument(
            "module= picks among the modules a marked test calls; check() is given its module directly"
        )
    options["backends"] = _register_objects(options.get("backends"), session)
    opts = Options.build(valid_backends=tuple(session.backends), **options)
    report = run(module, args, kwargs, opts, session)
    raise_if_failed(report)
    return report


def _register_objects(backends: str | Iterable[Any] | None, session: Session) -> str | list[str] | None:
    """Register ``backends=[MyBackend()]`` objects without the pytest hook."""
    if backends is None or isinstance(backends, str):
        return backends
    names = []
    for entry in backends:
        if isinstance(entry, str):
            names.append(entry)
        else:
            backend = load_backend(entry)
            session.backends = {**session.backends, backend.name: backend}
            names.append(backend.name)
    return names


def raise_if_failed(report: Report) -> None:
    failures = report.failures
    if failures:
        raise ExportMismatch("\n\n".join(r.message for r in failures), report)


def run(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None,
    options: Options,
    session: Session,
    *,
    scheduler: Scheduler | None = None,
) -> Report:
    """Check every (backend, device) pair; never raises for a failing backend."""
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgument(f"check() takes an nn.Module, got {type(module).__name__}")
    if not isinstance(args, tuple):
        args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    try:
        plan = plan_inputs(module, args, kwargs, dims=options.dims, dynamic=options.dynamic, inputs=options.inputs)
    except InvalidArgument:
        raise
    except Exception as exc:  # noqa: BLE001 - an input no reader understands: every row says so
        return Report(
            [
                outcome.row(
                    outcome.unreadable(exc, f"[backend={name}, device={device}] ({module_name(module)})"),
                    backend=name,
                    device=device,
                    nodeid=session.nodeid,
                    test=session.test,
                    module=module_name(module),
                )
                for device in resolve_devices(options.devices)
                for name in options.backends
            ]
        )
    once = SharedCall(EagerOnce(), 0)
    pending = [
        PendingCheck(module, plan, name, device, options, session=session, once=once)
        for device in resolve_devices(options.devices)
        for name in options.backends
    ]
    longest_first = all(p.mode == "process" for p in pending)
    return Report((scheduler or Scheduler()).run_all(pending, longest_first=longest_first))


class PendingCheck:
    """One (backend, device) check: ``start()`` forks its child, ``wait()`` gives its ``Result``
    (inline, it runs in ``wait()``)."""

    def __init__(
        self,
        module: torch.nn.Module,
        plan: InputPlan,
        name: str,
        device: str,
        options: Options,
        *,
        session: Session,
        sequence: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
        once: SharedCall | None = None,
        call: str | None = None,
        reuse: Reuse | None = None,
    ) -> None:
        """``once``: the recorded call and its shared prelude; ``call``: its kind."""
        self.module, self.plan, self.name, self.device = module, plan, name, device
        self.options, self.session, self.sequence, self.once = options, session, sequence, once
        self.prelude: Prelude | None = None
        self.captured: capture.SharedCapture | None = None  # [Shared Capture]
        self.result = Result(
            backend=name,
            device=device,
            status="pass",
            module=module_name(module),
            nodeid=session.nodeid,
            test=session.test,
        )
        self.result.extra["eager_mode"] = EAGER_MODE
        method = getattr(module, "method", None)
        if isinstance(module, MethodCall) and method:  # [Another Method] the row's "method"
            self.result.extra["method"] = method
        if call:
            self.result.extra["call"] = call
        self.mode, self.why = runner.choose(options.isolation, device)
        self.started: float | None = None
        self._state = CheckState.PENDING
        self._child: runner.Child | None = None
        self._scratch: Path | None = None
        self._done: Result | None = None  # its row, once DONE
        self.check: Check | None = None  # what --torchexport-bundle writes
        #: [Verdict Cache] ``reuse``: the lookup a caller already made (a miss), else this check's own
        self.reuse = reuse or Reuse.of(
            session,
            name,
            device,
            options,
            module=module,
            inputs=plan.tree,
            sequence=sequence,
            digests=once.digests if once else None,
        )

    def start(self, *, held: bool = False) -> None:
        """Set it going. ``held``: fork the child now but let it run at a later ``start()``."""
        if self._state is not CheckState.PENDING:
            if not held and self._state is CheckState.HELD:
                assert self._child is not None
                self._child.release()
                self.started = self._child.started  # its time counts from here, not from the fork
                self._to(CheckState.RUNNING)
            return
        self.started = time.monotonic()
        hit = self.reuse.lookup()
        if hit is not None:
            self.result, self.mode, self.why = hit, "inline", None
            self._to(CheckState.SETTLED)
            return
        if self.mode == "process":
            # Choose again at the fork: a CUDA check run inline since this one was planned may have
            # initialised CUDA here, and a child forked after that cannot use CUDA.
            self.mode, self.why = runner.choose(self.options.isolation, self.device)
        spec = self.session.backends.get(self.name)
        for stage in optional.OPTIONAL:  # the loader, the C++ runner's build: shared by every child forked after
            stage.prepare(self.name, spec, self.options)
        if self.mode != "process":
            self._to(CheckState.RUNNING)  # it runs in wait()
            return
        # CPU only: eager on a GPU here would initialise CUDA in the parent, which its forked
        # children then could not use.
        if self.once is not None and self.device == "cpu" and _available(spec, self.device):
            handed = self.once.hand_over(self.module, self.plan, self.options, self.result, session=self.session)
            if handed.kind == "settled":
                self._to(CheckState.SETTLED)
                return
            self.prelude = handed.prelude  # None: the child computes its own
            self._share_capture(spec)
        # Pay the exporters' first use here, so every child inherits it. The session's hypothesis
        # home keeps a .hypothesis/ folder out of the user's directory.
        with hypothesis_home(self.session.hypothesis_home):
            THIS.warmup.before_fork(self.name, spec, self.options.backends, repeats=self.session.repeats)
        self._scratch = runner.scratch_folder(f"torchexport-{self.name}-")
        self._child = runner.Child(
            self._body,
            self.result,
            self.options.timeout,
            self._scratch,
            tag(self.result),
            held=held,
            spent=self.captured.seconds if self.captured is not None else 0.0,
        )
        self._to(CheckState.HELD if held else CheckState.RUNNING)

    def _share_capture(self, spec: Any) -> None:
        """[Shared Capture] Capture the call with torch.export once, for the backends that use it."""
        if self.prelude is None or self.once is None or not capture.shares(spec, self.module):
            return
        if not capture.worth_sharing(self.session.backends, self.options.backends, self.module):
            return
        key = (self.once.call, id(self.module), self.device)
        # Pay torch.export's first use first, so capture_s times the capture alone.
        THIS.warmup.share_first_use(self.name, self.options.backends)
        captured = capture.share(self.once.once.captures, key, self.prelude, self.device, self.options.timeout)
        if not captured.captures:  # the capture failed: each check captures its own
            return
        self.captured = captured
        self.result.sources = sorted(set(self.result.sources or ()) | set(self.captured.sources))

    def wait(self) -> Result:
        if self._done is not None:
            return self._done
        self.start()  # [Held] lets a held child go
        assert self.started is not None
        ended = None
        try:
            if self._child is not None:
                result = self._child.wait()
                ended = self._child.ended
            elif self._state is CheckState.SETTLED:
                result = self.result
            else:
                with tempfile.TemporaryDirectory(prefix=f"torchexport-{self.name}-") as folder:
                    self._scratch = Path(folder)
                    self._body(self.result)
                result = self.result
        except Exception as exc:
            # The check could not finish: the test fails with the exception, and the report
            # still gets the check's failing row saying why.
            self._row_on(exc)
            if self.state is CheckState.RUNNING:
                self._to(CheckState.FINISHED)
            raise
        finally:
            self._cleanup()
        if not self.reuse.hit:
            result.extra["isolation"] = self.mode if self.why is None else f"{self.mode}: {self.why}"
        result.timings["total_s"] = (ended or time.monotonic()) - self.started
        self.reuse.keep(result)  # the raw verdict: xfail= is applied after, to a reused row too
        outcome.xfail(result, self.options.xfail.get(result.backend))
        self._done = result
        self._to(CheckState.DONE)
        return result

    def _row_on(self, exc: Exception) -> None:
        """Attach the check's failing row to ``exc``, for the test report."""
        if isinstance(exc, InvalidArgument) or getattr(exc, CARRIED_ROW, None) is not None:
            return  # a usage error, raised as such
        child = self._child
        found = Result.from_dict(child.partial) if child is not None and child.partial is not None else self.result
        stage = child.current if child is not None else "check"
        if isinstance(exc, ModelRaised):
            settle(found, outcome.model_raised(exc.error, stage, tag(found)))
        else:
            settle(found, outcome.plugin_raised(exc, stage, tag(found)))
        with contextlib.suppress(AttributeError):  # an exception type with __slots__
            setattr(exc, CARRIED_ROW, found)

    @property
    def state(self) -> CheckState:
        """Where it is in its life; a child's end is noticed here."""
        if self._state is CheckState.RUNNING and self._child is not None and self._child.finished:
            self._to(CheckState.FINISHED)
        return self._state

    def _to(self, state: CheckState) -> None:
        """The one place its state moves, along ``schedule.TRANSITIONS``."""
        if state not in TRANSITIONS[self._state]:
            raise AssertionError(f"a check cannot go from {self._state.name} to {state.name} [{self.name}]")
        self._state = state

    @property
    def child(self) -> runner.Child | None:
        """The forked child running it, once started."""
        return self._child

    def cancel(self) -> None:
        """Stop a check never waited for."""
        if self._state in (CheckState.DONE, CheckState.CANCELLED):
            return
        if self._child is not None:
            self._child.cancel()
            self._cleanup()
        self._to(CheckState.CANCELLED)

    def _body(self, result: Result) -> None:
        assert self._scratch is not None
        with _exact_cuda_math(self.device), sources.collecting(result):
            try:
                _pipeline(self, result, self._scratch)
            except Stop as stop:
                settle(result, stop.outcome)
            except ModelRaised as raised:  # the model's own error, not the exporter's
                settle(result, outcome.model_raised(raised.error, "eager's own run", tag(result)))
            if self.options.bundle and self.check is not None and self.check.artifacts is not None:
                bundle.write(self.check)

    def _cleanup(self) -> None:
        if self._child is not None and self._scratch is not None:
            runner.remove_folder(self._scratch)
            self._scratch = None


def _available(spec: Any, device: str) -> bool:
    """Whether the backend is available here."""
    if spec is None:
        return False
    try:
        return _unavailable(load_backend(spec), device) is None
    except Exception:  # noqa: BLE001 - the check itself reports an unloadable backend
        return False


def _unavailable(backend: Backend, device: str) -> str | None:
    """Why ``backend`` cannot check on ``device`` here, or None."""
    reason = backend.unavailable_reason()
    if reason is None and device == "cuda" and not torch.cuda.is_available():
        reason = "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    return reason


def _on_device(step: tuple[tuple[Any, ...], dict[str, Any]], device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return pytree.tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, step)


def _pipeline(pending: PendingCheck, result: Result, scratch: Path) -> None:
    """The stages in order; any may end the check early (``outcome.Stop``)."""
    spec, backend = _backend(pending, result)
    prelude = pending.prelude or run_prelude(pending.module, pending.plan, pending.device, pending.options, result)
    sequence, device = pending.sequence, pending.device
    check = Check(
        session=pending.session,
        options=prelude.options,
        spec=spec,
        backend=backend,
        eager=prelude.eager,
        plan=prelude.plan,
        scratch=scratch,
        result=result,
        recorded=prelude.recorded,
        changed_state=prelude.changed_state,
        mutates_input=prelude.mutates_input,
        steps=[_on_device(step, device) for step in sequence] if sequence and prelude.changed_state else None,
        compiled=compiled_parts(prelude.eager.module),
        shared=None if sequence and prelude.changed_state else prelude.shared,
        captures=pending.captured.captures if pending.captured is not None else {},
    )
    pending.check = check
    if check.compiled:
        result.findings.append(compiled_finding(check.compiled, result.module))
    check.artifacts = exporting.build(check)
    # [Freed Memory] Return the exporter's memory to the OS before the search. Its graphs are
    # cycles only a collection frees; collect only in a child, where it is cheap.
    freed.release(collect=THIS.channel is not None)
    assumptions.recorded_size_export(check)
    # [Search Budget] What follows the exports counts against the budget.
    check.clock = search_budget.start(check.shared, check.recorded.call.seconds)
    try:
        for stage in optional.OPTIONAL:  # each starts its work beside the search: a fresh process, a C++ runtime
            stage.begin(check)
        runner.stage(result, "run")
        side_effects.check_side_effects(check)
        if not check.options.vary_scalars:
            side_effects.baked_arguments(check)
        runner.stage(result, "search")
        verdict = Search(check).run()
    except Exception:
        for stage in optional.OPTIONAL:  # a stage's own failure (a load_error) still wins
            stage.join(check, None)
        raise
    for stage in optional.OPTIONAL:
        stage.join(check, verdict)
    settle(result, verdict)
    search_budget.close(check.clock, result)


def _backend(pending: PendingCheck, result: Result) -> tuple[Any, Backend]:
    """The backend as registered and loaded; ends the check if it is unavailable."""
    name, device, options, session = pending.name, pending.device, pending.options, pending.session
    spec = session.backends.get(name)
    if spec is None:
        raise InvalidArgument(f"unknown torchexport backend {name!r}; valid backends: {', '.join(session.backends)}")
    backend = load_backend(spec)
    reason = _unavailable(backend, device)
    if reason is None and options.onnx_shipped is not None and isinstance(backend, PostProcessed):
        reason = backend.steps_unavailable(options.onnx_shipped)
    if reason and name in options.require:
        install = INSTALL.get(name, "the package that provides the " + name + " backend")
        said = reason.replace(f"; {install}", "").replace(install, "").rstrip("; ")  # say the install line once
        raise Stop(
            "export_error",
            f"{name} is required (--torchexport-require) but unavailable here {tag(result)}\n{said}\n"
            f"Install: {install}",
            f"{name} is unavailable here: {said}",
            "unavailable",
        )
    if reason:
        raise Stop("skipped", f"{name} skipped: {reason}", f"{name} skipped: {reason}", "unavailable")
    return spec, backend


@contextlib.contextmanager
def _exact_cuda_math(device: str) -> Iterator[None]:
    """TF32 off on CUDA: its rounding could hide (or pass for) an export defect."""
    if not device.startswith("cuda"):
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
