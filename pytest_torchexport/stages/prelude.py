"""[Eager Once] What eager says about the recorded call before anything is exported.

The replay, mutation and determinism checks and the size budget do not depend on the backend, so
``EagerOnce`` computes them once per call in the test's process, on the CPU (CUDA initialised
there is unusable in forked children) and at one thread, as the children run. See docs/one-check.md.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch

from .._compat import pytree
from ..cache import sources
from ..cache.facts import CallDigests
from ..inputs.specs import InputPlan
from ..inputs.strategies import materialize, recorded_draw
from ..isolation import runner
from ..options import Options
from ..reference.compare import compare, equal_trees, not_compared
from ..reference.eager import (
    RAN_THE_LIVE_MODULE,
    Eager,
    ModelRaised,
    fresh,
    module_name,
    nbytes,
    restore,
    seed_rng,
    snapshot,
)
from ..results.outcome import Stop, settle
from ..results.report import Finding, Result, tag
from . import assumptions, budget, side_effects
from .check import Recorded
from .shared_search import SharedInputs, draw_once, hypothesis_home

if TYPE_CHECKING:
    from .session import Session


@dataclass
class Prelude:
    """What every backend's check of one call on one device starts from."""

    eager: Eager
    plan: InputPlan  # assumed dims held where eager rejects them; sizes within the budget
    options: Options  # examples may be cut by the time limit
    recorded: Recorded
    changed_state: list[str]  # buffers the call updated
    mutates_input: bool  # the call writes into its inputs
    #: [One Search] None: each check searches on its own
    shared: SharedInputs | None = None


def run_prelude(module: torch.nn.Module, plan: InputPlan, device: str, options: Options, result: Result) -> Prelude:
    """Eager's stages of one check, before the ``Check`` exists; any may end it with ``outcome.Stop``."""
    eager = Eager(module, device)
    if eager.refused is not None:  # checking the live module is never done silently
        result.findings.append(Finding("reference_copy", f"{RAN_THE_LIVE_MODULE}{eager.refused}"))
    plan = assumptions.hold_rejected_batch(plan, eager, options, result)
    draw = recorded_draw(plan)
    args, kwargs = materialize(plan, draw, device)
    try:
        call = eager(args, kwargs, trace_lines=True, restore=False)
    except ModelRaised as raised:  # the user's model raising is a usage problem; a bug of ours surfaces
        exc = raised.error
        # recording/selection.py reads "eager_replay" to try the test's next call of the module.
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
        training_finding(result, eager, (args, kwargs), call.outputs)
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
    plan, options = budget.bound(plan, (args, kwargs), call, result, options)
    mutates_input = not equal_trees(*_not_returned((args, kwargs), call.inputs_after, call.outputs))
    side_effects.side_effect_findings(result, mutates_input, changed_state, eager.module)
    side_effects.check_determinism(result, eager, (args, kwargs), call.outputs)
    return Prelude(eager, plan, options, Recorded(draw, args, kwargs, call), changed_state, mutates_input)


def _not_returned(before: Any, after: Any, outputs: Any) -> tuple[Any, Any]:
    """The inputs before and after the call, less each argument that is also returned (a KV cache)."""
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


def training_finding(
    result: Result,
    eager: Eager,
    inputs: tuple[tuple[Any, ...], dict[str, Any]],
    eval_outputs: Any,
) -> None:
    """A ``training_mode`` finding, only if the outputs differ between train and eval mode.

    Eager's own module runs in train mode and is put back to eval mode and its state after: a
    copy of the module cost more than the call on modules that generate code (fx)."""
    args, kwargs = fresh(*inputs)
    module = eager.module
    kept = snapshot(module, parameters=True)
    try:
        with torch.no_grad():
            module.train()
            with torch.random.fork_rng(devices=[]), sources.watching():
                seed_rng(0, eager.device)
                outputs = module(*args, **kwargs)
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
    finally:
        module.eval()
        restore(module, kept, parameters=True)  # the eval call's state, which the prelude reads next
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
    """What the shared prelude answers one check: ``"shared"``, ``"settled"`` (nothing left to run),
    or ``"own"`` (it raised; the check computes its own in its child)."""

    kind: Literal["shared", "settled", "own"]
    prelude: Prelude | None = None  # for "shared"


@dataclass
class _Shared:
    """One call's prelude as computed in the test's process, for every check that shares it."""

    kind: Literal["shared", "settled", "own"]
    prelude: Prelude | None = None
    stop: Stop | None = None  # "settled": the verdict, its message rewritten per check's header
    written: dict[str, Any] | None = None  # what the prelude wrote into its result besides a verdict
    handed: int = 0


class EagerOnce:
    """The prelude of one test's checks (or one ``check()`` call), computed once per module and device."""

    def __init__(self, body_s: float | None = None, keys: dict[tuple[Hashable, int], str] | None = None) -> None:
        #: [Search Budget] the test body's own seconds (None: no body, as for check())
        self.body_s = body_s
        #: (recorded call, module, device) -> its prelude
        self._shared: dict[tuple[Any, int, str], _Shared] = {}
        #: [Verdict Key] (call, module) -> digest of the module and its inputs (``keys``: a memo the
        #: test's lookups already filled)
        self.keys: dict[tuple[Hashable, int], str] = {} if keys is None else keys
        #: [Shared Capture] (recorded call, module, device) -> capture.py's capture
        self.captures: dict[Hashable, Any] = {}

    def hand_over(
        self,
        call: Hashable,
        module: torch.nn.Module,
        plan: InputPlan,
        options: Options,
        result: Result,
        *,
        session: Session | None = None,
    ) -> Handed:
        """The shared prelude of ``call``; what it wrote and any verdict it settled go into ``result``."""
        key = (call, id(module), result.device)
        if key not in self._shared:
            self._shared[key] = _compute(module, plan, options, result, (session, self.body_s))
        shared = self._shared[key]
        if shared.prelude is not None:
            if shared.handed == 1:
                # [Spare Copy] One copy here for all the children forked after the first.
                shared.prelude.eager.keep_spare()
            shared.handed += 1
        if shared.written is not None:
            # [Data Until Written] Only the verdict's message names the backend, and it is rewritten.
            result.take(shared.written)
        if shared.stop is not None:
            settle(result, shared.stop.outcome_for(tag(result)))
        return Handed(shared.kind, shared.prelude)

    def held_bytes(self) -> int:
        """Bytes of eager's module copies and held runs: what letting the test go frees."""
        preludes = [shared.prelude for shared in self._shared.values() if shared.prelude is not None]
        # Eager's copy and its initial state: twice the module's tensors.
        copies = sum(2 * nbytes([*p.eager.module.parameters(), *p.eager.module.buffers()]) for p in preludes)
        return copies + sum(p.shared.held_bytes for p in preludes if p.shared is not None)

    def forked_all(self) -> None:
        """Every check of the test has its child: let go of the inputs held for them.

        Each child copies the inputs it needs from the pages it inherited at its fork, so the
        test's process no longer needs its own; it keeps the recordings of up to four tests
        while their later items wait, and their held inputs with them would be that many
        tests' inputs at once. A check started later draws its inputs itself."""
        for shared in self._shared.values():
            if shared.prelude is not None and shared.prelude.shared is not None:
                shared.prelude.shared.inputs.clear()


class SharedCall(NamedTuple):
    """A check's way to its shared prelude."""

    once: EagerOnce
    call: Hashable

    def hand_over(
        self,
        module: torch.nn.Module,
        plan: InputPlan,
        options: Options,
        result: Result,
        *,
        session: Session | None = None,
    ) -> Handed:
        return self.once.hand_over(self.call, module, plan, options, result, session=session)

    @property
    def digests(self) -> CallDigests:
        """[Verdict Key] This call's digest memo, for the cache (``cache/facts.py``)."""
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
    torch.set_num_threads(1)  # as in a check's child, so outputs and timings match
    stop = None
    try:
        with sources.collecting(template):
            try:
                prelude = run_prelude(module, plan, template.device, options, template)
            except Stop as raised:
                stop = raised
            except Exception:  # noqa: BLE001 - the check's own prelude raises it again in its child
                return _Shared("own")
            else:
                runner.pump(0)  # [Held] between this process's eager runs, a place that freed is taken
                prelude.shared = _draw_once(prelude, search, template)
    finally:
        torch.set_num_threads(threads)
    written = template.written_since(result.facts())
    if stop is not None:
        return _Shared("settled", stop=stop, written=written)
    return _Shared("shared", prelude, written=written)


def _draw_once(prelude: Prelude, search: tuple[Any, float | None], result: Result) -> SharedInputs | None:
    """[One Search] The call's inputs run through eager once for every backend; None for a stateful call."""
    session, body_s = search
    if session is None or prelude.changed_state or prelude.mutates_input:
        return None
    recorded = (prelude.recorded.draw, prelude.recorded.call)
    try:
        # No except: a bug of ours should surface.
        with torch.no_grad(), hypothesis_home(session.hypothesis_home):
            return draw_once(
                prelude.eager, prelude.plan, prelude.options, session, recorded, body_s=body_s, result=result
            )
    finally:
        prelude.eager.restore()


__all__ = ["EagerOnce", "Handed", "Prelude", "SharedCall", "run_prelude"]
