"""[One Search] The inputs of one recorded call, drawn once for every backend, and eager's run of each.

A test's checks used to be one search per backend: each drew its own inputs and ran eager
on every one of them again, so on a model whose forward is what costs, three backends paid
eager's forwards three times for a verdict that needs them once (measured: 650 s of eager
for ~200 s of inputs on a 3-D segmentation network). As polygraphy's ``Comparator`` feeds
one data loader to every runner, the test's process now draws the inputs once per recorded
call and device, runs eager on each once, and every backend's forked child checks its
artifact on those same inputs against those same outputs (inherited through the fork,
copy-on-write, never copied per child).

The draws are hypothesis's: the explicit inputs (``explicit_draws``), then what hypothesis
generates from ``inputs.strategies.draws`` under one key per test and device, with one seed
(derandomized from the key under ``CI``; drawn once per run locally, and shared). A backend
whose artifact fails one of the shared inputs goes on to search on its own
(``search.search``) with the same key, seed and explicit inputs: hypothesis generates the same
inputs in the same order up to that failure (every earlier one passed or was rejected by eager
alike, the only outcomes its generator sees), then shrinks it. The example database is read
here (past failures are replayed for every backend), written only by a shrinking backend.

The rest of eager's work for the checks is made here once too: eager's latency at the recorded
input, eager at the undeclared dims' nearby sizes ([Static Sizes Once]) and at each Python
scalar's other value ([Baked Scalars Once], for ``side_effects.baked_arguments``); the
determinism probe is the prelude's, also once. The float64 oracle cannot be: which inputs need
it depends on each artifact, so the first child that needs one makes it and the others load it
([Float64 Once], ``reference/noise.py``, through ``SharedInputs.float64`` named here).

[Search Budget] The time the shared inputs may take is bounded by the budget (``search_budget.py``:
what it counts, and what it leaves out first): eager's runs here may take ``EAGER_SHARE`` of it,
each artifact's the rest. The inputs are tried most valuable first (the recorded call, each
declared dim's min and max, which are never left out, then the export example, the small
probes, the special values, then the drawn inputs), so the drawn inputs go first, then the
least valuable probes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._compat import add_database_digest, is_in_ci, plugin_modules_not_local
from ..inputs.specs import InputPlan
from ..inputs.strategies import Draw, draws, materialize, probe_draws, recorded_draw, special_probes
from ..options import Options
from ..reference.eager import Eager, EagerCall, ModelRaised, nbytes
from ..reference.noise import Float64Store
from ..results.report import Result
from . import static_sizes
from .latency import time_calls
from .search_budget import ALWAYS, Budget
from .side_effects import varied_scalars

#: The share of the budget eager's runs of the shared inputs may take; each backend's artifact runs
#: on them take the rest (they run side by side, one child per backend), so a row's checks beyond
#: its export stay within the budget: an input costs about one forward on each side.
EAGER_SHARE = 0.5
#: Eager outputs held for the children beyond this many bytes are not kept: the child runs
#: eager itself on those inputs (a 268 MB output x 35 inputs would otherwise be held at once).
HOLD_BYTES = 1 << 30


@dataclass
class SharedInputs:
    """The inputs every backend's check of one call tries, with eager's run of each."""

    key: str  # hypothesis's database key and derandomization digest: one per test and device
    seed: int | None  # hypothesis's seed (None: derandomized from the key, in CI)
    explicit: list[Draw]  # tried first, most valuable first
    kinds: dict[Draw, str]  # what each explicit input is ("recorded", "bounds", "export", "probe", "special")
    drawn: list[Draw] = field(default_factory=list)  # hypothesis's draws within the budget, in its order
    calls: dict[Draw, EagerCall] = field(default_factory=dict)  # eager's run, held for the children
    rejected: set[Draw] = field(default_factory=set)  # inputs eager refuses
    unheld: set[Draw] = field(default_factory=set)  # accepted by eager, outputs not held (HOLD_BYTES)
    untried: dict[str, int] = field(default_factory=dict)  # what the budget left, by kind ("drawn", "probe", ...)
    budget: Budget = field(default_factory=lambda: Budget(math.inf, "off"))
    spent_s: float = 0.0  # eager's time on the inputs above
    extra_s: float = 0.0  # [Search Budget] eager's time here on the findings (latency, static sizes), also counted
    skipped: list[str] = field(default_factory=list)  # findings the budget left out here ("latency", ...)
    wall_s: float | None = None  # all of draw_once's time (hypothesis's drawing too): the checks' clocks start from it
    eager_ms: float | None = None  # eager's latency at the recorded input, timed once for every backend (latency.py)
    sizes: dict[Any, EagerCall | None] = field(
        default_factory=dict
    )  # [Static Sizes Once] eager at the undeclared dims' nearby sizes
    float64: Float64Store | None = (
        None  # [Float64 Once] the oracle's float64 outputs, made by the first child that needs them
    )

    def seen(self, draw: Draw) -> bool:
        """Eager has run ``draw`` here (held, rejected, or accepted and not held)."""
        return draw in self.calls or draw in self.rejected or draw in self.unheld

    @property
    def tried(self) -> list[Draw]:
        """Every input a check tries, in order (rejected ones included: they count as rejected)."""
        return [d for d in [*self.explicit, *self.drawn] if self.seen(d)]

    def expected(self, draw: Draw) -> EagerCall | None:
        """Eager's run of ``draw`` as held, or None (not a shared input, or not held: run it)."""
        return self.calls.get(draw)


def bounds_draws(plan: InputPlan) -> list[Draw]:
    """[Declared Bounds] Every declared dim at its min, and at its max as the memory budget
    clipped it (a ``size_budget`` finding says so): a runtime's bound (a memory plan, a
    TensorRT profile, a static ONNX dim) is found on every run, not when hypothesis picks it."""
    if not plan.dims:
        return []
    base = recorded_draw(plan)
    low = tuple(sorted((name, d.min) for name, d in plan.dims.items()))
    high = tuple(sorted((name, plan.draw_max(name)) for name, d in plan.dims.items()))
    return [dataclasses.replace(base, sizes=low), dataclasses.replace(base, sizes=high)]


def grown_draw(plan: InputPlan) -> Draw:
    """The export example of a backend with dynamic shapes: dims of size 0/1 grown to 2."""
    draw = recorded_draw(plan)
    sizes = {dim: (2 if size < 2 and plan.dims[dim].max >= 2 else size) for dim, size in draw.sizes}
    return dataclasses.replace(draw, sizes=tuple(sorted(sizes.items())))


def explicit_draws(plan: InputPlan, export_draw: Draw, special_values: bool) -> dict[Draw, str]:
    """The inputs tried before any drawn one, most valuable first, each once (d908a27), by kind."""
    kinds: dict[Draw, str] = {}
    entries = [
        (recorded_draw(plan), "recorded"),
        *((d, "bounds") for d in bounds_draws(plan)),
        (export_draw, "export"),
        *((d, "probe") for d in probe_draws(plan)),
    ]
    if special_values:
        entries += [(d, "special") for d in special_probes(plan)]
    for draw, kind in entries:
        kinds.setdefault(draw, kind)
    return kinds


def hypothesis_test(
    target: Callable[[Draw], None],
    plan: InputPlan,
    options: Options,
    *,
    key: str,
    seed: int | None,
    database: Any,
    explicit: list[Draw],
    shrink: bool,
) -> Any:
    """The hypothesis test over ``plan`` that calls ``target`` on each draw. The test function's
    source is this one (its digest seeds a derandomized run), so the shared draws and a failing
    backend's own search generate the same inputs in the same order."""
    from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
    from hypothesis import seed as hseed

    plugin_modules_not_local()  # [Own Constants] the same draws installed editable or from a wheel

    def probe(draw: Draw) -> None:  # a plain function: hypothesis sets attributes on it
        target(draw)

    test = given(draws(plan, special_values=options.special_values, vary_scalars=options.vary_scalars))(probe)
    for draw in reversed(explicit):  # explicit examples run in decorator order, outermost first
        test = example(draw)(test)
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    in_ci = is_in_ci()
    test = settings(
        max_examples=options.examples,
        deadline=None,
        database=None if in_ci else database,
        derandomize=in_ci and seed is None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=phases,
        print_blob=False,
    )(test)
    if seed is not None:
        test = hseed(seed)(test)
    # [Database Keys] hypothesis keys its example database by the function's source: add a digest per key.
    add_database_digest(test, key.encode())
    return test


class _Drawing:
    """One call's shared draw under way: each input tried at most once, eager run on it where the
    budget's eager share covers one more input and its outputs fit what is held; what the later
    stages may still afford. Its state (bytes held, inputs run, seconds deferred to the children)
    is shared by the explicit inputs, hypothesis's draws and the scalars' other values."""

    def __init__(
        self, eager: Eager, plan: InputPlan, shared: SharedInputs, recorded: tuple[Draw, EagerCall], started: float
    ) -> None:
        self.eager, self.plan, self.shared, self.recorded, self.started = eager, plan, shared, recorded, started
        self.held = 0  # bytes of eager's outputs held for the children (at most HOLD_BYTES)
        self.ran = 0  # inputs eager ran here
        # [Unheld Not Run Here] An input whose outputs would not fit what is held (HOLD_BYTES), estimated
        # from the recorded call's output bytes per input byte, is not run here: a child runs eager on an
        # unheld input itself, so running it here too paid each such forward twice (a 268 MB output, 10
        # examples: ~15 of its 18 inputs, 30% of a trace check's time; then, with the estimate made only
        # after the first output that did not fit, still the batch range's max, 1.07 GB, once on each side).
        # Its estimated seconds (the mean so far) still count against eager's share of the budget.
        self.per_input_byte = output_bytes_per_input_byte(
            recorded[1], _recorded_inputs(plan, recorded[0], eager.device)
        )
        self.deferred_s = 0.0
        self.met: set[Draw] = set()  # what hypothesis drew so far, and the explicit inputs (``draw``)

    def run(self, draw: Draw, kind: str) -> None:
        """Eager on ``draw`` (of ``kind``: ``recorded``, ``drawn``, ...), unless tried already, past the
        budget's eager share (``untried``), refused by the model (``rejected``) or too large to hold (``unheld``)."""
        shared, recorded = self.shared, self.recorded
        if shared.seen(draw):
            return
        # Tried where eager's share covers one more input at the mean so far (the budget, not one input past it).
        mean_s = shared.spent_s / self.ran if self.ran else 0.0
        if kind not in ALWAYS and shared.spent_s + self.deferred_s + mean_s > EAGER_SHARE * shared.budget.limit_s:
            shared.untried[kind] = shared.untried.get(kind, 0) + 1
            return
        if draw == recorded[0]:
            call = recorded[1]
        else:
            args, kwargs = materialize(self.plan, draw, self.eager.device)
            if self.held + self.per_input_byte * nbytes((args, kwargs)) > HOLD_BYTES:
                shared.unheld.add(draw)  # eager runs it in each child that tries it (search.py)
                self.deferred_s += mean_s if self.ran else recorded[1].seconds
                return
            self.ran += 1
            t0 = time.perf_counter()
            try:
                call = self.eager(args, kwargs, trace_lines=True)
            except ModelRaised:  # eager refuses the input: no example
                shared.rejected.add(draw)
                return
            finally:
                shared.spent_s += time.perf_counter() - t0
        size = nbytes(call.outputs)
        if self.held + size > HOLD_BYTES:
            shared.unheld.add(draw)
            return
        self.held += size
        shared.calls[draw] = dataclasses.replace(call, inputs_after=((), {}))

    def generated(self, draw: Draw) -> None:
        """hypothesis's test body: a new draw is run and kept as ``drawn``; one eager refused is rejected."""
        if draw not in self.met:
            self.met.add(draw)
            self.run(draw, "drawn")
            if self.shared.seen(draw):
                self.shared.drawn.append(draw)
        if draw in self.shared.rejected:
            from hypothesis import reject

            reject()

    def draw(self, options: Options, database: Any) -> None:
        """hypothesis's draws past the explicit inputs, each run by ``generated`` (the examples
        database only read: each check's own search writes its failures)."""
        from hypothesis.database import ReadOnlyDatabase
        from hypothesis.errors import HypothesisException

        self.met.update(self.shared.kinds)  # tried already, each under its own kind
        test = hypothesis_test(
            self.generated,
            self.plan,
            options,
            key=self.shared.key,
            seed=self.shared.seed,
            database=None if database is None else ReadOnlyDatabase(database),
            explicit=[],
            shrink=False,
        )
        try:
            test()
        except HypothesisException:
            pass  # eager rejected everything (Unsatisfiable), a health check: each check's own search says so

    def affords(self, what: str) -> bool:
        """[Search Budget] Findings go before any input: eager's side of them only where every shared
        input was tried and the budget covers what is spent here, each check's artifact on the same
        inputs (about eager's time on them) and a forward on each side (DenseNet169 3-D at 15 s: 2 s of
        eager's static sizes here while every check left inputs untried). Else ``what`` is skipped."""
        shared = self.shared
        spent = time.perf_counter() - self.started + shared.spent_s + 2 * self.recorded[1].seconds
        if not shared.untried and spent <= shared.budget.limit_s:
            return True
        shared.skipped.append(what)
        return False

    def eager_findings(self, options: Options, result: Result) -> None:
        """Eager's side of the findings every check makes, where ``affords`` allows: its latency at
        the recorded input, and its runs at the undeclared dims' nearby sizes (static_sizes.py)."""
        eager, plan, shared, recorded, device = self.eager, self.plan, self.shared, self.recorded, self.eager.device
        module = eager.module
        t0 = time.perf_counter()
        try:
            if self.affords("latency"):
                inputs = _recorded_inputs(plan, recorded[0], device)
                shared.eager_ms = time_calls(lambda a, k: module(*a, **k), device, *inputs)
        except Exception:  # noqa: BLE001 - the user's model, called directly, may raise anything; each check times eager itself
            shared.eager_ms = None
        finally:
            shared.extra_s += time.perf_counter() - t0
        if not static_sizes.declared_in(options) and self.affords("static_size probes"):
            t0 = time.perf_counter()
            recorded_inputs = _recorded_inputs(plan, recorded[0], device)
            forward_s = recorded[1].seconds
            until = self.started + shared.budget.limit_s - shared.spent_s - 2 * forward_s
            shared.sizes = static_sizes.eager_runs(
                eager,
                plan,
                recorded_inputs,
                shared.spent_s,
                HOLD_BYTES - self.held,
                per_input_byte=self.per_input_byte,
                until=until,
            )
            shared.extra_s += time.perf_counter() - t0
            result.timings["shared_static_size_s"] = time.perf_counter() - t0


def draw_once(
    eager: Eager,
    plan: InputPlan,
    options: Options,
    session: Any,
    recorded: tuple[Draw, EagerCall],
    *,
    body_s: float | None,
    result: Result,
) -> SharedInputs:
    """The shared inputs of one call and device: drawn, eager run on each within the budget.
    Runs in the test's process before the first check forks (prelude.EagerOnce)."""
    started = time.perf_counter()
    device = eager.device
    kinds = explicit_draws(plan, grown_draw(plan), options.special_values)
    key = f"{session.nodeid or session.test or type(eager.module).__qualname__}::{device}"
    seed = options.seed if options.seed is not None else (None if is_in_ci() else random.getrandbits(64))
    shared = SharedInputs(key, seed, list(kinds), kinds)
    shared.budget = Budget.resolve(options, body_s, recorded[1].seconds)
    drawing = _Drawing(eager, plan, shared, recorded, started)
    for draw, kind in kinds.items():
        drawing.run(draw, kind)
    drawing.draw(options, session.database)
    if not options.vary_scalars:
        # [Baked Scalars Once] eager at each Python scalar's other value, for every backend's baked_argument check.
        for _, draw in varied_scalars(plan, recorded[0]).values():
            drawing.run(draw, "scalar")
    # [Float64 Once] (noise.py): named here, before the fork, so every child finds what another computed.
    shared.float64 = Float64Store({d: str(i) for i, d in enumerate(shared.tried)}, HOLD_BYTES)
    # [What The Search Spent] eager's forwards on the shared inputs, on every row they serve (reference_s
    # is a check's own eager time, 0 where everything it needed was shared).
    result.timings["shared_reference_s"] = shared.spent_s
    drawing.eager_findings(options, result)
    shared.wall_s = time.perf_counter() - started
    result.timings["shared_s"] = shared.wall_s
    return shared


def _recorded_inputs(plan: InputPlan, draw: Draw, device: str) -> tuple[Any, Any]:
    return materialize(plan, draw, device)


@contextlib.contextmanager
def hypothesis_home(directory: str | None) -> Any:
    """hypothesis's own files (its constants cache) under ``directory``, never a new .hypothesis/ in the user's repo."""
    from hypothesis import configuration

    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(
        directory or os.path.join(tempfile.gettempdir(), "pytest-torchexport-hypothesis")
    )
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def output_bytes_per_input_byte(call: EagerCall, inputs: tuple[Any, Any]) -> float:
    """The recorded call's output bytes per input byte: what an input's outputs are estimated at
    before eager runs it ([Unheld Not Run Here])."""
    return nbytes(call.outputs) / max(1, nbytes(inputs))


__all__ = [
    "SharedInputs",
    "bounds_draws",
    "draw_once",
    "explicit_draws",
    "grown_draw",
    "hypothesis_home",
    "hypothesis_test",
]
