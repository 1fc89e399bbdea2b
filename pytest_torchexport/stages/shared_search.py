"""[One Search] The inputs of one recorded call, drawn once for every backend, and eager's run of each.

Eager runs each input once in the test's process; every backend's forked child compares its
artifact against those outputs. One hypothesis key and seed per test and device lets a failing
backend's own search regenerate the same inputs in order. [Search Budget] Eager may take
``EAGER_SHARE`` of the budget. See docs/howto-budget.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, configuration, example, given, reject, settings
from hypothesis import seed as hseed
from hypothesis.database import ExampleDatabase, ReadOnlyDatabase
from hypothesis.errors import HypothesisException

from .._compat import add_database_digest, hypothesis_home_directory, is_in_ci, plugin_modules_not_local
from ..inputs.specs import InputPlan
from ..inputs.strategies import Draw, draws, materialize, probe_draws, recorded_draw, special_probes
from ..isolation import runner
from ..options import Options
from ..reference.eager import Eager, EagerCall, ModelRaised, fresh, nbytes
from ..reference.noise import Float64Store
from ..results.report import Result
from . import static_sizes
from .latency import time_calls
from .search_budget import ALWAYS, Budget
from .session import Session
from .side_effects import varied_scalars

#: The share of the budget eager's runs may take; the artifacts' runs take the rest.
EAGER_SHARE = 0.5
#: Eager outputs beyond this many bytes are not held; a child runs eager itself on those inputs.
HOLD_BYTES = 1 << 30


@dataclass
class SharedInputs:
    """The inputs every backend's check of one call tries, with eager's run of each."""

    key: str  # hypothesis's database key, per test and device
    seed: int | None  # hypothesis's seed (None: derandomized from the key, in CI)
    explicit: list[Draw]  # tried first, most valuable first
    kinds: dict[Draw, str]  # "recorded", "bounds", "export", "probe" or "special"
    drawn: list[Draw] = field(default_factory=list)  # hypothesis's draws within the budget, in order
    calls: dict[Draw, EagerCall] = field(default_factory=dict)  # eager's run, held for the children
    #: The inputs of the held runs: drawing a tensor (float64, then cast) costs more than copying it,
    #: and every backend's child would draw the same ones again.
    inputs: dict[Draw, tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    rejected: set[Draw] = field(default_factory=set)  # inputs eager refuses
    unheld: set[Draw] = field(default_factory=set)  # accepted by eager, outputs not held (HOLD_BYTES)
    untried: dict[str, int] = field(default_factory=dict)  # inputs the budget left out, by kind
    budget: Budget = field(default_factory=lambda: Budget(math.inf, "off"))
    spent_s: float = 0.0  # eager's time on the inputs above
    extra_s: float = 0.0  # [Search Budget] eager's time on the findings (latency, static sizes)
    skipped: list[str] = field(default_factory=list)  # findings the budget left out here
    wall_s: float | None = None  # draw_once's time; the checks' clocks start from it
    eager_ms: float | None = None  # eager's latency at the recorded input (latency.py)
    #: eager at the undeclared dims' nearby sizes (static_sizes.py)
    sizes: dict[Any, EagerCall | None] = field(default_factory=dict)
    #: the float64 oracle's outputs, made by the first child that needs them
    float64: Float64Store | None = None
    held_bytes: int = 0  # of eager's outputs and their inputs held above (HOLD_BYTES)

    def seen(self, draw: Draw) -> bool:
        """Whether eager has run ``draw`` here (held, rejected, or not held)."""
        return draw in self.calls or draw in self.rejected or draw in self.unheld

    @property
    def tried(self) -> list[Draw]:
        """Every input a check tries, in order, rejected ones included."""
        return [d for d in [*self.explicit, *self.drawn] if self.seen(d)]

    def expected(self, draw: Draw) -> EagerCall | None:
        """Eager's held run of ``draw``, or None (the caller must run eager itself)."""
        return self.calls.get(draw)

    def held_inputs(self, draw: Draw) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Fresh copies of ``draw``'s inputs where they are held, else None (the caller draws them)."""
        held = self.inputs.get(draw)
        return None if held is None else fresh(*held)


def bounds_draws(plan: InputPlan) -> list[Draw]:
    """Every declared dim at its min and at its (budget-clipped) max, tried on every run."""
    if not plan.dims:
        return []
    base = recorded_draw(plan)
    low = tuple(sorted((name, d.min) for name, d in plan.dims.items()))
    high = tuple(sorted((name, plan.draw_max(name)) for name, d in plan.dims.items()))
    return [dataclasses.replace(base, sizes=low), dataclasses.replace(base, sizes=high)]


def grown_draw(plan: InputPlan) -> Draw:
    """The export example: dims of size 0/1 grown to 2."""
    draw = recorded_draw(plan)
    sizes = {dim: (2 if size < 2 and plan.dims[dim].max >= 2 else size) for dim, size in draw.sizes}
    return dataclasses.replace(draw, sizes=tuple(sorted(sizes.items())))


def explicit_draws(plan: InputPlan, export_draw: Draw, special_values: bool) -> dict[Draw, str]:
    """The inputs tried before any drawn one, most valuable first, by kind."""
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


def example_database(session: Session) -> ExampleDatabase | None:
    """The session's hypothesis example database, opened on first use (``Session.database``)."""
    if callable(session.database):
        session.database = session.database()
    return session.database


def hypothesis_test(
    target: Callable[[Draw], None],
    plan: InputPlan,
    options: Options,
    *,
    key: str,
    seed: int | None,
    database: ExampleDatabase | None,
    explicit: list[Draw],
    shrink: bool,
) -> Callable[[], None]:
    """The hypothesis test over ``plan``; the shared draws and a backend's own search both use it."""
    plugin_modules_not_local()  # [Own Constants] same draws, editable install or wheel

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
    # hypothesis keys its database by the function's source: add a digest per key.
    add_database_digest(test, key.encode())
    return test


class _Drawing:
    """One call's shared draw in progress: each input tried at most once, within budget and HOLD_BYTES."""

    def __init__(
        self, eager: Eager, plan: InputPlan, shared: SharedInputs, recorded: tuple[Draw, EagerCall], started: float
    ) -> None:
        self.eager, self.plan, self.shared, self.recorded, self.started = eager, plan, shared, recorded, started
        self.held = 0  # bytes of eager's outputs and their inputs held for the children (at most HOLD_BYTES)
        self.ran = 0  # inputs eager ran here
        # An input whose outputs would not fit HOLD_BYTES is left to the child, which runs eager on it anyway.
        self.recorded_inputs = _recorded_inputs(plan, recorded[0], eager.device)
        self.per_input_byte = output_bytes_per_input_byte(recorded[1], self.recorded_inputs)
        self.deferred_s = 0.0
        self.met: set[Draw] = set()  # hypothesis's draws so far, and the explicit inputs

    def run(self, draw: Draw, kind: str) -> None:
        """Run eager on ``draw`` unless tried already, over budget, rejected or too large to hold."""
        shared, recorded = self.shared, self.recorded
        if shared.seen(draw):
            return
        # Stop before, not after, the input that would pass eager's share.
        mean_s = shared.spent_s / self.ran if self.ran else 0.0
        if kind not in ALWAYS and shared.spent_s + self.deferred_s + mean_s > EAGER_SHARE * shared.budget.limit_s:
            shared.untried[kind] = shared.untried.get(kind, 0) + 1
            return
        if draw == recorded[0]:
            call, inputs = recorded[1], self.recorded_inputs
        else:
            args, kwargs = inputs = materialize(self.plan, draw, self.eager.device)
            if self.held + self.per_input_byte * nbytes((args, kwargs)) > HOLD_BYTES:
                shared.unheld.add(draw)  # eager runs it in each child that tries it (search.py)
                self.deferred_s += mean_s if self.ran else recorded[1].seconds
                return
            self.ran += 1
            runner.pump(0)  # [Held] this process's eager runs: a check that ended meanwhile lets the next go
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
        self._hold_inputs(draw, inputs)

    def _hold_inputs(self, draw: Draw, inputs: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        """Keep the inputs of a held run for the children where they fit HOLD_BYTES beside the
        outputs, and only on the CPU: a child copies them instead of drawing them again."""
        size = nbytes(inputs)
        if self.eager.device != "cpu" or self.held + size > HOLD_BYTES:
            return
        self.held += size
        self.shared.inputs[draw] = inputs

    def generated(self, draw: Draw) -> None:
        """hypothesis's test body: run each new draw once; reject what eager refused."""
        if draw not in self.met:
            self.met.add(draw)
            self.run(draw, "drawn")
            if self.shared.seen(draw):
                self.shared.drawn.append(draw)
        if draw in self.shared.rejected:
            reject()

    def draw(self, options: Options, database: ExampleDatabase | None) -> None:
        """hypothesis's draws past the explicit inputs; the database is only read here."""
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
            pass  # e.g. eager rejected everything: each check's own search reports it

    def affords(self, what: str) -> bool:
        """[Search Budget] Whether eager's side of a finding fits; findings go before inputs."""
        shared = self.shared
        spent = time.perf_counter() - self.started + shared.spent_s + 2 * self.recorded[1].seconds
        if not shared.untried and spent <= shared.budget.limit_s:
            return True
        shared.skipped.append(what)
        return False

    def eager_findings(self, options: Options, result: Result) -> None:
        """Eager's side of the latency and static-size findings."""
        eager, plan, shared, recorded, device = self.eager, self.plan, self.shared, self.recorded, self.eager.device
        module = eager.module
        t0 = time.perf_counter()
        try:
            if self.affords("latency"):
                inputs = _recorded_inputs(plan, recorded[0], device)
                shared.eager_ms = time_calls(lambda a, k: module(*a, **k), device, *inputs)
        except Exception:  # noqa: BLE001 - the user's model; each check then times eager itself
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
    session: Session,
    recorded: tuple[Draw, EagerCall],
    *,
    body_s: float | None,
    result: Result,
) -> SharedInputs:
    """Draw the shared inputs and run eager on each, before the first check forks."""
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
    drawing.draw(options, example_database(session))
    if not options.vary_scalars:
        # Eager at each scalar's other value, for side_effects.baked_arguments.
        for _, draw in varied_scalars(plan, recorded[0]).values():
            drawing.run(draw, "scalar")
    # Created before the fork, so each child finds the float64 outputs another computed.
    shared.float64 = Float64Store({d: str(i) for i, d in enumerate(shared.tried)}, HOLD_BYTES)
    result.timings["shared_reference_s"] = shared.spent_s
    drawing.eager_findings(options, result)
    shared.wall_s = time.perf_counter() - started
    shared.held_bytes = drawing.held
    result.timings["shared_s"] = shared.wall_s
    return shared


def _recorded_inputs(plan: InputPlan, draw: Draw, device: str) -> tuple[Any, Any]:
    return materialize(plan, draw, device)


@contextlib.contextmanager
def hypothesis_home(directory: str | None) -> Iterator[None]:
    """Put hypothesis's own files under ``directory``, not in the user's repo."""
    previous = hypothesis_home_directory(configuration.storage_directory(intent_to_write=False))
    configuration.set_hypothesis_home_dir(
        directory or os.path.join(tempfile.gettempdir(), "pytest-torchexport-hypothesis")
    )
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def output_bytes_per_input_byte(call: EagerCall, inputs: tuple[Any, Any]) -> float:
    """Output bytes per input byte of the recorded call."""
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
