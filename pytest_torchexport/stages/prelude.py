"""[Eager Once] What eager says about the recorded call before anything is exported.

Every backend's check of one call starts the same way: an eval copy of the module, the
recorded call replayed on it (its outputs, the lines it ran, its measured peak memory and
time), whether the test called it in training mode, whether it mutates its inputs or state,
whether eager is deterministic, and the size budget that follows. None of it depends on the
backend, and on a real model it is several forward passes (a vector quantizer's takes 19 s).

``run_prelude`` computes it for one check. ``EagerOnce`` computes it once per recorded call
(on the CPU: on a GPU it would initialise CUDA in the parent, which forked children cannot
use) for all the checks that share it, in the test's process before the first check's
child is forked (each child inherits it, copy-on-write), and hands each check the findings,
report keys and, where eager settled the verdict (a usage error, a nondeterministic model),
the status and message, with the check's own ``[backend=..]`` tag. It runs at one intra-op
thread, as the children do, so the outputs and the measured time are the ones a check in
its own child would have got. Inline checks each compute their own: they share a process,
and an export may change the module copy it is given.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from .._compat import pytree
from ..cache import sources
from ..cache.facts import CallDigests
from ..inputs.specs import InputPlan
from ..inputs.strategies import materialize, recorded_draw
from ..options import Options
from ..reference.compare import compare, equal_trees, not_compared
from ..reference.eager import Eager, ModelRaised, copy_module, fresh, module_name, seed_rng
from ..results.outcome import Stop, settle
from ..results.report import Finding, Result, tag
from . import assumptions, budget, side_effects
from .check import Recorded
from .shared_search import SharedInputs, draw_once, hypothesis_home


@dataclass
class Prelude:
    """What every backend's check of one call on one device starts from."""

    eager: Eager
    plan: InputPlan  # the assumed batch dim held where eager rejects it; sizes within the budget
    options: Options  # examples cut where even the recorded size is past the time limit
    recorded: Recorded  # the recorded call's inputs on the device, and eager's run of them
    changed_state: list[str]  # buffers the call updated
    mutates_input: bool  # the call writes into its inputs
    #: [One Search] the inputs every backend tries and eager's run of each (shared_search.py); None: each
    #: check searches on its own (inline, CUDA, a module that changes its state or inputs)
    shared: SharedInputs | None = None


def run_prelude(module: torch.nn.Module, plan: InputPlan, device: str, options: Options, result: Result) -> Prelude:
    """The prelude of a check (eager's stages, before the ``Check``); any may end it (``outcome.Stop``)."""
    eager = Eager(module, device)
    if (
        eager.refused is not None
    ):  # a check of the live module, never a quiet one (selection.py says more where it chose it)
        result.findings.append(
            Finding("reference_copy", f"eager ran the module the test called, not a copy: {eager.refused}")
        )
    # 0. An assumed batch dim that eager rejects is not one (assumptions.py).
    plan = assumptions.hold_rejected_batch(plan, eager, options, result)
    # 1. The example through eager: determinism and side effects.
    draw = recorded_draw(plan)
    args, kwargs = materialize(plan, draw, device)
    try:
        call = eager(args, kwargs, trace_lines=True, restore=False)
    except ModelRaised as raised:  # the user's model raising is a usage problem; a bug of ours surfaces
        exc = raised.error
        # cause_kind "eager_replay" is what recording/selection.py reads to try the test's next call of the module.
        why = (
            f"{module_name(module)} raises on its example inputs in eval mode under no_grad "
            f"({plan.describe()}): {type(exc).__name__}: {exc}"
        )

        def written(header: str) -> str:
            return (
                f"The recorded call cannot be replayed as models are served {header}\n{why}\n"
                "Call the model in eval mode in the test (model.eval()), or give the inputs it is served with "
                "(inputs=, or the torchexport fixture)."
            )

        raise Stop("usage_error", written(tag(result)), why, "eager_replay", written=written) from None
    if eager.was_training:
        training_finding(result, module, device, (args, kwargs), call.outputs)
    unread = not_compared(call.outputs)
    if unread:
        result.findings.append(
            Finding(
                "not_compared",
                "not compared by value: "
                + "; ".join(f"output {path or '(the output)'} ({leaf.of}: {leaf.why})" for path, leaf in unread[:5])
                + (f"; and {len(unread) - 5} more" if len(unread) > 5 else ""),
            )
        )
    changed_state = eager.state_changed()
    eager.restore()
    # Drawn sizes within what the machine holds: the recorded call's bytes and the peak memory and time
    # measured on the eager run above, grown, against the memory allowance and the time limit (budget.py).
    plan, options = budget.bound(plan, (args, kwargs), call, result, options)
    mutates_input = not equal_trees(*_not_returned((args, kwargs), call.inputs_after, call.outputs))
    side_effects.side_effect_findings(result, mutates_input, changed_state, eager.module)
    side_effects.check_determinism(result, eager, (args, kwargs), call.outputs)
    return Prelude(eager, plan, options, Recorded(draw, args, kwargs, call), changed_state, mutates_input)


def _not_returned(before: Any, after: Any, outputs: Any) -> tuple[Any, Any]:
    """The inputs before and after the call, less each argument that is itself among the outputs:
    a decode step extends the KV cache it is handed and returns that cache, so its update is
    compared as an output, and an exported step that returns the new cache reproduces it."""
    (a, k), (a_after, k_after) = before, after
    named = {id(v): ("arg", i) for i, v in enumerate(a_after) if not isinstance(v, torch.Tensor)}
    named.update({id(v): ("kwarg", n) for n, v in k_after.items() if not isinstance(v, torch.Tensor)})
    if not named:
        return before, after
    returned = {
        named[id(leaf)] for leaf in pytree.tree_leaves(outputs, is_leaf=lambda x: id(x) in named) if id(leaf) in named
    }
    if not returned:
        return before, after
    return tuple(
        (
            tuple(v for i, v in enumerate(args) if ("arg", i) not in returned),
            {n: v for n, v in kw.items() if ("kwarg", n) not in returned},
        )
        for args, kw in ((a, k), (a_after, k_after))
    )  # type: ignore[return-value]


def training_finding(result: Result, module: torch.nn.Module, device: str, inputs: Any, eval_outputs: Any) -> None:
    """``training_mode`` only where it matters: the recorded call's outputs differ between
    the mode the test called the module in (training) and the mode it is checked in (eval)."""
    args, kwargs = fresh(*inputs)
    try:
        with torch.no_grad():
            trained = copy_module(module).to(device).train()
            with torch.random.fork_rng(devices=[]), sources.watching():
                seed_rng(0, device)
                outputs = trained(*args, **kwargs)
        same = compare(eval_outputs, outputs).ok
    except Exception as exc:  # noqa: BLE001 - a module that fails in train mode under no_grad
        result.findings.append(
            Finding(
                "training_mode",
                f"the test called the module in training mode; it was checked in eval mode, as it is served, and "
                f"whether its outputs differ between the modes cannot be told here ({type(exc).__name__}: {exc})",
            )
        )
        return
    if not same:
        result.findings.append(
            Finding(
                "training_mode",
                "the test called the module in training mode, whose outputs differ from eval mode's on the recorded "
                "input (dropout, batch statistics): it was checked in eval mode, as it is served",
            )
        )


@dataclass(frozen=True)
class Handed:
    """What the shared prelude answers one check, one way; ``kind`` says which:

    - ``"shared"``: ``prelude`` is eager's stages, computed once; their findings and report
      keys are written into the check's result;
    - ``"settled"``: eager settled the verdict (a usage error, a nondeterministic model), written
      into the result with the check's own header: nothing is left to run;
    - ``"own"``: it could not be computed here (it raised): the check computes its own in its
      child, which reports whatever that is with its traceback, as an unshared check does.
    """

    kind: Literal["shared", "settled", "own"]
    prelude: Prelude | None = None  # for "shared"


@dataclass
class _Shared:
    """One call's prelude as computed in the test's process, for every check that shares it."""

    kind: Literal["shared", "settled", "own"]  # what ``hand_over`` answers (``Handed``)
    prelude: Prelude | None = None
    stop: Stop | None = None  # "settled": the verdict eager settled, its message written per check's header
    written: dict[str, Any] | None = None  # what the prelude wrote into its result besides a verdict (``Result.facts``)
    handed: int = 0  # checks handed it so far


class EagerOnce:
    """The prelude of the checks of one test (or one ``check()`` call), once per module and device."""

    def __init__(self, body_s: float | None = None) -> None:
        #: [Search Budget] the test body's own seconds (None: no body, as for check())
        self.body_s = body_s
        #: (which recorded call, module, device) -> its prelude
        self._shared: dict[tuple[Any, int, str], _Shared] = {}
        #: [Verdict Key] (call, module) -> the digest of the module and its inputs, for every backend (fingerprint.py)
        self.keys: dict[tuple[Hashable, int], str] = {}
        #: [Shared Capture] (which recorded call, module, device) -> torch.export's capture of it (capture.py)
        self.captures: dict[Hashable, Any] = {}

    def hand_over(
        self,
        call: Hashable,
        module: torch.nn.Module,
        plan: InputPlan,
        options: Options,
        result: Result,
        *,
        session: Any = None,
    ) -> Handed:
        """The shared prelude of ``call`` (a key: which of the test's recorded calls), what it
        wrote and any verdict it settled written into ``result`` (a fresh check's)."""
        key = (call, id(module), result.device)
        if key not in self._shared:
            self._shared[key] = _compute(module, plan, options, result, (session, self.body_s))
        shared = self._shared[key]
        if shared.prelude is not None:
            if shared.handed == 1:
                # [Spare Copy] The first check's child (forked by now) copies the module it exports
                # itself, while this process copies one, once, for the children forked after it.
                shared.prelude.eager.keep_spare()
            shared.handed += 1
        if shared.written is not None:
            # [Data Until Written] Copied as data: nothing the prelude wrote names the backend but the
            # verdict's message, which is written again with this check's header.
            result.take(shared.written)
        if shared.stop is not None:
            settle(result, shared.stop.outcome_for(tag(result)))
        return Handed(shared.kind, shared.prelude)


class SharedCall(NamedTuple):
    """Which of a test's recorded calls a check is of (``call``), and the prelude cache the
    checks of that test share (``once``): a check's way to its shared prelude and keys."""

    once: EagerOnce
    call: Hashable

    def hand_over(
        self, module: torch.nn.Module, plan: InputPlan, options: Options, result: Result, *, session: Any = None
    ) -> Handed:
        return self.once.hand_over(self.call, module, plan, options, result, session=session)

    @property
    def digests(self) -> CallDigests:
        """[Verdict Key] The memo of this call's digest, for the cache (``cache/facts.py``)."""
        return CallDigests(self.once.keys, self.call)


def _compute(
    module: torch.nn.Module,
    plan: InputPlan,
    options: Options,
    result: Result,
    search: tuple[Any, float | None],
) -> _Shared:
    template = copy.deepcopy(result)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a check's child (runner.py): the same numbers, the same time
    stop = None
    try:
        with sources.collecting(template):
            try:
                prelude = run_prelude(module, plan, template.device, options, template)
            except Stop as raised:
                stop = raised
            except Exception:  # noqa: BLE001 - raised again by the check's own prelude in its child, and reported there
                return _Shared("own")
            else:
                prelude.shared = _draw_once(prelude, search, template)
    finally:
        torch.set_num_threads(threads)
    written = template.written_since(result.facts())
    if stop is not None:
        return _Shared("settled", stop=stop, written=written)
    return _Shared("shared", prelude, written=written)


def _draw_once(prelude: Prelude, search: tuple[Any, float | None], result: Result) -> SharedInputs | None:
    """[One Search] The inputs of the call drawn and run through eager once, for every backend's
    child; None where each check must search on its own (the call changes the module's state or
    its inputs: eager restarts from the recorded state on each input, as the artifact must)."""
    session, body_s = search
    if session is None or prelude.changed_state or prelude.mutates_input:
        return None
    recorded = (prelude.recorded.draw, prelude.recorded.call)
    try:
        # A bug of ours surfaces here rather than each check quietly searching on its own.
        with torch.no_grad(), hypothesis_home(session.hypothesis_home):
            return draw_once(
                prelude.eager, prelude.plan, prelude.options, session, recorded, body_s=body_s, result=result
            )
    finally:
        prelude.eager.restore()


__all__ = ["EagerOnce", "Handed", "Prelude", "SharedCall", "run_prelude"]
