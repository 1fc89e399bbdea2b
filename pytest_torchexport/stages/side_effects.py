"""What a forward does besides returning, and whether the artifact does it too.

Determinism first (parity with a nondeterministic model is undefined), then in-place
updates of inputs and buffers, which exported graphs drop, then Python scalars an
artifact may have baked in.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import TYPE_CHECKING, Any

import torch

from .._compat import quiet_torch
from ..inputs.strategies import Draw, materialize, summarize
from ..reference.compare import Comparison, compare, equal_trees
from ..reference.eager import Eager, ModelRaised, restore, snapshot
from ..results import explain
from ..results.outcome import Stop
from ..results.report import Finding, Result, tag
from .check import Check

if TYPE_CHECKING:
    from ..inputs.specs import InputPlan


def side_effect_findings(
    result: Result,
    mutates_input: bool,
    changed_state: list[str],
    module: torch.nn.Module | None = None,
) -> None:
    if mutates_input:
        result.findings.append(Finding("mutates_input", "forward modifies its input tensors in place"))
    if changed_state:
        site = update_site(module, changed_state) if module is not None else None
        at = f" ({explain.where(*site)}: `{explain.source_line(*site)}`)" if site else ""
        result.findings.append(
            Finding(
                "mutates_state",
                f"forward updates module state on every call: {', '.join(changed_state[:5])}{at}",
                explain.where(*site) if site else None,
            )
        )


def update_site(module: torch.nn.Module, names: list[str]) -> tuple[str, int] | None:
    """The first line of the owner's ``forward`` that updates one of the buffers ``names``
    (an in-place method, augmented or indexed assignment, or rebinding), read from the source."""
    for name in names:
        owner_path, _, attr = name.rpartition(".")
        try:
            owner = module.get_submodule(owner_path) if owner_path else module
        except AttributeError:
            continue
        forward = getattr(type(owner), "forward", None)
        code = getattr(forward, "__code__", None)
        if code is None or not explain.is_model_file(code.co_filename):
            continue
        try:
            lines, start = inspect.getsourcelines(forward)  # type: ignore[arg-type]  # it has __code__ (above)
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError):
            continue
        found = [node.lineno for node in ast.walk(tree) if _updates(node, attr)]  # type: ignore[attr-defined]  # statements
        if found:
            return code.co_filename, start + min(found) - 1
    return None


def _is_self_attr(node: ast.AST, attr: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == attr
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )


def _updates(node: ast.AST, attr: str) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method = node.func.attr
        return method.endswith("_") and not method.startswith("_") and _is_self_attr(node.func.value, attr)
    if isinstance(node, ast.AugAssign):
        target = node.target.value if isinstance(node.target, ast.Subscript) else node.target
        return _is_self_attr(target, attr)
    if isinstance(node, ast.Assign):
        return any(_is_self_attr(t.value if isinstance(t, ast.Subscript) else t, attr) for t in node.targets)
    return False


def check_determinism(result: Result, eager: Eager, inputs: tuple[Any, Any], outputs: Any) -> None:
    """Eager twice on ``inputs`` (args, kwargs), then with another RNG seed: both must give ``outputs``."""
    again = eager(*inputs)
    if not equal_trees(outputs, again.outputs):
        _nondeterministic(
            result,
            "Eager disagrees with itself",
            "the same input and RNG seed give different outputs (a nondeterministic kernel?), so parity with an "
            "export is undefined and is not checked.",
        )
    other_seed = eager(*inputs, rng_seed=1)
    if not equal_trees(outputs, other_seed.outputs):
        _nondeterministic(
            result,
            "Eager output depends on the RNG",
            "forward draws random numbers even in eval mode (torch.randn_like, a dropout called with "
            "training=True, ...), so parity with an export is undefined and is not checked. Make the "
            "randomness an input to check this model.",
        )


def _nondeterministic(result: Result, headline: str, why: str) -> None:
    """[Eager Once] Raised once for every backend; each writes the message with its own header."""

    def written(header: str) -> str:
        return f"{headline} {header}: {why}"

    raise Stop("nondeterministic", written(tag(result)), f"{headline}: {why}", "nondeterministic", written=written)


def check_side_effects(check: Check) -> None:
    """The artifact must reproduce eager's in-place updates of the inputs and, call after call, of its state."""
    if check.mutates_input:
        _inputs_updated(check)
    if check.changed_state:
        _state_updated(check)


def _inputs_updated(check: Check) -> None:
    recorded, name = check.recorded, check.name
    try:
        _, art_after = check.run(check.artifacts.runnable, recorded.args, recorded.kwargs)  # type: ignore[union-attr]  # exported
    except Exception:  # noqa: BLE001 - reported by the search as a run_error
        return
    if not equal_trees(recorded.call.inputs_after, art_after):
        _recorded_input(check, compared=1)
        check.result.findings.append(
            Finding("side_effects", f"{name} does not reproduce the in-place update of the inputs")
        )
        why = (
            f"forward modifies its inputs in place; the {name} artifact does not "
            f"(ONNX and exported graphs return values, they do not write into the caller's tensors)."
        )
        raise Stop(
            "mismatch",
            f"Side effects differ from eager {check.header}\n{why}\n"
            f"Inputs: {check.plan.describe()}\n"
            "Return the updated tensor instead of mutating the input, or mark the backend known with xfail=.",
            why,
            "side_effects",
        )


def _replayed(check: Check) -> bool:
    """Whether the lockstep calls are the test's own sequence (it recorded several)."""
    return check.steps is not None and len(check.steps) > 1


def _state_updated(check: Check) -> None:
    """Eager and the artifact called in lockstep (the test's own calls, else 3 on the recorded input),
    so a lost buffer update shows on the second call."""
    recorded, eager, runnable = check.recorded, check.eager, check.artifacts.runnable  # type: ignore[union-attr]  # exported
    steps = (
        list(check.steps) if check.steps is not None and _replayed(check) else [(recorded.args, recorded.kwargs)] * 3
    )
    target = check.backend.artifact_module(runnable)
    saved = snapshot(target)
    compared: list[dict[str, Any]] = []  # each call's entry for the row's per_input
    try:
        with quiet_torch():
            for call, (step_args, step_kwargs) in enumerate(steps, start=1):
                expected = eager(step_args, step_kwargs, restore=False).outputs
                try:
                    actual, _ = check.run(runnable, step_args, step_kwargs)
                except Exception as exc:  # noqa: BLE001 - a call the search judges on its own
                    if call == 1:
                        raise
                    check.result.findings.append(
                        Finding(
                            "side_effects",
                            f"the {check.name} artifact raised at call {call} of the test's sequence of calls "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                            "the state was compared up to that call",
                        )
                    )
                    break
                cmp = check.compare(expected, actual)
                compared += _call_entry(check, call, cmp)
                if not cmp.ok:
                    _state_differs(check, check.changed_state, call, cmp, compared)
                lost = _lost_state(check, target)
                if lost:
                    _state_differs(check, [lost[0]], call, lost[1], compared)
    finally:
        eager.restore()
        restore(target, saved)


def _call_entry(check: Check, call: int, cmp: Comparison) -> list[dict[str, Any]]:
    """One lockstep call's entry for the row's ``per_input`` (plotted by the HTML report)."""
    if cmp.problem is not None or cmp.custom_message is not None:
        return []
    return [
        {
            "status": "pass" if cmp.ok else "mismatch",
            "sizes": dict(sorted(check.plan.example_sizes().items())),
            "max_abs": cmp.max_abs,
            "allowed": cmp.allowed,
            "call": call,
        }
    ]


def _lost_state(check: Check, target: torch.nn.Module | None) -> tuple[str, Comparison] | None:
    """The first updated buffer whose artifact value differs from eager's (``compare=`` judges outputs only)."""
    if not isinstance(target, torch.nn.Module):
        return None  # an artifact without buffers (ONNX): its outputs tell
    mine = dict(target.named_buffers())
    state = check.eager.module.state_dict()
    for name in check.changed_state:
        theirs = mine.get(name) if name in mine else next((v for k, v in mine.items() if k.endswith("." + name)), None)
        if theirs is None or name not in state:
            continue
        cmp = compare(state[name], theirs, rtol=check.rtol, atol=check.atol)
        if not cmp.ok:
            return name, cmp
    return None


def _recorded_input(check: Check, compared: int, cmp: Comparison | None = None) -> None:
    """Fill the row's numbers for a verdict made by the lockstep calls, so the row matches its message."""
    result, recorded = check.result, check.recorded
    result.examples = compared
    result.failing_example = {
        "inputs": summarize(recorded.args, recorded.kwargs, check.plan),
        "draw": recorded.draw.describe(),
    }
    sizes = check.plan.example_sizes()
    if sizes:
        result.extra["sizes"] = {dim: [size, size] for dim, size in sorted(sizes.items())}
    if cmp is None or cmp.problem is not None or cmp.custom_message is not None:
        return
    result.max_abs_err, result.max_rel_err = cmp.max_abs, cmp.max_rel
    result.rtol, result.atol = cmp.rtol, cmp.atol
    result.extra["compared"] = {**cmp.compared.as_dict(), "inputs": compared}


def _state_differs(
    check: Check,
    changed: list[str],
    call: int,
    cmp: Comparison,
    compared: list[dict[str, Any]] | None = None,
) -> None:
    _recorded_input(check, call, cmp)
    if compared:
        check.result.extra["per_input"] = list(compared)
    name, state = check.name, ", ".join(changed[:3])
    if _replayed(check):
        assert check.steps is not None
        steps = len(check.steps)
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
    site = update_site(check.eager.module, changed)
    at = f" at {explain.where(*site)} (`{explain.source_line(*site)}`)" if site else ""
    check.result.findings.append(Finding("side_effects", finding, explain.where(*site) if site else None))
    cause = f"forward updates {state} on every call{at}; the outputs differ {why}."
    remedy = (
        "Return the updated state as an output instead of keeping it in a buffer, or use a backend that keeps "
        f'buffers (export, script); or mark it known with xfail={{"{name}": "reason"}}'
    )
    raise Stop(
        "mismatch",
        f"Side effects differ from eager {check.header}\n{cause}\n"
        f"Compared {call} call{'s' * (call != 1)} on the recorded input: {check.plan.describe()}\n"
        + "\n".join(cmp.lines())
        + f"\n{remedy}",
        cause,
        "side_effects",
    )


def varied_scalars(plan: InputPlan, recorded: Draw) -> dict[int, tuple[Any, Draw]]:
    """Each Python scalar argument at another value than the recorded one: (that value, the input)."""
    varied = {}
    for index, value in plan.scalars.items():
        other = (not value) if isinstance(value, bool) else (value + 1 if isinstance(value, int) else value * 1.5 + 0.5)
        varied[index] = other, dataclasses.replace(recorded, scalars=((index, other),))
    return varied


def baked_arguments(check: Check) -> None:
    """A finding where the artifact ignores a Python scalar argument ([One Search]: eager's runs are shared)."""
    plan, shared = check.plan, check.shared
    for index, (other, varied) in varied_scalars(plan, check.recorded.draw).items():
        value = plan.scalars[index]
        args, kwargs = materialize(plan, varied, check.device)
        if shared is not None and varied in shared.rejected:
            continue
        held = shared.expected(varied) if shared is not None else None
        try:
            expected = held.outputs if held is not None else check.eager(args, kwargs).outputs
        except ModelRaised:  # eager rejects the other value: nothing to learn
            continue
        name = plan.scalar_names.get(index, f"argument {index}")
        try:
            actual, _ = check.run(check.artifacts.runnable, args, kwargs)  # type: ignore[union-attr]  # exported
            verdict = None if check.compare(expected, actual).ok else "still computes as if"
        except Exception as exc:  # noqa: BLE001 - a runtime raises anything: the finding says so
            verdict = f"raises ({type(exc).__name__}) instead of computing with it; it was exported with"
        if verdict:
            check.result.findings.append(
                Finding(
                    "baked_argument",
                    f"{check.name} baked the argument {name}={value!r} into the artifact: called with "
                    f"{name}={other!r} it {verdict} {name}={value!r}. Checked with the recorded value only; "
                    "vary_scalars=True checks other values too",
                )
            )
