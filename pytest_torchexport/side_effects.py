"""What a forward does besides returning, and whether the artifact does it too.

Determinism first (parity with a nondeterministic model is undefined), then in-place
updates of inputs and buffers, which exported graphs drop, then Python scalars an
artifact may have baked in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ._compat import quiet_torch
from .backends.base import Backend
from .compare import Comparison, compare, equal_trees
from .eager import Eager, run_artifact
from .options import Options
from .outcome import finish
from .report import Finding, Result
from .specs import InputPlan
from .strategies import Draw, materialize


def side_effect_findings(
    result: Result, plan: InputPlan, args: Any, kwargs: Any, after: Any, changed_state: list[str]
) -> None:
    if not equal_trees((args, kwargs), after):
        result.findings.append(Finding("mutates_input", "forward modifies its input tensors in place"))
    if changed_state:
        result.findings.append(
            Finding("mutates_state", f"forward updates module state on every call: {', '.join(changed_state[:5])}")
        )


def check_determinism(result: Result, eager: Eager, args: Any, kwargs: Any, outputs: Any, header: str) -> None:
    again = eager(args, kwargs)
    if not equal_trees(outputs, again.outputs):
        finish(
            result,
            "nondeterministic",
            f"Eager disagrees with itself {header}: the same input and RNG seed give different outputs "
            "(a nondeterministic kernel?), so parity with an export is undefined and is not checked.",
        )
    other_seed = eager(args, kwargs, rng_seed=1)
    if not equal_trees(outputs, other_seed.outputs):
        finish(
            result,
            "nondeterministic",
            f"Eager output depends on the RNG {header}: forward draws random numbers even in eval mode "
            "(torch.randn_like, a dropout called with training=True, ...), so parity with an export is "
            "undefined and is not checked. Make the randomness an input to check this model.",
        )


def check_side_effects(
    result: Result, backend: Backend, runnable: Any, eager: Eager, plan: InputPlan, args: Any, kwargs: Any,
    first: Any, changed_state: list[str], header: str, sequence: Any = None, *, options: Options,
) -> None:
    """The artifact must reproduce eager's side effects: its in-place updates of the inputs
    and, call after call, of its state. Outputs are compared as the search compares them,
    with the check's ``rtol``/``atol`` and ``compare=``."""
    kinds = {f.kind for f in result.findings}
    if "mutates_input" in kinds:
        try:
            with quiet_torch():
                _, art_after = run_artifact(lambda a, k: backend.run(runnable, a, k), args, kwargs)
        except Exception:  # noqa: BLE001 - reported by the search as a run_error
            return
        if not equal_trees(first.inputs_after, art_after):
            result.findings.append(Finding("side_effects", f"{result.backend} does not reproduce the in-place update of the inputs"))
            finish(
                result,
                "mismatch",
                f"Side effects differ from eager {header}\n"
                f"forward modifies its inputs in place; the {result.backend} artifact does not "
                f"(ONNX and exported graphs return values, they do not write into the caller's tensors).\n"
                f"Inputs: {plan.describe()}\n"
                "Return the updated tensor instead of mutating the input, or mark the backend known with xfail=.",
            )
    if changed_state:
        # Lockstep calls: a lost buffer update shows on the second call. The test's own
        # sequence of calls when it recorded several (a stream of chunks), else 3 calls on
        # the recorded input.
        steps = list(sequence) if sequence and len(sequence) > 1 else [(args, kwargs)] * 3
        target = backend.artifact_module(runnable)
        snapshot = buffers(target)
        rtol, atol = options.tolerance("rtol", result.backend), options.tolerance("atol", result.backend)
        try:
            with quiet_torch():
                for call, (step_args, step_kwargs) in enumerate(steps, start=1):
                    expected = eager(step_args, step_kwargs, restore=False).outputs
                    try:
                        actual, _ = run_artifact(lambda a, k: backend.run(runnable, a, k), step_args, step_kwargs)
                    except Exception as exc:  # noqa: BLE001 - a call the search judges on its own
                        if call == 1:
                            raise
                        result.findings.append(Finding(
                            "side_effects",
                            f"the {result.backend} artifact raised at call {call} of the test's sequence of calls "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                            "the state was compared up to that call",
                        ))
                        break
                    cmp = compare(expected, actual, relowered=backend.relowered, rtol=rtol, atol=atol,
                                  compare_fn=options.compare)
                    if not cmp.ok:
                        _state_differs(result, result.backend, changed_state, call, cmp, header, len(steps), sequence)
                    lost = _lost_state(eager, target, changed_state, rtol, atol)
                    if lost:
                        _state_differs(result, result.backend, [lost[0]], call, lost[1], header, len(steps), sequence)
        finally:
            eager.restore()
            restore_buffers(target, snapshot)


def _lost_state(
    eager: Eager, target: Any, changed: list[str], rtol: float | None, atol: float | None
) -> tuple[str, Comparison] | None:
    """The first updated buffer whose value in the artifact differs from eager's after a step,
    within the check's ``rtol``/``atol`` (a loose tolerance for outputs allows for the same
    rounding in the state that produced them; ``compare=`` judges outputs only)."""
    if not isinstance(target, torch.nn.Module):
        return None  # an artifact without buffers (ONNX): its outputs tell
    mine = dict(target.named_buffers())
    state = eager.module.state_dict()
    for name in changed:
        theirs = mine.get(name) if name in mine else next((v for k, v in mine.items() if k.endswith("." + name)), None)
        if theirs is None or name not in state:
            continue
        cmp = compare(state[name], theirs, rtol=rtol, atol=atol)
        if not cmp.ok:
            return name, cmp
    return None


def _state_differs(
    result: Result, name: str, changed: list[str], call: int, cmp: Comparison, header: str, steps: int = 3,
    sequence: Any = None,
) -> None:
    state = ", ".join(changed[:3])
    if sequence and len(sequence) > 1:
        why = (
            f"at call {call} of the {steps} calls the test made (replayed from the same starting state): "
            f"the {name} artifact does not carry the updates of {state} across calls"
        )
        finding = f"{name} loses the state update of {state} over the test's sequence of calls (call {call} of {steps})"
    elif call == 1:
        why = (
            f"on the first call already: the {name} artifact starts from other values of {state} than the module "
            "(exporting ran forward, which updated them, and the artifact kept the updated values)"
        )
        finding = f"{name} saved {state} as updated by the export run"
    else:
        why = f"after {call} calls on the same input: the {name} artifact does not carry the update of {state}"
        finding = f"{name} loses the state update of {state}"
    result.findings.append(Finding("side_effects", finding))
    finish(
        result,
        "mismatch",
        f"Side effects differ from eager {header}\nforward updates {state} on every call; the outputs differ "
        f"{why}.\n" + "\n".join(cmp.lines()),
    )


def baked_arguments(
    result: Result, backend: Backend, runnable: Any, eager: Eager, plan: InputPlan, draw: Draw, device: str,
    *, options: Options,
) -> None:
    """Python scalars are kept as recorded, but an artifact that ignores them is worth saying
    (judged with the check's ``rtol``/``atol`` and ``compare=``, as the search judges)."""
    rtol, atol = options.tolerance("rtol", result.backend), options.tolerance("atol", result.backend)
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
            same = compare(expected, actual, relowered=backend.relowered, rtol=rtol, atol=atol, compare_fn=options.compare)
            verdict = None if same.ok else "still computes as if"
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


def buffers(target: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(target, torch.nn.Module):
        return {k: v.detach().clone() for k, v in target.named_buffers()}
    return None


def restore_buffers(target: Any, snapshot: dict[str, torch.Tensor] | None) -> None:
    if snapshot is None:
        return
    with torch.no_grad():
        for k, v in target.named_buffers():
            if k in snapshot and v.shape == snapshot[k].shape:
                v.copy_(snapshot[k])
