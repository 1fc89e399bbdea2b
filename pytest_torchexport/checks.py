"""The engine: export once per backend and device, then check many inputs against the artifact.

``check()`` is the public entry point and works in a plain script. For each backend:

1. the eager reference (eval, ``no_grad``) runs the example: is it deterministic, does it
   mutate its inputs or buffers, was it in training mode;
2. the backend exports at the example (dynamic dims of size 0/1 grown to 2, since
   exporters specialize those sizes), saves to a fresh directory and loads back;
3. hypothesis draws inputs (sizes, values) and each one runs through the *loaded*
   artifact, the in-memory one (round trip) and eager (computed once per input);
4. the first failure is shrunk to the smallest input and explained.

This module never touches pytest objects; the plugin hands it a database and a name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import explain
from ._compat import quiet_torch
from .backends.base import Backend, ExportContext, load_backend
from .compare import Comparison, compare, equal_trees, flatten
from .eager import EAGER_MODE, Eager, module_name, run_artifact
from .errors import ExportMismatch, InvalidArgument
from .messages import Failure, Stats, explain_failure, pass_message, rejection_finding, track_vacuous, vacuous_finding
from .options import BUILTIN_BACKENDS, Options
from .report import Finding, Report, Result
from .specs import InputPlan, plan_inputs
from .strategies import Draw, draws, materialize, probe_draws, recorded_draw


@dataclass
class Session:
    """What outlives one check: the backend registry, the example database, naming."""

    backends: Mapping[str, Any] = field(default_factory=lambda: dict(BUILTIN_BACKENDS))
    database: Any = None  # a hypothesis ExampleDatabase, or None for none
    #: Where hypothesis may write its own files (its constants cache) during the search:
    #: pytest's cache dir under the plugin, never a new .hypothesis/ in the user's repo.
    hypothesis_home: str | None = None
    test: str | None = None
    nodeid: str | None = None
    user_file: str | None = None


def check(
    module: torch.nn.Module,
    /,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Report:
    """Export ``module`` on every selected backend and prove the artifacts match eager.

    >>> report = check(Gate(), (torch.randn(3, 4),), backends=["trace", "onnx"])
    >>> report.ok
    True

    Raises ``ExportMismatch`` (an ``AssertionError`` carrying the report) when any
    backend fails. Options are the marker's: ``backends``, ``devices``, ``examples``,
    ``dims``, ``dynamic``, ``inputs``, ``rtol``, ``atol``, ``xfail``, ``roundtrip``,
    ``seed``, ``special_values``, ``vary_scalars``, ``compare``.
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


def _register_objects(backends: Any, session: Session) -> Any:
    """``backends=[MyBackend()]``: third-party backends without the pytest hook."""
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
    backends: tuple[str, ...] | None = None,
    devices: tuple[str, ...] | None = None,
) -> Report:
    """Check every (backend, device) pair; never raises for a failing backend."""
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgument(f"check() takes an nn.Module, got {type(module).__name__}")
    if not isinstance(args, tuple):
        args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    plan = plan_inputs(module, args, kwargs, dims=options.dims, dynamic=options.dynamic, inputs=options.inputs)
    report = Report()
    for device in devices or resolve_devices(options.devices):
        for name in backends or options.backends:
            report.results.append(check_backend(module, plan, name, device, options, session))
    return report


def resolve_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    if "auto" in devices:
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    return devices


class _Stop(Exception):
    """Ends one backend's check early with a finished result."""


def check_backend(
    module: torch.nn.Module, plan: InputPlan, name: str, device: str, options: Options, session: Session
) -> Result:
    result = Result(
        backend=name,
        device=device,
        status="pass",
        module=module_name(module),
        nodeid=session.nodeid,
        test=session.test,
    )
    result.extra["eager_mode"] = EAGER_MODE
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"torchexport-{name}-") as scratch, _exact_cuda_math(device):
        try:
            _check_backend(module, plan, name, device, options, session, result, Path(scratch))
        except _Stop:
            pass
    result.timings["total_s"] = time.perf_counter() - started
    _apply_xfail(result, options)
    return result


def _apply_xfail(result: Result, options: Options) -> None:
    reason = options.xfail.get(result.backend)
    if reason is None or result.status in ("skipped", "nondeterministic"):
        return
    if result.failed:
        result.extra["xfail_of"] = result.status
        result.status = "xfail"
        result.message = f"expected failure ({reason}): {result.message}"
    else:
        result.status = "xpass"
        result.message = (
            f"{result.backend} passed but is marked xfail ({reason!r}); "
            f"the defect may be fixed: remove {result.backend!r} from xfail="
        )


def _finish(result: Result, status: str, message: str) -> None:
    result.status = status
    result.message = message
    raise _Stop


def _check_backend(
    module: torch.nn.Module,
    plan: InputPlan,
    name: str,
    device: str,
    options: Options,
    session: Session,
    result: Result,
    scratch: Path,
) -> None:
    header = f"[backend={name}, device={device}]"
    spec = session.backends.get(name)
    if spec is None:
        raise InvalidArgument(f"unknown torchexport backend {name!r}; valid backends: {', '.join(session.backends)}")
    backend = load_backend(spec)
    reason = backend.unavailable_reason()
    if reason is None and device == "cuda" and not torch.cuda.is_available():
        reason = "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    if reason:
        _finish(result, "skipped", f"{name} skipped: {reason}")

    rtol, atol = options.tolerance("rtol", name), options.tolerance("atol", name)
    eager = Eager(module, device)
    if eager.was_training:
        result.findings.append(
            Finding("training_mode", "the module was called in training mode; it was validated in eval mode, as it is served")
        )

    # 1. The example through eager: determinism and side effects.
    seed_draw = recorded_draw(plan)
    seed_args, seed_kwargs = materialize(plan, seed_draw, device)
    try:
        first = eager(seed_args, seed_kwargs, trace_lines=True, restore=False)
    except Exception as exc:  # noqa: BLE001 - the user's model raising is a usage problem
        raise InvalidArgument(
            f"{type(module).__name__} raises on its example inputs in eval mode under no_grad "
            f"({plan.describe()}): {type(exc).__name__}: {exc}"
        ) from exc
    changed_state = eager.state_changed()
    eager.restore()
    _side_effect_findings(result, plan, seed_args, seed_kwargs, first.inputs_after, changed_state)
    _check_determinism(result, eager, seed_args, seed_kwargs, first.outputs, header)

    # 2. Export once, at the example (grown where exporters would specialize).
    export_args, export_kwargs, export_draw, grown = _export_inputs(plan, backend, device)
    if grown:
        result.extra["export_sizes"] = {k: v[1] for k, v in grown.items()}
    ctx = ExportContext(device=device, plan=plan, module=eager.module, scratch=scratch)
    artifact, failure = _export(backend, eager, export_args, export_kwargs, ctx, result)
    relaxed = _violated_dims(failure, plan) if failure is not None and backend.dynamic else frozenset()
    if relaxed:
        # The declared range is impossible for this code: say so, then export with those
        # dims left to the exporter, so the search can show where the artifact breaks.
        result.findings.append(_specialized_finding(failure, name, relaxed, plan))
        ctx.relaxed = relaxed
        artifact, retry_failure = _export(backend, eager, export_args, export_kwargs, ctx, result)
        failure = retry_failure and failure
    if failure is not None:
        _export_failed(result, failure, name, "export", header, plan)
    for input_name, axis, dim, size in plan.static_in(_quiet(backend.input_shapes, artifact)):
        if not any(f.kind == "specialized_dim" and f"{dim!r}" in f.detail for f in result.findings):
            result.findings.append(
                Finding(
                    "specialized_dim",
                    f"{name} made dim {axis} of {input_name} ({dim!r}, declared dynamic) static: "
                    f"the artifact accepts only size {size}",
                )
            )

    # 3. Save, load back: the loaded artifact is what is validated.
    runnable, in_memory = artifact, None
    if options.roundtrip and backend.saveable:
        runnable, in_memory = _roundtrip(backend, artifact, ctx, result, header, scratch), artifact
    elif not backend.saveable:
        result.extra["roundtrip"] = f"not applicable: {name} artifacts are not saved"
    else:
        result.extra["roundtrip"] = "off (roundtrip=False)"
    for note in ctx.notes:
        result.findings.append(Finding("backend_note", note))
    fallback = getattr(getattr(runnable, "session", runnable), "fallback", None)
    if fallback:
        result.findings.append(Finding("device_fallback", fallback))

    # 4. Side effects the artifact must reproduce, arguments it may bake in, then the search.
    _check_side_effects(result, backend, runnable, eager, plan, seed_args, seed_kwargs, first, changed_state, header)
    if not options.vary_scalars:
        _baked_arguments(result, backend, runnable, eager, plan, seed_draw, device)
    _search(result, backend, runnable, in_memory, eager, plan, options, session, name, device, rtol, atol,
            export_draw, seed_draw, first, header)


def _export(
    backend: Backend, eager: Eager, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext, result: Result
) -> tuple[Any, Exception | None]:
    """One export of a fresh copy (exporters may touch the module), timed, warnings kept."""
    from .eager import copy_module

    module = copy_module(eager.module)
    t0 = time.perf_counter()
    artifact, failure = None, None
    with quiet_torch(fds=True) as captured:
        try:
            artifact = backend.export(module, args, kwargs, ctx)
        except Exception as exc:  # noqa: BLE001 - every exporter failure is a result
            failure = exc
    result.timings["export_s"] = result.timings.get("export_s", 0.0) + time.perf_counter() - t0
    for finding in explain.tracer_findings(captured.warnings, result.backend):
        if finding not in result.findings:
            result.findings.append(finding)
    return artifact, failure


def _quiet(fn: Any, *args: Any) -> Any:
    try:
        with quiet_torch():
            return fn(*args)
    except Exception:  # noqa: BLE001 - an optional introspection; never a verdict
        return None


_VIOLATED = re.compile(r"Constraints violated \(([^)]*)\)")


def _violated_dims(exc: BaseException, plan: InputPlan) -> frozenset[str]:
    match = _VIOLATED.search(explain.strip_ansi(str(exc)))
    if not match:
        return frozenset()
    return frozenset(d.strip() for d in match.group(1).split(",") if d.strip() in plan.dims)


def _specialized_finding(exc: BaseException, name: str, dims: frozenset[str], plan: InputPlan) -> Finding:
    text = explain.strip_ansi(str(exc))
    guards = [line.strip(" -") for line in text.splitlines() if line.strip().startswith("- ")][:2]
    declared = ", ".join(f"{d}=({plan.dims[d].min}, {plan.dims[d].max})" for d in sorted(dims))
    detail = (
        f"{name} cannot keep {', '.join(sorted(dims))} dynamic over the declared range ({declared}): "
        f"the model's code specializes it"
        + (f" ({'; '.join(guards)})" if guards else "")
        + "; exported again with the exporter choosing, so other sizes may fail"
    )
    return Finding("specialized_dim", detail)


def _export_inputs(
    plan: InputPlan, backend: Backend, device: str
) -> tuple[tuple[Any, ...], dict[str, Any], Draw, dict[str, tuple[int, int]]]:
    """The example, with dynamic dims of size 0 or 1 grown to 2 (exporters specialize 0/1)."""
    draw = recorded_draw(plan)
    sizes = dict(draw.sizes)
    grown: dict[str, tuple[int, int]] = {}
    if getattr(backend, "dynamic", True):
        for dim, size in sizes.items():
            if size < 2 and plan.dims[dim].max >= 2:
                grown[dim] = (size, 2)
                sizes[dim] = 2
        draw = dataclasses.replace(draw, sizes=tuple(sorted(sizes.items())))
    args, kwargs = materialize(plan, draw, device)
    return args, kwargs, draw, grown


def _export_failed(result: Result, exc: BaseException, name: str, stage: str, header: str, plan: InputPlan) -> None:
    finding = explain.error_finding(exc, name, stage)
    if finding:
        result.findings.append(finding)
    lines = [f"{name} could not {'export' if stage == 'export' else stage} the module {header}", explain.trim_error(exc)]
    if finding and finding.where:
        lines.append(f"Likely cause: {finding.detail}")
    lines.append(f"Example inputs: {plan.describe()}")
    lines.append(f'If {name} is not a path you ship, drop it with backends=[...] or mark it known with xfail={{"{name}": "reason"}}')
    _finish(result, "export_error" if stage in ("export", "save") else "load_error", "\n".join(lines))


def _roundtrip(backend: Backend, artifact: Any, ctx: ExportContext, result: Result, header: str, scratch: Path) -> Any:
    directory = scratch / "artifact"
    directory.mkdir()
    t0 = time.perf_counter()
    with quiet_torch():
        try:
            files = backend.save(artifact, directory)
        except Exception as exc:  # noqa: BLE001
            _export_failed(result, exc, result.backend, "save", header, ctx.plan)
    result.extra["artifact_files"] = [p.name for p in files]
    result.extra["artifact_bytes"] = sum(p.stat().st_size for p in files if p.exists())
    if len(files) > 1:
        result.findings.append(
            Finding(
                "external_data",
                f"the {result.backend} artifact is {len(files)} files ({', '.join(p.name for p in files)}): "
                "ship them together; the model file refers to the others by name",
            )
        )
    with quiet_torch():
        try:
            loaded = backend.load(directory, ctx)
        except Exception as exc:  # noqa: BLE001
            _export_failed(result, exc, result.backend, "load", header, ctx.plan)
    result.timings["load_s"] = time.perf_counter() - t0
    return loaded


def _side_effect_findings(
    result: Result, plan: InputPlan, args: Any, kwargs: Any, after: Any, changed_state: list[str]
) -> None:
    if not equal_trees((args, kwargs), after):
        result.findings.append(Finding("mutates_input", "forward modifies its input tensors in place"))
    if changed_state:
        result.findings.append(
            Finding("mutates_state", f"forward updates module state on every call: {', '.join(changed_state[:5])}")
        )


def _check_determinism(result: Result, eager: Eager, args: Any, kwargs: Any, outputs: Any, header: str) -> None:
    again = eager(args, kwargs)
    if not equal_trees(outputs, again.outputs):
        _finish(
            result,
            "nondeterministic",
            f"Eager disagrees with itself {header}: the same input and RNG seed give different outputs "
            "(a nondeterministic kernel?), so parity with an export is undefined and is not checked.",
        )
    other_seed = eager(args, kwargs, rng_seed=1)
    if not equal_trees(outputs, other_seed.outputs):
        _finish(
            result,
            "nondeterministic",
            f"Eager output depends on the RNG {header}: forward draws random numbers even in eval mode "
            "(torch.randn_like, a dropout called with training=True, ...), so parity with an export is "
            "undefined and is not checked. Make the randomness an input to check this model.",
        )


def _check_side_effects(
    result: Result, backend: Backend, runnable: Any, eager: Eager, plan: InputPlan, args: Any, kwargs: Any,
    first: Any, changed_state: list[str], header: str,
) -> None:
    kinds = {f.kind for f in result.findings}
    if "mutates_input" in kinds:
        try:
            with quiet_torch():
                _, art_after = run_artifact(lambda a, k: backend.run(runnable, a, k), args, kwargs)
        except Exception:  # noqa: BLE001 - reported by the search as a run_error
            return
        if not equal_trees(first.inputs_after, art_after):
            result.findings.append(Finding("side_effects", f"{result.backend} does not reproduce the in-place update of the inputs"))
            _finish(
                result,
                "mismatch",
                f"Side effects differ from eager {header}\n"
                f"forward modifies its inputs in place; the {result.backend} artifact does not "
                f"(ONNX and exported graphs return values, they do not write into the caller's tensors).\n"
                f"Inputs: {plan.describe()}\n"
                "Return the updated tensor instead of mutating the input, or mark the backend known with xfail=.",
            )
    if changed_state:
        # Lockstep calls: a lost buffer update shows on the second call.
        target = getattr(runnable, "module", runnable)
        snapshot = _buffers(target)
        try:
            with quiet_torch():
                for call in range(1, 4):
                    expected = eager(args, kwargs, restore=False).outputs
                    actual, _ = run_artifact(lambda a, k: backend.run(runnable, a, k), args, kwargs)
                    cmp = compare(expected, actual, relowered=backend.relowered)
                    if not cmp.ok:
                        _state_differs(result, result.backend, changed_state, call, cmp, header)
        finally:
            eager.restore()
            _restore_buffers(target, snapshot)


def _state_differs(result: Result, name: str, changed: list[str], call: int, cmp: Comparison, header: str) -> None:
    state = ", ".join(changed[:3])
    if call == 1:
        why = (
            f"on the first call already: the {name} artifact starts from other values of {state} than the module "
            "(exporting ran forward, which updated them, and the artifact kept the updated values)"
        )
        finding = f"{name} saved {state} as updated by the export run"
    else:
        why = f"after {call} calls on the same input: the {name} artifact does not carry the update of {state}"
        finding = f"{name} loses the state update of {state}"
    result.findings.append(Finding("side_effects", finding))
    _finish(
        result,
        "mismatch",
        f"Side effects differ from eager {header}\nforward updates {state} on every call; the outputs differ "
        f"{why}.\n" + "\n".join(cmp.lines()),
    )


def _baked_arguments(
    result: Result, backend: Backend, runnable: Any, eager: Eager, plan: InputPlan, draw: Draw, device: str
) -> None:
    """Python scalars are kept as recorded, but an artifact that ignores them is worth saying."""
    for index, value in plan.scalars.items():
        other = (not value) if isinstance(value, bool) else (value + 1 if isinstance(value, int) else value * 1.5 + 0.5)
        varied = dataclasses.replace(draw, scalars=((index, other),))
        args, kwargs = materialize(plan, varied, device)
        try:
            expected = eager(args, kwargs).outputs
        except Exception:  # noqa: BLE001 - eager rejects the other value: nothing to learn
            continue
        name = plan.scalar_names.get(index, f"argument {index}")
        try:
            with quiet_torch():
                actual, _ = run_artifact(lambda a, k: backend.run(runnable, a, k), args, kwargs)
            verdict = None if compare(expected, actual, relowered=backend.relowered).ok else "still computes as if"
        except Exception as exc:  # noqa: BLE001
            verdict = f"raises ({type(exc).__name__}) instead of computing with it; it was exported with"
        if verdict:
            result.findings.append(
                Finding(
                    "baked_argument",
                    f"{result.backend} baked the argument {name}={value!r} into the artifact: called with "
                    f"{name}={other!r} it {verdict} {name}={value!r}. Checked with the recorded value only; "
                    "vary_scalars=True checks other values too",
                )
            )


def _buffers(target: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(target, torch.nn.Module):
        return {k: v.detach().clone() for k, v in target.named_buffers()}
    return None


def _restore_buffers(target: Any, snapshot: dict[str, torch.Tensor] | None) -> None:
    if snapshot is None:
        return
    with torch.no_grad():
        for k, v in target.named_buffers():
            if k in snapshot and v.shape == snapshot[k].shape:
                v.copy_(snapshot[k])


class _Rejected(Exception):
    """Eager itself raises on a generated input: not a valid example."""


class _ExampleFailed(AssertionError):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.status)
        self.failure = failure


def _search(
    result: Result, backend: Backend, runnable: Any, in_memory: Any, eager: Eager, plan: InputPlan,
    options: Options, session: Session, name: str, device: str, rtol: float | None, atol: float | None,
    export_draw: Draw, seed_draw: Draw, first: Any, header: str,
) -> None:
    from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Flaky, HypothesisException

    stats = Stats()
    cache: dict[Draw, Any] = {}
    # A stateful module: eager restarts from its initial state on each input, so must the
    # artifact (its state after load), or every example would see a longer history.
    stateful = any(f.kind == "mutates_state" for f in result.findings)
    targets = [t for t in (getattr(runnable, "module", runnable), getattr(in_memory, "module", in_memory)) if stateful]
    snapshots = [(t, _buffers(t)) for t in targets]
    export_path = first.path if export_draw == seed_draw else None

    def expected_for(draw: Draw, args: Any, kwargs: Any) -> Any:
        if draw not in cache:
            cache[draw] = eager(args, kwargs, trace_lines=True)
        return cache[draw]

    def attempt(draw: Draw) -> tuple[Any, Failure | None, Comparison | None]:
        """One input through eager and the artifact: (eager call, failure or None, comparison).

        Touches no statistics, so the search and the cause experiments both use it.
        """
        args, kwargs = materialize(plan, draw, device)
        try:
            call = expected_for(draw, args, kwargs)
        except Exception:  # noqa: BLE001 - eager rejects the input
            raise _Rejected from None
        for target, snapshot in snapshots:
            _restore_buffers(target, snapshot)
        t0 = time.perf_counter()
        try:
            with quiet_torch():
                actual, _ = run_artifact(lambda a, k: backend.run(runnable, a, k), args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the artifact raised where eager did not
            return call, Failure("run_error", draw, args, kwargs, error=exc, path=call.path), None
        finally:
            stats.run_s += time.perf_counter() - t0
        cmp = compare(call.outputs, actual, relowered=backend.relowered, rtol=rtol, atol=atol, compare_fn=options.compare)
        guard = guard_for(draw, args, kwargs)
        if guard:
            status = "mismatch" if not cmp.ok else "run_error"
            return call, Failure(status, draw, args, kwargs, comparison=None if cmp.ok else cmp, path=call.path,
                                 guard=guard), cmp
        if cmp.ok:
            return call, None, cmp
        if in_memory is None:
            return call, Failure("mismatch", draw, args, kwargs, comparison=cmp, path=call.path), cmp
        # [Round Trip Blame] The in-memory artifact runs only when the loaded one fails: a
        # loaded artifact within tolerance of eager has no round-trip defect that matters.
        # If the in-memory one matches eager, the export was right and save/load broke it.
        for target, snapshot in snapshots:
            _restore_buffers(target, snapshot)
        with quiet_torch():
            mem, _ = run_artifact(lambda a, k: backend.run(in_memory, a, k), args, kwargs)
        mem_vs_eager = compare(call.outputs, mem, relowered=backend.relowered, rtol=rtol, atol=atol,
                               compare_fn=options.compare)
        if mem_vs_eager.ok:
            roundtrip = compare(mem, actual, relowered=backend.relowered, rtol=rtol, atol=atol)
            return call, Failure("roundtrip_mismatch", draw, args, kwargs, comparison=roundtrip, path=call.path), cmp
        return call, Failure("mismatch", draw, args, kwargs, comparison=cmp, path=call.path), cmp

    def probe(draw: Draw) -> None:
        try:
            call, failure, cmp = attempt(draw)
        except _Rejected:
            stats.rejected += 1
            from hypothesis import reject

            reject()
        stats.examples += 1
        if call.path is not None:
            stats.paths[call.path] = stats.paths.get(call.path, 0) + 1
        track_vacuous(stats, call.outputs)
        if cmp is not None and (failure is None or failure.guard is None):
            stats.max_abs = max(stats.max_abs, cmp.max_abs)
            stats.max_rel = max(stats.max_rel, cmp.max_rel)
        if failure is not None:
            stats.failed += 1
            if failure.path is not None:
                stats.failing_paths[failure.path] = stats.failing_paths.get(failure.path, 0) + 1
            raise _ExampleFailed(failure)

    def still_fails(draw: Draw) -> bool | None:
        """The verdict on a variant of the failing input; None when eager rejects it."""
        try:
            return attempt(draw)[1] is not None
        except _Rejected:
            return None

    guards: dict[tuple[Any, ...], str | None] = {}

    def guard_for(draw: Draw, args: Any, kwargs: Any) -> str | None:
        # torch.export's guards constrain shapes: one verdict per set of sizes.
        key = (draw.sizes, draw.scalars)
        if key not in guards:
            guards[key] = _quiet(backend.guard_violation, in_memory if in_memory is not None else runnable, args, kwargs)
        return guards[key]

    test = given(draws(plan, special_values=options.special_values, vary_scalars=options.vary_scalars))(probe)
    # Explicit examples run in decorator order, outermost first: the recorded call, the
    # export example, then the small probes.
    for draw in reversed([seed_draw, export_draw, *probe_draws(plan)]):
        test = example(draw)(test)
    test = settings(
        max_examples=options.examples,
        deadline=None,
        database=session.database,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        print_blob=False,
    )(test)
    if options.seed is not None:
        test = hseed(options.seed)(test)
    # [Database Keys] hypothesis keys its example database by the function's source, which
    # is this one inner function for every test and backend: add a digest per check.
    key = f"{session.nodeid or session.test or type(eager.module).__qualname__}::{name}::{device}"
    test.hypothesis.inner_test._hypothesis_internal_add_digest = key.encode()

    failure: Failure | None = None
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), _hypothesis_home(session.hypothesis_home):
            test()
    except _ExampleFailed as exc:
        failure = exc.failure
    except Flaky as exc:
        result.timings["run_s"] = stats.run_s
        _finish(result, "nondeterministic", f"The {name} artifact gives different verdicts on the same input {header}: {exc}")
    except HypothesisException:
        if stats.examples == 0:
            _finish(
                result,
                "skipped",
                f"Eager rejected every generated input {header} ({stats.rejected} tried), so nothing was checked: "
                f"fix dims=/inputs= so eager accepts them. Inputs: {plan.describe()}",
            )
        raise
    result.timings["search_s"] = time.perf_counter() - t0
    result.timings["run_s"] = stats.run_s
    result.examples = stats.examples
    if options.compare is None and stats.examples:
        # Numbers only where values were compared (compare= gives a verdict, no numbers).
        result.max_abs_err, result.max_rel_err = stats.max_abs, stats.max_rel
    result.extra["rejected_examples"] = stats.rejected
    result.extra["paths"] = len(stats.paths)
    vacuous_finding(result, stats)
    rejection_finding(result, stats, plan)
    if failure is None:
        result.rtol, result.atol = _tolerances_used(backend, first.outputs, rtol, atol)
        result.message = pass_message(result, stats, header, export_draw, seed_draw)
        return
    with torch.no_grad():
        _test_causes(failure, still_fails, plan, export_draw)
    explain_failure(result, failure, stats, backend, plan, options, session, name, header, export_path, rtol, atol,
                     eager.module, device, export_draw)


def _test_causes(failure: Failure, still_fails: Any, plan: InputPlan, export_draw: Draw) -> None:
    """[Cause Experiments] Blame a suspect only when undoing it makes the failing input pass.

    The shrunk input is the smallest that fails, so it holds *every* size at its minimum:
    a batch of 1 sits next to the sequence length that really broke the artifact, and a
    varied scalar next to a harmless batch size. One extra run per suspect tells them
    apart: the small dims grown to their export size, the varied scalars set back to the
    recorded values.
    """
    exported = dict(export_draw.sizes)
    sizes = dict(failure.draw.sizes)
    small = {d: exported[d] for d, v in sizes.items() if v < 2 and exported.get(d, 0) >= 2}
    if small:
        grown = dataclasses.replace(failure.draw, sizes=tuple(sorted({**sizes, **small}.items())))
        failure.small_dims_blamed = still_fails(grown) is False
    recorded = dict(plan.scalars)
    varied = {i: v for i, v in failure.draw.scalars if i in recorded and v != recorded[i]}
    if varied:
        restored = dataclasses.replace(failure.draw, scalars=tuple((i, recorded.get(i, v)) for i, v in failure.draw.scalars))
        if still_fails(restored) is False:
            failure.baked_scalars = [(plan.scalar_names.get(i, f"argument {i}"), recorded[i], v) for i, v in varied.items()]


@contextlib.contextmanager
def _exact_cuda_math(device: str) -> Any:
    """TF32 off while checking on CUDA: eager and artifact must both use full fp32 matmuls,
    or a 1e-3 TF32 rounding difference would pass for (or hide) an export defect."""
    if not device.startswith("cuda"):
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def _hypothesis_home(directory: str | None) -> Any:
    from hypothesis import configuration

    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(directory or os.path.join(tempfile.gettempdir(), "pytest-torchexport-hypothesis"))
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def _tolerances_used(backend: Backend, outputs: Any, rtol: float | None, atol: float | None) -> tuple[float | None, float | None]:
    from .compare import tolerances_for

    for _, leaf in flatten(outputs)[0]:
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            return tolerances_for(leaf.dtype, backend.relowered, rtol, atol)
    return rtol, atol


