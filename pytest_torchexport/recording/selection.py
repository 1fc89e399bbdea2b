"""From what a test body called to the check of one module, for each (backend, device) item.

Picks the call to check (the first, or ``module=``), falls back to a later call of the same
module when one cannot be replayed in eval mode under ``no_grad``, and turns what cannot be
checked into a ``usage_error`` row, so every item has a report row. See docs/howto-module.md.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .._compat import pytree
from ..cache.facts import CallDigests
from ..cache.reuse import Reuse
from ..engine.schedule import CheckState
from ..errors import InvalidArgument
from ..inputs.specs import InputPlan, plan_inputs
from ..options import Options
from ..reference.eager import RAN_THE_LIVE_MODULE
from ..results import outcome
from ..results.outcome import Outcome, add_note
from ..results.report import Finding, Result
from ..stages.session import Session
from .calls import Call, Recording, copy_of
from .kinds import Kind, group

if TYPE_CHECKING:
    from ..engine.pipeline import PendingCheck
    from ..isolation import runner
    from ..stages.prelude import EagerOnce


@dataclass
class Selection:
    """The recording of one test and the options of its marker."""

    recording: Recording
    options: Options
    auto: bool = False  # checked because of --torchexport-auto, not a marker
    #: (id(module), kind) -> (index of the first call that replays, why earlier ones did not)
    _replayable: dict[tuple[int, int], tuple[int, str | None]] = field(default_factory=dict)
    #: [Verdict Key] (call, module id) -> the digest of the module and its inputs, for every backend
    digests: dict[tuple[Hashable, int], str] = field(default_factory=dict)
    #: [Eager Once] eager's stages of a call, computed once for all the test's backends; made by
    #: the first check that runs, so a test whose every check is reused never imports the engine
    eager_once: EagerOnce | None = None
    #: id(call) -> (the call, the module, its input plan): planned once for every backend, since
    #: reading the recorded values' scales walks every input tensor
    _plans: dict[int, tuple[Call, torch.nn.Module, InputPlan]] = field(default_factory=dict)

    @classmethod
    def make(cls, recording: Recording, options: Options, auto: bool = False) -> Selection:
        if recording.selection is None or recording.selection.options != options:
            recording.selection = cls(recording, options, auto)
        return recording.selection

    def plan_of(self, call: Call, module: torch.nn.Module) -> InputPlan:
        """The input plan of ``call`` on ``module``; raises ``InvalidArgument`` where the options do not fit."""
        held = self._plans.get(id(call))
        if held is not None and held[0] is call and held[1] is module:
            return held[2]
        options = self.options
        plan = plan_inputs(
            module, call.args, call.kwargs, dims=options.dims, dynamic=options.dynamic, inputs=options.inputs
        )
        self._plans[id(call)] = (call, module, plan)
        return plan

    def start(self, backend: str, device: str, session: Session, *, held: bool = False) -> PlannedRun:
        """Start the check of one item; its row comes from ``wait()``."""
        planned = PlannedRun(self, backend, device, session)
        planned.start(held=held)
        return planned

    # -- what the row says about the call
    def _explain(self, result: Result, call: Call, calls: list[Call], used: int | None, why: str | None) -> None:
        if used and why:
            result.findings.append(
                Finding(
                    "recorded_call",
                    f"the test's first call of {call.name} raises when replayed in eval mode under no_grad ({why}); "
                    f"its call #{used + 1} of {len(calls)}"
                    + (" (in eval mode)" if not calls[used].training else "")
                    + " was checked instead",
                )
            )
        elif used is None and len(calls) > 1:
            add_note(result, f"\nAll {len(calls)} recorded calls of {call.name} raise in eval mode under no_grad.")
        if call.via:
            result.extra["recorded_via"] = call.via
            handed = "called through" if call.via == "torch.compile" else "handed to"
            methods = (
                f" with inputs for forward and {', '.join(call.methods)}: forward was checked, "
                f"{', '.join(call.methods)} {'is' if len(call.methods) == 1 else 'are'} not"
                if call.methods
                else "; its example inputs were checked"
            )
            result.findings.append(
                Finding("recorded_call", f"{call.name} was {handed} {call.via} by the test{methods}")
            )
        others = self.recording.others(call)
        if others:
            result.findings.append(
                Finding(
                    "other_modules",
                    f"the test also called {', '.join(others)}; {call.label} (its first call) was checked: "
                    f'pick another with module="{others[0]}"',
                )
            )
        refused = call.refused
        if refused is None and call.deferred:
            # [As Called] A reused row of a module no copy was tried of: the check that made it
            # said in its prelude why it ran the live module, with its state put back.
            said = next((f.detail for f in result.findings if f.detail.startswith(RAN_THE_LIVE_MODULE)), None)
            refused = said[len(RAN_THE_LIVE_MODULE) :] if said is not None else None
        if refused is not None and call.module is call.live:
            # Said here, where what was put back is known, and not again by prelude.py.
            result.findings[:] = [f for f in result.findings if f.kind != "reference_copy"]
            result.findings.append(
                Finding(
                    "reference_copy",
                    f"the plugin's copy of {call.name} is not the module the test called: {refused}; the test's own "
                    f"module was checked"
                    + (
                        ", its modes and state as at the call put back"
                        if call.state is not None or call.deferred
                        else ""
                    ),
                )
            )
        changed = call.changed_since()
        if changed:
            result.findings.append(Finding("changed_after_call", changed))
        if len(calls) > 1:
            result.extra["recorded_calls"] = len(calls)

    def _explain_kinds(self, result: Result, kinds: list[Kind]) -> None:
        """Where the test called a loop over forward (generate), say so and name the kinds."""
        loop = next((c for k in kinds for c in k.calls if c.within), None)
        if loop is None:
            return
        named = f" ({', '.join(k.name for k in kinds if k.name)})" if len(kinds) > 1 else ""
        forwards = sum(len(k.calls) for k in kinds)
        result.findings.append(
            Finding(
                "recorded_call",
                f"the test called {loop.name}.{loop.within}, a Python loop over forward: the {forwards} forward "
                f"call{'s' if forwards != 1 else ''} it made were recorded, each kind of call checked on its own row"
                f"{named}, never {loop.within} as a method",
            )
        )

    def _raised(self, call: Call, backend: str, device: str, session: Session) -> Result:
        """The row when every call of the module raised in the test itself."""
        calls = self.recording.calls_of(call)
        said = call.raised if len(calls) == 1 else f"the first: {call.raised}"
        why = (
            f"every call the test made of {call.name} raised in the test itself ({len(calls)} "
            f"call{'s' if len(calls) > 1 else ''}; {said}): a call the test expects to fail, such as a check "
            "that bad input is refused, is no example of how the model is served"
        )
        if self.auto:
            return row(backend, device, session, Outcome("skipped", why, why, "usage"), module=call.name)
        message = (
            f"Nothing to check [backend={backend}, device={device}] ({call.name}): {why}\n"
            f"Call {call.name} in the test with inputs it accepts, or give them with inputs= "
            "(or the torchexport fixture)."
        )
        return row(backend, device, session, Outcome("usage_error", message, why, "usage"), module=call.name)

    def _nothing(self, backend: str, device: str, session: Session) -> Result:
        called = sorted({c.label for c in self.recording.calls})
        if self.options.module and called:
            why = f"module={self.options.module!r} names no module the test called; it called {', '.join(called)}"
            message = (
                f"Nothing to check [backend={backend}, device={device}]: torchexport(module={self.options.module!r}) "
                f"names no module the test called\nThe test called {', '.join(called)}: name one of those in module=."
            )
        elif self.auto:
            why = "the test called no nn.Module, so there is nothing to export (--torchexport-auto)"
            return row(backend, device, session, Outcome("skipped", why, why, "usage"))
        else:
            why = (
                "the test called no nn.Module: calls made while a module is constructed, or by torch's own tracing, "
                "scripting or export machinery, are not the test's calls"
            )
            message = (
                f"Nothing to check [backend={backend}, device={device}]: {session.test or 'the test'} is marked "
                "torchexport but called no nn.Module\n"
                "Calls made while a module is constructed, or by torch's own tracing, scripting or export "
                "machinery, are not the test's calls.\n"
                "Call the model in the test body (model(x)), or check it explicitly with the fixture:\n"
                "    def test_model(torchexport):\n"
                "        torchexport(Model(), (torch.randn(2, 8),))"
            )
        return row(backend, device, session, Outcome("usage_error", message, why, "usage"))


class PlannedRun:
    """One item's check of the selected module: one check and row per kind of call
    (``kinds.py``). Every kind's child is forked at once, while the state the test's calls ran in
    is still there, but they run one after another, so an item holds one scheduler place."""

    def __init__(self, selection: Selection, backend: str, device: str, session: Session) -> None:
        self.selection, self.backend, self.device, self.session = selection, backend, device, session
        self._done: Result | None = None
        self._started: float | None = None  # time.monotonic()
        self._rows: list[Result] | None = None
        self.calls: list[Call] = []
        self.kinds: list[_KindRun] = []
        self.call = selection.recording.pick(selection.options.module)
        if self.call is None:
            self._done = selection._nothing(backend, device, session)
            return
        selection.recording.verify(self.call)  # [A Copy That Is Not The Module]
        # [Raised In The Test] a call that raised in the test itself is no example to serve.
        calls = [c for c in selection.recording.calls_of(self.call) if not c.raised]
        if not calls:
            self._done = selection._raised(self.call, backend, device, session)
            return
        # With inputs=, specs replace the recorded calls: a single check.
        groups = group(calls) if selection.options.inputs is None else [Kind((), {}, False, calls)]
        self.calls = calls
        self.kinds = [_KindRun(self, index, kind) for index, kind in enumerate(groups)]

    @property
    def rows(self) -> list[Result]:
        """Every kind's row (after ``wait``). A kind none of whose calls replays in eval mode
        is left out where another kind replays, with a finding on the others."""
        if self._done is not None and not self.kinds:
            return [self._done]
        if self._rows is not None:
            return self._rows
        rows = [kind.wait() for kind in self.kinds]
        # The marker's options describe the first kind of call: a later kind they do not fit
        # (dynamic= naming a mask a decode step lacks) is noted on the rows, not failed.
        unfit = [(k, r) for k, r in zip(self.kinds[1:], rows[1:]) if k.unfit is not None]
        if unfit:
            rows = [r for k, r in zip(self.kinds, rows) if k.unfit is None or k is self.kinds[0]]
            for result in rows:
                for kind, _ in unfit:
                    result.findings.append(
                        Finding(
                            "recorded_call",
                            f"the test's {kind.kind.name!r} calls of {kind.calls[0].name} were not checked: the marker's "
                            f"options do not fit them ({kind.unfit})",
                        )
                    )
        kinds = [k for k in self.kinds if k.unfit is None or k is self.kinds[0]]
        unserved = [(k, r) for k, r in zip(kinds, rows) if r.cause_kind == "eager_replay"]
        if not unserved or len(unserved) == len(rows):
            self._rows = rows
            return rows
        kept = [(k, r) for k, r in zip(kinds, rows) if r.cause_kind != "eager_replay"]
        for served, result in kept:
            checked = served.calls[served.used or 0]
            at = next(i for i, c in enumerate(self.calls) if c is checked)
            for kind, row in unserved:
                why = (row.likely_cause or "").split("\n", 1)[0][:200]
                result.findings.append(
                    Finding(
                        "recorded_call",
                        f"the test's {kind.kind.name!r} calls of {kind.calls[0].name} raise when replayed in eval mode "
                        f"under no_grad ({why}), so that kind of call was not checked; its call #{at + 1} of "
                        f"{len(self.calls)}"
                        + (" (in eval mode)" if not checked.training else "")
                        + f", a {served.kind.name!r} call, was checked instead",
                    )
                )
        self._rows = [r for _, r in kept]
        return self._rows

    def start(self, *, held: bool = False) -> None:
        """Fork every kind's check, the later ones held; once started, let the current one go."""
        if self._started is not None:
            current = self._current()
            if current is not None and not held:
                current.start()
            return
        self._started = time.monotonic()
        for index, kind in enumerate(self.kinds):
            kind.start(held=held or index > 0)

    def _current(self) -> _KindRun | None:
        """The first kind whose check is not over."""
        return next((kind for kind in self.kinds if not kind.state.over), None)

    @property
    def name(self) -> str:
        return self.backend

    @property
    def started(self) -> float | None:
        return self._started

    @property
    def state(self) -> CheckState:
        """Its current kind's state; once all are over, DONE if its rows were read, else FINISHED."""
        if self._started is None and self._done is None:
            return CheckState.PENDING
        current = self._current()
        if current is not None:
            return current.state
        return CheckState.DONE if self._done is not None or self._rows is not None else CheckState.FINISHED

    @property
    def detached(self) -> bool:
        """Its rows no longer depend on this process's state, so it needs none of its test's
        fixtures ([Fixtures Once])."""
        return all(kind.detached for kind in self.kinds)

    def cancel(self) -> None:
        for kind in self.kinds:
            kind.cancel()

    @property
    def child(self) -> runner.Child | None:
        """The forked child running its current check, unless it is held."""
        current = self._current()
        return None if current is None or current.state is CheckState.HELD else current.child

    def wait(self) -> Result:
        if not self.kinds:
            assert self._done is not None
            return self._done
        for index, kind in enumerate(self.kinds):
            kind.wait()
            if index + 1 < len(self.kinds):
                self.kinds[index + 1].start()  # [Held] let the next kind's child go
        return self.rows[0]


def _take_deferred(recording: Recording, call: Call) -> None:
    """[As Called] Take the copy a warm run put off, now that a check of ``call`` runs.

    Taken from the module as the body left it, which is the module as called where its digest
    is still the call's. Where it is not (the body trained it, or set an attribute, after the
    call), the copy is of the module as left, ``drifted`` says so on the row, and the next run
    copies the module at its call again."""
    deferral = recording.deferral
    assert deferral is not None and call.digest is not None  # set wherever a copy is put off
    live = call.live
    drifted = None
    if deferral.digest(live) != call.digest:
        deferral.changed(call.digest)
        drifted = (
            f"{call.name} was changed by the test body after it was called (parameters trained, modes or "
            "attributes set), and this run had put off its copy, as the verdict cache held its checks: "
            "the module as the body left it was checked, and the verdict is not kept; the next run "
            "copies it at the call"
        )
    copied, refused, state = copy_of(live)
    for outer in recording.calls:
        for c in (outer, *outer.inner):
            if c.live is live:
                c.module, c.refused, c.state, c.deferred, c.drifted = copied, refused, state, False, drifted
    if drifted is None:
        recording.verify(call)


class _KindRun:
    """The check of one kind of call: its first call that replays in eval mode, else the next."""

    def __init__(self, planned: PlannedRun, number: int, kind: Kind) -> None:
        self.planned, self.number, self.kind = planned, number, kind
        self.selection = planned.selection
        self.calls = kind.calls
        self._done: Result | None = None
        self.used: int | None = None  # which of its calls was checked
        self.unfit: str | None = None  # why the marker's options do not fit its calls
        self.index, self.why = self.selection._replayable.get((id(kind.calls[0].live), number), (0, None))
        self._pending = self._prepare(self.index)

    def _prepare(self, index: int) -> PendingCheck | _Reused | None:
        planned, options = self.planned, self.selection.options
        candidate = self.calls[index]
        candidate.put_back()  # [A Copy That Is Not The Module]
        try:
            module = candidate.checked()  # [Another Method]
            plan = self.selection.plan_of(candidate, module)
        except InvalidArgument as exc:
            self.unfit = str(exc).split("\n", 1)[0]
            self._done = row(
                planned.backend,
                planned.device,
                planned.session,
                Outcome(
                    "usage_error",
                    f"{exc}\nChange the marker's options to fit the call.",
                    str(exc),
                    "usage",
                ),
                module=candidate.name,
            )
            if self.kind.name:
                self._done.extra["call"] = self.kind.name
            return None
        except Exception as exc:  # noqa: BLE001 - an input no reader understands: the row says so
            header = f"[backend={planned.backend}, device={planned.device}] ({candidate.name})"
            self._done = row(
                planned.backend, planned.device, planned.session, outcome.unreadable(exc, header), module=candidate.name
            )
            if self.kind.name:
                self._done.extra["call"] = self.kind.name
            return None
        sequence = _sequence(self.calls[index:])
        # [Verdict Cache] Looked up before the engine is imported: a reused verdict needs none of it.
        reuse = Reuse.of(
            planned.session,
            planned.backend,
            planned.device,
            options,
            module=module,
            inputs=plan.tree,
            sequence=sequence,
            digests=CallDigests(self.selection.digests, id(candidate)),
            as_called=candidate.digest,
            method=candidate.method,
        )
        found = reuse.lookup()
        if found is not None:
            return _Reused(found, reuse, options)
        if candidate.deferred:  # [As Called] this check runs: it needs the module as called
            _take_deferred(self.selection.recording, candidate)
            module = candidate.checked()
        if candidate.drifted:  # every check of it that runs, whichever took the copy
            reuse.forgo("not kept: the module changed after its call, and its copy had been put off")
        from ..engine.pipeline import EagerOnce, PendingCheck, SharedCall  # deferred: the engine, as above

        selection = self.selection
        if selection.eager_once is None:  # [Search Budget] it knows the body's own seconds
            selection.eager_once = EagerOnce(selection.recording.body_s, keys=selection.digests)
        return PendingCheck(
            module,
            plan,
            planned.backend,
            planned.device,
            options,
            session=planned.session,
            sequence=sequence,
            call=self.kind.name,
            once=SharedCall(selection.eager_once, id(candidate)),
            reuse=reuse,
        )

    def start(self, *, held: bool = False) -> None:
        if self._pending is not None:
            self._pending.start(held=held)

    @property
    def state(self) -> CheckState:
        """Its check's state; DONE once its row is in."""
        if self._done is not None:
            return CheckState.DONE
        assert self._pending is not None  # one of the two is always set
        return self._pending.state

    @property
    def detached(self) -> bool:
        if self._done is not None:
            return True
        pending = self._pending
        if pending is None:
            return False
        settled = pending.state is CheckState.SETTLED and pending.result.cause_kind != "eager_replay"
        return pending.child is not None or settled

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()

    @property
    def child(self) -> runner.Child | None:
        return None if self._pending is None else self._pending.child

    def wait(self) -> Result:
        if self._done is not None:
            return self._done
        assert self._pending is not None
        index, why, pending, used = self.index, self.why, self._pending, None
        while True:
            result = pending.wait()
            if result.cause_kind != "eager_replay":
                used = self.used = index
                self.selection._replayable[(id(self.calls[0].live), self.number)] = (index, why)
                break
            why = why or (result.likely_cause or "").split("\n", 1)[0][:200]
            index += 1
            if self.selection.options.inputs is not None or index >= len(self.calls):
                break  # with inputs=, another call would check the same inputs
            following = self._prepare(index)
            if following is None:
                return self._done  # type: ignore[return-value]
            pending = following
        self.selection._explain(result, self.calls[0], self.calls, used, why)
        self.selection._explain_kinds(result, [k.kind for k in self.planned.kinds])
        self._done = result
        return result


class _Reused:
    """[Verdict Cache] A check whose stored verdict was found: the states and row of a
    ``PendingCheck`` that settled at its start, without the engine."""

    child = None  # it forks nothing

    def __init__(self, result: Result, reuse: Reuse, options: Options) -> None:
        self.result, self.reuse, self.options = result, reuse, options
        self.state = CheckState.PENDING
        self.started: float | None = None
        self._done: Result | None = None

    def start(self, *, held: bool = False) -> None:
        if self.state is CheckState.PENDING:
            self.started = time.monotonic()
            self.state = CheckState.SETTLED

    def cancel(self) -> None:
        pass  # nothing runs

    def wait(self) -> Result:
        if self._done is None:
            self.start()
            assert self.started is not None
            self.result.timings["total_s"] = time.monotonic() - self.started
            self.reuse.keep(self.result)  # a hit stores nothing; it notes the cache's own time
            outcome.xfail(self.result, self.options.xfail.get(self.result.backend))  # as a checked row's
            self._done = self.result
            self.state = CheckState.DONE
        return self._done


def row(backend: str, device: str, session: Session, verdict: Outcome, *, module: str = "") -> Result:
    """A result settled before any check ran."""
    return outcome.row(verdict, backend=backend, device=device, nodeid=session.nodeid, test=session.test, module=module)


def _sequence(calls: list[Call]) -> list[tuple[tuple, dict]] | None:
    """The leading calls with the first call's structure, replayed in order when the module
    updates its state (``side_effects.py``)."""
    if len(calls) < 2:
        return None
    spec = pytree.tree_structure((calls[0].args, calls[0].kwargs))
    steps = []
    for call in calls:
        if pytree.tree_structure((call.args, call.kwargs)) != spec:
            break
        steps.append((call.args, call.kwargs))
    return steps if len(steps) > 1 else None


__all__ = ["PlannedRun", "Selection", "row"]
