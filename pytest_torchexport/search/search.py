"""The search stage of a check: hypothesis draws inputs, each runs through eager and the loaded artifact.

``attempt`` judges one input and touches no statistics, so the search and the cause experiments
share it; ``probe`` is what hypothesis calls; ``run`` drives hypothesis, shrinks the first failure
and hands it to the cause experiments and the message. See docs/one-check.md.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from hypothesis import reject
from hypothesis.errors import Flaky, HypothesisException

from ..backends.base import Backend
from ..inputs.strategies import Draw, materialize
from ..reference.compare import Comparison, compare, flatten, tolerances_for
from ..reference.eager import EagerCall, ModelRaised, restore, snapshot
from ..reference.noise import Float64Reference, NoiseVerdict, judge_noise, noise_finding
from ..results.outcome import Outcome, Stop
from ..results.report import Finding
from ..stages.check import Check
from ..stages.exporting import quiet_call
from ..stages.search_budget import ALWAYS, BudgetClock
from ..stages.shared_search import example_database, explicit_draws, hypothesis_home, hypothesis_test
from . import causes, localize
from .failure import Failure, Stats, track_vacuous
from .messages import (
    explain_failure,
    masked_finding,
    nothing_compared,
    pass_message,
    rejection_finding,
    shipped_words,
    vacuous_finding,
)

if TYPE_CHECKING:
    from collections.abc import Callable


class Rejected(Exception):
    """Eager itself raises on a generated input: not a valid example."""


class _ExampleFailed(AssertionError):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.status)
        self.failure = failure


class Attempt(NamedTuple):
    """One input judged; ``failure`` is None when it passed, ``comparison`` when the artifact raised."""

    call: EagerCall
    failure: Failure | None
    comparison: Comparison | None
    noise: NoiseVerdict | None = None


class Search:
    """The search over generated inputs for one (backend, device) check; keeps only what the search learns."""

    def __init__(self, check: Check) -> None:
        assert check.artifacts is not None
        self.check = check
        # The artifacts judged; ``still_fails_on`` swaps in another one temporarily.
        self.runnable, self.in_memory = check.artifacts.runnable, check.artifacts.in_memory
        self.export_draw = check.artifacts.export_draw
        self.stats = Stats()
        # [Memory Budget] Only the latest eager call is kept: hypothesis rarely runs a draw twice
        # in a row, and keeping one per draw would hold every output of the search.
        self._eager_calls: dict[Draw, EagerCall] = {}
        if not (check.mutates_state or check.mutates_input):
            # [Eager Once] The prelude already ran the recorded call through eager, so its
            # outputs are reused rather than recomputed in every backend's check.
            self._eager_calls[check.recorded.draw] = check.recorded.call
        self._guards: dict[tuple[Any, ...], str | None] = {}
        # [One Search] Inputs and eager outputs shared by every backend (shared_search.py).
        self.shared = check.shared if not (check.mutates_state or check.mutates_input or check.steps) else None
        # [State After Every Input] Eager restarts from its initial state on each input, so each
        # artifact must too. Snapshots are taken once any input changes eager's state (``_seen_state``),
        # so a model that never changes state pays no copy.
        self._snapshots: list[tuple[Any, Any]] = []
        self.updated: set[str] = set()  # the buffers eager updated on some input
        if check.mutates_state:
            self._take_snapshots()
        # [Noise Oracle] The float64 run (noise.py) is asked only where the plain comparison fails.
        self._float64 = Float64Reference(check.eager, self.shared.float64 if self.shared is not None else None)
        self._strict = check.rtol is not None or check.atol is not None or check.options.compare is not None
        # A post-processed artifact (float16, int8) is judged by its scale budget; it is far beyond
        # float32 rounding by design, so the float64 oracle has nothing to say.
        self._strict = self._strict or check.scale_budget is not None
        self.worst_of_scale = 0.0  # the greatest error seen, a fraction of the output's scale
        self.noise: list[NoiseVerdict] = []  # inputs that passed as rounding
        #: export guard -> the first input outside it that still matched eager
        self.unguarded: dict[str, str] = {}
        #: inputs whose outputs differed only where the attention mask leaves a query no key
        self.masked: list[causes.MaskedRows] = []

    # -- one input -------------------------------------------------------------------------

    def _expected(self, draw: Draw, args: tuple[Any, ...], kwargs: dict[str, Any]) -> EagerCall:
        if self.shared is not None:
            if draw in self.shared.rejected:
                raise Rejected  # eager refused it when the shared inputs were drawn
            held = self.shared.expected(draw)
            if held is not None:
                return held
        if draw not in self._eager_calls:
            self._eager_calls.clear()  # free the previous output before making the next
            t0 = time.perf_counter()
            try:
                self._eager_calls[draw] = self.check.eager(args, kwargs, trace_lines=True)
            finally:
                self.stats.reference_s += time.perf_counter() - t0
        return self._eager_calls[draw]

    def _run(self, artifact: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        for target, saved in self._snapshots:
            restore(target, saved)
        return self.check.run(artifact, args, kwargs)[0]

    def _take_snapshots(self) -> None:
        targets = [self.check.backend.artifact_module(a) for a in (self.runnable, self.in_memory) if a is not None]
        self._snapshots = [(t, snapshot(t)) for t in targets if t is not None]

    def _seen_state(self, call: EagerCall) -> None:
        """[State After Every Input] An input changed eager's buffers: from now on every artifact call
        starts from the initial state, as eager's do."""
        if call.state and not self.updated and not self.check.mutates_state:
            self._take_snapshots()
        self.updated.update(call.state)

    def _oracle(
        self, draw: Draw, inputs: tuple[Any, Any], expected: object, actual: object, cmp: Comparison
    ) -> NoiseVerdict:
        reference = self._float64(draw, *inputs)
        if reference is None:
            return NoiseVerdict(note=self._float64.unavailable or "no float64 reference")
        return judge_noise(cmp, expected, actual, reference)

    def _within_noise(
        self,
        draw: Draw,
        inputs: tuple[Any, Any],
        expected: object,
        actual: object,
        cmp: Comparison,
    ) -> tuple[bool, NoiseVerdict | None]:
        """(within, oracle verdict): under default tolerances, a failure that is only rounding passes."""
        if cmp.ok or self._strict or cmp.problem is not None:
            return cmp.ok, None
        verdict = self._oracle(draw, inputs, expected, actual, cmp)
        return verdict.rounding, verdict

    def _guard(self, draw: Draw, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        # torch.export's guards constrain shapes: one verdict per set of sizes.
        key = (draw.sizes, draw.scalars)
        if key not in self._guards:
            artifact = self.in_memory if self.in_memory is not None else self.runnable
            self._guards[key] = quiet_call(
                self.check.result, self.check.backend.guard_violation, artifact, args, kwargs
            )
        return self._guards[key]

    def attempt(self, draw: Draw) -> Attempt:
        """One input through eager and the artifact.

        Raises ``Rejected`` when the user's model refuses the input; the plugin's own errors
        propagate so the check fails with their traceback.
        """
        held = self.shared.held_inputs(draw) if self.shared is not None else None
        args, kwargs = held if held is not None else materialize(self.check.plan, draw, self.check.device)
        try:
            call = self._expected(draw, args, kwargs)
        except ModelRaised:
            raise Rejected from None
        self._seen_state(call)
        t0 = time.perf_counter()
        try:
            actual = self._run(self.runnable, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - an exporter's runtime may raise anything; kept as the run_error
            return Attempt(call, Failure("run_error", draw, args, kwargs, error=exc, path=call.path), None)
        finally:
            self.stats.run_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        cmp = self.check.compare(call.outputs, actual)
        if not cmp.ok and not call.state:
            cmp = self._defined_only(call.outputs, actual, (args, kwargs), cmp)
        self.stats.compare_s += time.perf_counter() - t0
        guard = self._guard(draw, args, kwargs)
        if guard and not cmp.ok:
            return Attempt(
                call, Failure("mismatch", draw, args, kwargs, comparison=cmp, path=call.path, guard=guard), cmp
            )
        if guard:
            # Outside the shapes the export proved, yet the runtime matched eager: not a failure,
            # but worth a finding since those sizes are served unproven.
            self.unguarded.setdefault(guard, draw.describe())
        t0 = time.perf_counter()
        within, verdict = self._within_noise(draw, (args, kwargs), call.outputs, actual, cmp)
        self.stats.compare_s += time.perf_counter() - t0
        if within and call.state:
            return Attempt(call, self._state_after(draw, (args, kwargs), call), cmp, verdict)
        if within:
            return Attempt(call, None, cmp, verdict)
        mismatch = Failure("mismatch", draw, args, kwargs, comparison=cmp, path=call.path, noise=verdict)
        if self.in_memory is None:
            return Attempt(call, mismatch, cmp, verdict)
        # The in-memory artifact runs only when the loaded one fails. If it matches eager (judged
        # the same way as the loaded one), the export was right and save/load broke it.
        mem = self._run(self.in_memory, args, kwargs)
        if self._within_noise(draw, (args, kwargs), call.outputs, mem, self.check.compare(call.outputs, mem))[0]:
            roundtrip = self.check.compare(mem, actual, custom=False)
            return Attempt(
                call,
                Failure("roundtrip_mismatch", draw, args, kwargs, comparison=roundtrip, path=call.path),
                cmp,
                verdict,
            )
        return Attempt(call, mismatch, cmp, verdict)

    def _defined_only(self, expected: object, actual: object, inputs: tuple[Any, Any], cmp: Comparison) -> Comparison:
        """The comparison without the outputs left undefined by the attention mask; if every difference
        is there, the input passes and a ``masked_rows`` finding names the positions."""
        eager = self.check.eager

        def eager_moved() -> tuple[object, object]:  # run only where a pooled output may read such a query
            # Both runs here, not ``expected``: the two then differ by the noise alone.
            plain = eager(*inputs).outputs
            with causes.no_key_queries_moved():
                return plain, eager(*inputs).outputs

        found = causes.no_key_positions(eager.module, expected, actual, *inputs, eager_moved=eager_moved)
        if found is None:
            return cmp
        rest = self.check.compare(expected, found[1])
        if not rest.ok:
            return cmp
        self.masked.append(found[0])
        rest.compared.masked = found[0].elements
        rest.compared.elements = max(rest.compared.elements - found[0].elements, 0)
        return rest

    def _state_check(
        self, artifact: object, inputs: tuple[Any, Any], call: EagerCall, ran: bool
    ) -> tuple[Comparison, str]:
        """[State After Every Input] Compare the state ``artifact`` kept after ``inputs`` with eager's:
        its buffers where it has them, else a second call's outputs (ONNX keeps no buffers). ``ran``:
        the artifact has just run on ``inputs`` from the initial state."""
        args, kwargs = inputs
        if not ran:
            self._run(artifact, args, kwargs)
        target = self.check.backend.artifact_module(artifact)
        mine = dict(target.named_buffers()) if target is not None else {}
        kept: dict[str, Any] = {}
        for name in call.state:
            found = mine.get(name)
            if found is None:  # a wrapper prefixes names (module.acc)
                found = next((v for k, v in mine.items() if k.endswith("." + name)), None)
            if found is not None:
                kept[name] = found.detach().clone()
        if len(kept) == len(call.state):
            return compare(call.state, kept, rtol=self.check.rtol, atol=self.check.atol), "buffers"
        actual = self.check.run(artifact, args, kwargs)[0]  # the second call, from the state the first left
        expected = self.check.eager.again(args, kwargs, call.state)
        return self.check.compare(expected, actual), "second call"

    def _state_after(self, draw: Draw, inputs: tuple[Any, Any], call: EagerCall) -> Failure | None:
        """[State After Every Input] On an input that updates state, the artifact must keep the same
        state; the round trip is blamed only where the in-memory artifact keeps it."""
        args, kwargs = inputs
        t0 = time.perf_counter()
        try:
            cmp, what = self._state_check(self.runnable, inputs, call, ran=True)
            if cmp.ok:
                return None
            status = "mismatch"
            if self.in_memory is not None and self._state_check(self.in_memory, inputs, call, ran=False)[0].ok:
                status = "roundtrip_mismatch"
        except ModelRaised:
            raise  # eager's second call raised: the model's error, not the artifact's
        except Exception as exc:  # noqa: BLE001 - an exporter's runtime may raise anything; kept as the run_error
            return Failure("run_error", draw, args, kwargs, error=exc, path=call.path)
        finally:
            self.stats.run_s += time.perf_counter() - t0
        return Failure(status, draw, args, kwargs, comparison=cmp, path=call.path, state=(sorted(call.state), what))

    def judge(self, draw: Draw) -> Failure | None:
        """Attempt ``draw`` and count it in the statistics; its failure or None. Raises ``Rejected``."""
        stats = self.stats
        try:
            call, failure, cmp, verdict = self.attempt(draw)
        except Rejected:
            stats.rejected += 1
            raise
        stats.examples += 1
        stats.cover(draw.sizes)
        if call.path is not None:
            stats.paths[call.path] = stats.paths.get(call.path, 0) + 1
        track_vacuous(stats, call.outputs)
        if cmp is not None:
            stats.count(cmp)
        if cmp is not None and (failure is None or failure.guard is None):
            stats.max_abs = max(stats.max_abs, cmp.max_abs)
            stats.max_rel = max(stats.max_rel, cmp.max_rel)
            self.worst_of_scale = max(self.worst_of_scale, cmp.of_scale)
        if failure is None and verdict is not None:
            self.noise.append(verdict)
        stats.note_input(_per_input(draw, failure, cmp, verdict))
        if failure is not None:
            stats.failed += 1
            if failure.path is not None:
                stats.failing_paths[failure.path] = stats.failing_paths.get(failure.path, 0) + 1
        return failure

    def probe(self, draw: Draw) -> None:
        """What hypothesis calls: judge, raise on a failure so it shrinks."""
        try:
            failure = self.judge(draw)
        except Rejected:
            reject()
        if failure is not None:
            raise _ExampleFailed(failure)

    def still_fails(self, draw: Draw) -> bool | None:
        """The verdict on a variant of the failing input; None when eager rejects it."""
        try:
            return self.attempt(draw).failure is not None
        except Rejected:
            return None

    def still_fails_on(self, artifact: object, draw: Draw) -> bool | None:
        """The verdict with ``artifact`` in the loaded one's place (causes.py); no round-trip blame."""
        runnable, in_memory = self.runnable, self.in_memory
        self.runnable, self.in_memory = artifact, None
        try:
            return self.still_fails(draw)
        finally:
            self.runnable, self.in_memory = runnable, in_memory

    # -- the whole search ------------------------------------------------------------------

    def _explicit(self) -> list[Draw]:
        """The explicit inputs, tried first, most valuable first (shared_search.explicit_draws)."""
        shared = self.shared
        if shared is not None:
            return [*shared.explicit, *([] if self.export_draw in shared.kinds else [self.export_draw])]
        return list(explicit_draws(self.check.plan, self.export_draw, self.check.options.special_values))

    def _hypothesis_test(self, explicit: list[Draw]) -> Callable[[], None]:
        def probe(draw: Draw) -> None:
            self.probe(draw)

        shared, session, options = self.shared, self.check.session, self.check.options
        if shared is not None:
            # [One Search] The shared key, seed and explicit inputs make hypothesis generate the same
            # inputs in the same order up to this backend's first failure, then shrink it.
            return hypothesis_test(
                probe,
                self.check.plan,
                options,
                key=shared.key,
                seed=shared.seed,
                database=example_database(session),
                explicit=explicit,
                shrink=True,
            )
        # Derandomized per test and backend (the key seeds it), so a CI gate does not flip on an unchanged model.
        key = f"{session.nodeid or session.test or type(self.check.eager.module).__qualname__}::{self.check.name}::{self.check.device}"
        return hypothesis_test(
            probe,
            self.check.plan,
            options,
            key=key,
            seed=options.seed,
            database=example_database(session),
            explicit=explicit,
            shrink=True,
        )

    def run(self) -> Outcome:
        """Search, then the verdict: a pass, or the shrunk failure explained (``messages.py``)."""
        failure = self._shared_pass() if self.shared is not None else self._search()
        self._record_stats()
        if failure is None:
            return self._passed()
        with torch.no_grad():
            self._experiments(failure)
        recorded = self.check.recorded
        export_path = recorded.call.path if self.export_draw == recorded.draw else None
        return explain_failure(self.check, failure, self.stats, export_path)

    def _shared_pass(self) -> Failure | None:
        """[One Search] This artifact on the shared inputs within the budget; on a failure, this backend's
        own search with the same key and seed finds it again and shrinks it."""
        shared = self.shared
        assert shared is not None
        order = [*shared.tried, *([] if self.export_draw in shared.kinds else [self.export_draw])]
        untried = dict(shared.untried)
        clock = self.check.clock or BudgetClock(shared)  # [Search Budget] counted from the exports' end
        t0 = time.perf_counter()
        first, judged = None, 0
        try:
            with torch.no_grad():
                for draw in order:
                    kind = shared.kinds.get(draw, "drawn")
                    # Try it only if the time left covers one more input at the mean so far.
                    mean_s = (time.perf_counter() - t0) / judged if judged else 0.0
                    if kind not in ALWAYS and clock.left_s <= mean_s:
                        untried[kind] = untried.get(kind, 0) + 1
                        continue
                    judged += 1
                    try:
                        first = self.judge(draw)
                    except Rejected:
                        continue
                    if first is not None:
                        break
        finally:
            self._search_s = time.perf_counter() - t0
            clock.input_s = self._search_s / judged if judged else 0.0
        if first is None:
            if self.stats.examples == 0:
                tried = (
                    f"({self.stats.rejected} tried), so nothing was checked: fix dims=/inputs= so eager accepts them. "
                    f"Inputs: {self.check.plan.describe()}"
                )
                raise Stop(
                    "skipped",
                    f"Eager rejected every generated input {self.check.header} {tried}",
                    f"Eager rejected every generated input {tried}",
                    "rejected_inputs",
                )
            clock.untried = untried  # reported on the row (pipeline.py)
            return None
        # The failing backend searches on its own, with fresh statistics.
        kept = (self.stats, self.noise, self.worst_of_scale, self._search_s)
        self.stats, self.noise, self.worst_of_scale = Stats(), [], 0.0
        shrunk = self._search()
        if shrunk is None:  # hypothesis did not meet it again (flaky artifact): keep the shared failure
            self.stats, self.noise, self.worst_of_scale, self._search_s = kept
            return first
        self._search_s += kept[3]
        return shrunk

    def _search(self) -> Failure | None:
        """Hypothesis over the plan: the shrunk failure, or None. Raises ``Stop`` on flaky verdicts
        or when eager rejects every input."""
        result, stats, name, header = self.check.result, self.stats, self.check.name, self.check.header
        explicit = self._explicit()
        test = self._hypothesis_test(explicit)
        t0 = time.perf_counter()
        try:
            with torch.no_grad(), hypothesis_home(self.check.session.hypothesis_home):
                test()
        except _ExampleFailed as exc:
            if exc.failure.draw in explicit and not self._at_smallest(exc.failure.draw):
                return self._shrunk_instead(exc.failure)
            return exc.failure
        except Flaky as exc:
            result.timings["run_s"] = stats.run_s
            why = f"The {name} artifact gives different verdicts on the same input"
            raise Stop("nondeterministic", f"{why} {header}: {exc}", f"{why}: {exc}", "nondeterministic") from None
        except HypothesisException:
            if stats.examples == 0:
                tried = (
                    f"({stats.rejected} tried), so nothing was checked: fix dims=/inputs= so eager accepts them. "
                    f"Inputs: {self.check.plan.describe()}"
                )
                raise Stop(
                    "skipped",
                    f"Eager rejected every generated input {header} {tried}",
                    f"Eager rejected every generated input {tried}",
                    "rejected_inputs",
                ) from None
            raise
        finally:
            self._search_s = time.perf_counter() - t0
        return None

    def _at_smallest(self, draw: Draw) -> bool:
        """Nothing to shrink ``draw`` to: every size at its minimum, or a special-value probe (shrinking
        would lose the value that fails)."""
        if draw.probe is not None:
            return True
        dims = self.check.plan.dims
        return all(size <= dims[name].min for name, size in draw.sizes if name in dims)

    def _shrunk_instead(self, failure: Failure) -> Failure:
        """Hypothesis never shrinks an explicit example, so search the generated inputs for one failing
        with the same status and shrink it; the explicit failure stands if none is found."""
        test = self._hypothesis_test([])
        try:
            with torch.no_grad(), hypothesis_home(self.check.session.hypothesis_home):
                test()
        except _ExampleFailed as exc:
            return exc.failure if exc.failure.status == failure.status else failure
        except HypothesisException:  # e.g. eager rejected the generated inputs: keep the explicit failure
            return failure
        return failure

    def _record_stats(self) -> None:
        result, stats = self.check.result, self.stats
        result.timings["search_s"] = self._search_s
        result.timings["run_s"] = stats.run_s
        # search_s less these three parts is the rest (making inputs, hypothesis, guard checks).
        result.timings["reference_s"] = stats.reference_s
        result.timings["compare_s"] = stats.compare_s
        result.examples = stats.examples
        if self.check.options.compare is None and stats.examples:
            # compare= gives a verdict without numbers.
            result.max_abs_err, result.max_rel_err = stats.max_abs, stats.max_rel
        if stats.compared is not None:
            result.extra["compared"] = stats.compared.as_dict()
        if stats.sizes:
            result.extra["sizes"] = dict(sorted(stats.sizes.items()))
        if stats.per_input:
            result.extra["per_input"] = stats.per_input
        result.extra["rejected_examples"] = stats.rejected
        result.extra["paths"] = len(stats.paths)
        if self.updated and not self.check.mutates_state:
            result.findings.append(
                Finding(
                    "mutates_state",
                    f"forward updates module state on some inputs, not at the recorded call: {', '.join(sorted(self.updated)[:5])} "
                    "(compared after each such input)",
                )
            )
        if self.unguarded:
            (guard, first), more = next(iter(self.unguarded.items())), len(self.unguarded) - 1
            result.findings.append(
                Finding(
                    "unguarded_sizes",
                    f"{self.check.name} ran inputs outside the shapes its export proved ({guard}{f'; and {more} more' if more else ''}) "
                    f"and matched eager there (first: {first}): its runtime has no guard, so it serves those sizes "
                    "though torch.export did not prove them; they are checked by value only",
                )
            )
        if self.masked:
            result.findings.append(masked_finding(self.check.name, self.masked))
        vacuous_finding(result, stats)
        rejection_finding(result, stats, self.check.plan)
        noise_finding(result, self.noise, stats.examples)
        shipped = result.extra.get("shipped")
        if shipped is not None and self.check.scale_budget is not None and stats.examples:
            shipped["worst_of_scale"] = self.worst_of_scale

    def _passed(self) -> Outcome:
        check, result = self.check, self.check.result
        result.rtol, result.atol = _tolerances_used(check.backend, check.recorded.outputs, check.rtol, check.atol)
        compared = self.stats.compared
        if compared is not None and not compared.elements and not (check.mutates_state or check.mutates_input):
            # Matching on nothing is neither a pass nor an export defect: skipped, with what to change.
            return nothing_compared(check, self.stats)
        message = pass_message(check, self.stats)
        if check.post is not None:
            message += "; " + shipped_words(check, self.worst_of_scale)
        if self.noise:
            message += (
                f"; {len(self.noise)} input(s) differ beyond the default tolerances by float32 rounding only "
                "(numeric_noise: as close to a float64 run as eager is)"
            )
        return Outcome("pass", message)

    def _experiments(self, failure: Failure) -> None:
        """Run the cause experiments, the float64 oracle and localisation for the message."""
        causes.blame(failure, self.still_fails, self.check.plan, self.export_draw)
        t0 = time.perf_counter()
        if causes.runtime_optimizer(failure, self.check.backend, self.runnable, self.still_fails_on):
            self.check.result.timings["runtime_optimizer_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if causes.shipped_step(failure, self.check.post, self.still_fails_on):
            self.check.result.timings["shipped_step_s"] = time.perf_counter() - t0
        if (
            failure.noise is None
            and failure.status == "mismatch"
            and failure.comparison is not None
            and not failure.state
        ):
            # Explicit tolerances stay strict, but the message still says whether this is rounding.
            actual = self._run(self.runnable, failure.args, failure.kwargs)
            expected = self._expected(failure.draw, failure.args, failure.kwargs).outputs
            failure.noise = self._oracle(
                failure.draw, (failure.args, failure.kwargs), expected, actual, failure.comparison
            )
        self._localize(failure)

    def _localize(self, failure: Failure) -> None:
        """Find the first module that diverges on the shrunk input (localize.py)."""
        if failure.status not in ("mismatch", "roundtrip_mismatch") or failure.comparison is None or failure.guard:
            return
        if failure.state:
            return  # a state mismatch, not one forward's outputs: no module to walk
        if failure.comparison.custom_message is not None or failure.comparison.problem is not None:
            return  # compare= or a structural difference: no per-module numbers to compare
        if failure.noise is not None and failure.noise.rounding:
            return  # within eager's own rounding (explicit tolerances): no module is at fault
        if self.check.mutates_state:
            failure.no_localization = (
                "the module updates its state on every call, so a submodule's input is not replayable"
            )
            return
        reason = localize.unavailable(self.check.backend, self.runnable)
        if reason:
            failure.no_localization = f"not available for {self.check.name}: {reason}"
            return
        t0 = time.perf_counter()
        try:
            failure.diverges_at = localize.locate(
                self.check.backend,
                self.runnable,
                self.check.eager.module,
                failure.args,
                failure.kwargs,
                judge=lambda expected, actual: self.check.compare(expected, actual, custom=False),
                top_error=failure.comparison.max_abs,
            )
        except Exception as exc:  # noqa: BLE001 - localisation explains; it never changes a verdict
            failure.no_localization = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self.check.eager.restore()
            self.check.result.timings["localize_s"] = time.perf_counter() - t0


def _per_input(
    draw: Draw, failure: Failure | None, cmp: Comparison | None, verdict: NoiseVerdict | None
) -> dict[str, Any]:
    """One input's ``Stats.per_input`` entry, from numbers this attempt already has."""
    entry: dict[str, Any] = {"status": failure.status if failure is not None else "pass", "sizes": dict(draw.sizes)}
    if cmp is not None and cmp.problem is None and cmp.custom_message is None:
        entry["max_abs"] = cmp.max_abs
        entry["allowed"] = cmp.allowed
    worst = verdict.worst if verdict is not None else None
    if worst is not None and verdict is not None:
        entry["float64"] = {"eager": worst.eager_max, "artifact": worst.artifact_max, "rounding": verdict.rounding}
    return entry


def _tolerances_used(
    backend: Backend, outputs: object, rtol: float | None, atol: float | None
) -> tuple[float | None, float | None]:
    for _, leaf in flatten(outputs)[0]:
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            return tolerances_for(leaf.dtype, backend.relowered, rtol, atol)
    return rtol, atol
