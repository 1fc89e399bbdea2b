"""Export once at the example, save, and load back.

Dynamic dims of size 0 or 1 are grown to 2, where exporters would specialize; a declared range
the code cannot keep is relaxed and exported again, so the search can still show where the
artifact breaks. The search validates the *loaded* artifact. Submodules the test compiled in
place ([As Called]) are named in a failure's cause. See docs/one-check.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, cast

import torch

from .. import _compat
from .._compat import compiled_in_place, quiet_torch
from ..backends.base import Backend, ExportContext, PostProcessed
from ..cache import sources
from ..inputs.specs import InputPlan
from ..inputs.strategies import Draw, materialize, recorded_draw
from ..isolation import runner
from ..isolation.runner import THIS
from ..reference.compare import flatten, output_scales
from ..reference.eager import copy_module, reset_state, snapshot
from ..results import explain
from ..results.outcome import Stop
from ..results.report import ERROR_SITE_KINDS, CauseKind, Finding, Result
from .artifacts import keep, test_dirname
from .check import Artifacts, Check
from .standalone import preflight

if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")


def build(check: Check) -> Artifacts:
    """Export, then save and load back; a failure ends the check with its status (``Stop``)."""
    backend, plan, result, name = check.backend, check.plan, check.result, check.name
    export_args, export_kwargs, export_draw, grown = export_inputs(plan, backend, check.device)
    if grown:
        check.export_sizes = {k: v[1] for k, v in grown.items()}
        result.extra["export_sizes"] = dict(check.export_sizes)
    ctx = ExportContext(
        device=check.device,
        plan=plan,
        module=check.eager.module,
        scratch=check.scratch,
        shipped=check.options.onnx_shipped,
        captures=check.captures,
    )
    artifact, failure = export_once(check, export_args, export_kwargs, ctx)
    relaxed = violated_dims(failure, plan) if failure is not None and backend.dynamic else frozenset()
    if relaxed and failure is not None:
        # The declared range is impossible for this code: say so, and export again with those dims relaxed.
        options = check.options
        assumed = frozenset(
            d for d in relaxed if options.dynamic is None and options.inputs is None and d not in (options.dims or {})
        )
        result.findings.append(specialized_finding(failure, name, relaxed, plan, assumed))
        ctx.relaxed = relaxed
        artifact, retry_failure = export_once(check, export_args, export_kwargs, ctx)
        failure = retry_failure and failure
    _capture_timing(result, ctx)
    if failure is not None:
        export_failed(check, failure, "export")
    _static_dims(check, artifact)
    _post_processing(check, artifact)

    runnable, in_memory = artifact, None
    if check.options.roundtrip and backend.saveable:
        runnable, in_memory = roundtrip(check, artifact, ctx), artifact
        backend.set_aside(in_memory)  # kept only for round-trip blame from here on
    elif not backend.saveable:
        result.extra["roundtrip"] = f"not applicable: {name} artifacts are not saved"
    else:
        result.extra["roundtrip"] = "off (roundtrip=False)"
    for note in ctx.notes:
        result.findings.append(Finding("backend_note", note))
    fallback = backend.device_fallback(runnable)
    if fallback:
        result.findings.append(Finding("device_fallback", fallback))
    return Artifacts(runnable, in_memory, export_draw, ctx)


def _capture_timing(result: Result, ctx: ExportContext) -> None:
    """[Shared Capture] Record the capture used; its seconds are taken out of ``export_s``."""
    if ctx.capture is None:
        return
    result.extra["capture"] = ctx.capture
    result.timings["capture_s"] = ctx.capture_s
    result.timings["export_s"] = max(0.0, result.timings.get("export_s", 0.0) - ctx.own_capture_s)


def _post_processing(check: Check, artifact: object) -> None:
    """[ONNX As Shipped] Record the steps after the export and their error budget (explicit rtol/atol win)."""
    post = check.backend.post_processing(artifact) if isinstance(check.backend, PostProcessed) else None
    if post is None:
        return
    check.post = post
    if check.rtol is None and check.atol is None:
        check.scale_budget = post.budget
        check.scale_floor = output_scales(check.recorded.outputs)
    check.result.extra["shipped"] = {
        "steps": list(post.steps),
        "op_depth": post.op_depth,
        "budget": check.scale_budget,
        "budget_from": post.budget_from
        if check.scale_budget is not None
        else ("explicit rtol/atol" if post.budget is not None else "the backend's default tolerances"),
    }


def _static_dims(check: Check, artifact: object) -> None:
    """A ``specialized_dim`` finding for each dynamic dim the artifact fixed."""
    said: set[str] = set()
    for input_name, axis, dim, size in check.plan.static_in(
        quiet_call(check.result, check.backend.input_shapes, artifact)
    ):
        if dim in said:
            continue
        said.add(dim)
        check.result.findings.append(
            Finding(
                "specialized_dim",
                f"{check.name} made dim {axis} of {input_name} ({dim!r}, declared dynamic) static: "
                f"the artifact accepts only size {size}",
            )
        )


def _test_dirname(result: Result) -> str:
    return test_dirname(result.nodeid, result.test, result.module)


def export_once(
    check: Check, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
) -> tuple[Any, Exception | None]:
    """One timed export of a fresh copy (exporters may touch the module)."""
    result = check.result
    runner.stage(result, "export")
    # [Spare Copy] In a forked child, use the copy the test's process made; else make one.
    spare = check.eager.take_spare() if THIS.channel is not None else None
    module = spare if spare is not None else copy_module(check.eager.module)
    initial = snapshot(module) or {}
    t0 = time.perf_counter()
    artifact, failure = None, None
    with quiet_torch(fds=True) as captured:
        try:
            # In grad mode some exporters take other paths (T5's dynamo ONNX export fails to decompose).
            with torch.no_grad(), sources.reading(), _runs_forward(check):
                artifact = check.backend.export(module, args, kwargs, ctx)
        except Exception as exc:  # noqa: BLE001 - every exporter failure is a result
            failure = exc
    if artifact is not None:
        reset_state(
            check.backend.artifact_module(artifact), initial
        )  # a trace ran forward: restore the state the module started from
    result.timings["export_s"] = result.timings.get("export_s", 0.0) + time.perf_counter() - t0
    for finding in explain.tracer_findings(captured.warnings, result.backend):
        if finding not in result.findings:
            result.findings.append(finding)
    # Through _compat, so a test can patch it.
    deprecated = _compat.torchscript_deprecation(captured.warnings)
    if deprecated:
        result.extra["torchscript_deprecated"] = deprecated  # the session summary says it once
    return artifact, failure


#: [Sources] Backends whose export runs the forward in Python, so the files it runs are traced.
#: Dynamo exports are not (too slow); their source reads are collected instead.
TRACING_EXPORTS = ("trace", "onnx-legacy")


def _runs_forward(check: Check) -> contextlib.AbstractContextManager[None]:
    return sources.watching() if check.name in TRACING_EXPORTS else contextlib.nullcontext()


def quiet_call(result: Result, fn: Callable[..., Any], *args: Any) -> Any:
    """Call one of a backend's optional answers quietly; None and a ``backend_note`` if it raises."""
    try:
        with quiet_torch():
            return fn(*args)
    except Exception as exc:  # noqa: BLE001 - third-party backend code may raise anything
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        note = Finding(
            "backend_note",
            f"the {result.backend} backend's {getattr(fn, '__name__', 'answer')} raised {type(exc).__name__}"
            f"{': ' + first if first else ''}; the check went on without its answer",
        )
        if note not in result.findings:
            result.findings.append(note)
        return None


_VIOLATED = re.compile(r"Constraints violated \(([^)]*)\)")


def violated_dims(exc: BaseException, plan: InputPlan) -> frozenset[str]:
    match = _VIOLATED.search(explain.strip_ansi(str(exc)))
    if not match:
        return frozenset()
    return frozenset(d.strip() for d in match.group(1).split(",") if d.strip() in plan.dims)


def specialized_finding(
    exc: BaseException, name: str, dims: frozenset[str], plan: InputPlan, assumed: frozenset[str] = frozenset()
) -> Finding:
    """``assumed``: the dims nobody declared; the finding calls their range a guess."""
    text = explain.strip_ansi(str(exc))
    guards = [line.strip(" -") for line in text.splitlines() if line.strip().startswith("- ")][:2]
    declared = ", ".join(f"{d}=({plan.dims[d].min}, {plan.dims[d].max})" for d in sorted(dims))
    if not dims & assumed:
        over = f"the declared range ({declared})"
    else:
        which = "" if dims <= assumed else f" for {', '.join(sorted(dims & assumed))}"
        over = f"{declared}, the range the plugin assumed{which} (nothing declared it dynamic)"
    detail = (
        f"{name} cannot keep {', '.join(sorted(dims))} dynamic over {over}: "
        f"the model's code specializes it"
        + (f" ({'; '.join(guards)})" if guards else "")
        + "; exported again with the exporter choosing, so other sizes may fail"
    )
    return Finding("specialized_dim", detail)


def export_inputs(
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


def export_failed(check: Check, exc: BaseException, stage: str, *, saved: object = None) -> NoReturn:
    """End the check: ``stage`` ("export", "save" or "load") raised ``exc``; ``saved``: the
    in-memory artifact whose file a failed load read."""
    name = check.name
    if stage == "export" and _NO_KERNEL.search(str(exc)):
        # The ONNX backends open their onnxruntime session inside the export, to check the file:
        # a runtime that has no kernel for a node wrote nothing wrong, it cannot load what was written.
        stage = "load"
    finding = explain.error_finding(exc, name, stage, explain.forward_site(check.eager.module))
    if finding:
        # First: what ended the check is read before what the export noticed.
        check.result.findings.insert(0, finding)
    reason = explain.trim_error(exc)
    lines = [f"{name} could not {'export' if stage == 'export' else stage} the module {check.header}", reason]
    cause = with_cause(check.compiled, check.result.module, finding.detail if finding and finding.where else None)
    named = finding.kind if finding is not None and finding.kind in ERROR_SITE_KINDS else "error_site"
    kind: CauseKind = "compiled_parts" if check.compiled else cast(CauseKind, named)
    if cause is not None:
        lines.append(f"Likely cause: {cause}")
    else:  # no user line to blame
        cause, kind = _known_cause(check, finding, reason, stage, saved)
        lines.append(
            f"Likely cause: {cause or 'not known: the error above names no line of the model and no limit the plugin knows'}"
        )
        cause = cause or reason
    lines.append(f"Example inputs: {check.plan.describe()}")
    lines.append(
        f'If {name} is not a path you ship, drop it with backends=[...] or mark it known with xfail={{"{name}": "reason"}}'
    )
    raise Stop("export_error" if stage in ("export", "save") else "load_error", "\n".join(lines), cause, kind)


def _known_cause(
    check: Check, finding: Finding | None, reason: str, stage: str, saved: object = None
) -> tuple[str | None, CauseKind]:
    """The cause of an export error that names no line of the model, and its kind."""
    if stage == "save":
        return _unserializable(check.name, reason), "exporter_error"
    kernel = _no_kernel(check, reason)
    if kernel:
        return kernel, "unsupported_op"
    unreadable = _unreadable_constant(check.name, reason) or _unbound_size(check, reason, saved)
    if unreadable:
        return unreadable, "exporter_error"
    for explain_it, kind in (
        (_cache_out, "unsupported_output"),
        (_unkeyed, "unregistered_type"),
        (_untyped_input, "unregistered_type"),
    ):
        cause = explain_it(check, reason)
        if cause:
            return cause, cast(CauseKind, kind)
    source = _no_source(reason)
    if source:
        return source, "unsupported_python"
    if _TRACE_INPUT.search(reason):
        mixed = _mixed_mapping(check.recorded.outputs)
        if mixed is not None:
            return (
                f"{check.name} can output tensors, and tuples, lists or dicts of them whose values are all of one "
                f"type; the model returns a {mixed} mixing tensors and containers (hidden states or attentions as "
                "a tuple beside the tensors): return a tuple (return_dict=False), or check this call on export"
            ), "unsupported_output"
        return (
            f"{check.name} takes tensors, and tuples, lists or dicts of tensors whose values are all of one type; "
            "the call passes another value (a class of the user's, or a dict mixing lists and dicts): pass its "
            "tensors as arguments, or check this call on export"
        ), "exporter_error"
    if finding is not None and finding.kind in ERROR_SITE_KINDS and finding.kind != "error_site":
        return finding.detail, cast(CauseKind, finding.kind)
    return None, "exporter_error"


_TRACE_INPUT = re.compile(r"inputs to traced functions must have consistent type|' cannot be traced\. Only Tensors")
_UNTYPED_INPUT = re.compile(r"Unsupported input type <class '([\w.]+)'>")


def _untyped_input(check: Check, reason: str) -> str | None:
    """torch.export's refusal of an argument of a class pytree does not know (a user's state object)."""
    found = _named_class(check, _UNTYPED_INPUT, reason, otherwise="the call passes a")
    if found is None:
        return None
    cls, where = found
    return (
        f"{where}, a class pytree does not know, and {check.name} takes only tensors and the containers pytree "
        f"knows: pass its tensors as arguments, or register {cls} (torch.export.register_dataclass for a "
        "dataclass, torch.utils._pytree.register_pytree_node with flatten_with_keys_fn otherwise)"
    )


def _named_class(check: Check, pattern: re.Pattern[str], reason: str, otherwise: str) -> tuple[str, str] | None:
    """The class an exporter's error names (``pattern``'s group 1), and where the call holds it: the
    argument of that class by name, else ``otherwise`` followed by the class."""
    found = pattern.search(reason)
    if found is None:
        return None
    cls = found.group(1).rsplit(".", 1)[-1]
    named = [k for k, v in {**_positional(check), **check.recorded.kwargs}.items() if type(v).__name__ == cls]
    return cls, f"the argument {named[0]} is a {cls}" if named else f"{otherwise} {cls}"


def _mixed_mapping(tree: object) -> str | None:
    """The class of the first mapping in ``tree`` whose values mix tensors and containers, which
    trace cannot type (a ``ModelOutput`` holding a tuple of hidden states beside its logits)."""
    if isinstance(tree, Mapping):
        kinds = {isinstance(v, torch.Tensor) for v in tree.values() if v is not None}
        if len(kinds) > 1:
            return type(tree).__name__
        children: Iterable[Any] = tree.values()
    elif isinstance(tree, (list, tuple)):
        children = tree
    else:
        return None
    return next((found for child in children if (found := _mixed_mapping(child)) is not None), None)


def _positional(check: Check) -> dict[str, Any]:
    """The recorded positional arguments by forward's parameter names."""
    try:
        params = [p for p in inspect.signature(check.eager.module.forward).parameters]
    except (TypeError, ValueError):
        return {}
    return dict(zip(params, check.recorded.args))


_SERIALIZING = re.compile(r"Failed serializing node (\S+) in graph: .*?target=([\w.]+)")


def _cache_out(check: Check, reason: str) -> str | None:
    """Explain an exporter's refusal of a returned KV cache: the dynamo ONNX exporter's lifted
    constants, the tracer's "cannot infer type" of a cache object."""
    traced = re.search(r"got value of type (\w*Cache)\b", reason) if "Tracer cannot infer type" in reason else None
    if "lifted_tensor" not in reason and not traced:
        return None
    caches = [p for p, _ in flatten(check.recorded.outputs)[0] if "cache" in p.lower() or "past" in p.lower()]
    if not caches:
        return None
    return (
        f"the outputs hold a KV cache ({f'a {traced.group(1)} at ' if traced else ''}{caches[0].split('.', 1)[0]}), "
        f"which {check.name} cannot return from the "
        "program it exports; export the call with use_cache=False (the logits alone), or check this backend on it"
    )


_UNKEYED = re.compile(r"Did not find a flatten_with_keys_fn for type: <class '([\w.]+)'>")


def _unkeyed(check: Check, reason: str) -> str | None:
    """torch.export's refusal of a value whose pytree registration has no keys."""
    found = _named_class(check, _UNKEYED, reason, otherwise="the call or its outputs hold a")
    if found is None:
        return None
    _, where = found
    return (
        f"{where}, which is registered with pytree without keys (as transformers registers its ModelOutput "
        f"classes on its older releases), and {check.name} reads every input and output by key: pass that value "
        "as a tuple, or register its class with flatten_with_keys_fn (a newer transformers does)"
    )


_NO_SOURCE = re.compile(r"(?:Failed to get|Can't get) source for <function ([\w.<>]+) at")


def _no_source(reason: str) -> str | None:
    """TorchScript's refusal of a function it cannot read the source of."""
    found = _NO_SOURCE.search(reason)
    if found is None:
        return None
    return (
        f"script compiles the source of every function the model reaches, and {found.group(1)} has none Python "
        "can read (code made at run time, as a dataclass's __init__ is); trace and export do not need the source"
    )


_UNREADABLE_CONSTANT = re.compile(r"Unable to deserialize (output|input) node Argument\((as_\w+)=([^)]*)\)")
_NO_KERNEL = re.compile(
    r"NOT_IMPLEMENTED : Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'"
)


def _no_kernel(check: Check, reason: str) -> str | None:
    """onnxruntime's refusal to load a node it has no kernel for with the node's input types."""
    found = _NO_KERNEL.search(reason)
    if found is None:
        return None
    op, opset, node = found.groups()
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in check.eager.module.parameters()})
    held = f"the model's weights are {' and '.join(dtypes)}; " if dtypes else ""
    return (
        f"onnxruntime has no kernel for {op} (opset {opset}) with the input types of node '{node}' on this "
        f"device: the exported file is valid ONNX, the runtime cannot run it; {held}serve it in a dtype the "
        "runtime's kernels cover (float32, float16), or with a runtime or provider that has this kernel"
    )


def _unreadable_constant(name: str, reason: str) -> str | None:
    """torch.export.load's refusal of a Python constant the capture kept, in a person's words."""
    found = _UNREADABLE_CONSTANT.search(reason)
    if found is None:
        return None
    where, kind, value = found.groups()
    return (
        f"{name} saved the program, but torch.export.load cannot read back its {where} {value!r}, a Python "
        f"constant ({kind.removeprefix('as_')}) the capture kept: the file cannot be shipped; return only tensors "
        "from the checked call, and keep constants outside it"
    )


_UNBOUND_SIZE = re.compile(r"expected no unbacked symbols, got \d+: \{([^}]*)\}")


def _unbound_size(check: Check, reason: str, saved: object) -> str | None:
    """torch.export.load's refusal of a program holding a size computed from a tensor's values."""
    found = _UNBOUND_SIZE.search(reason)
    if found is None:
        return None
    symbols = {s.strip() for s in found.group(1).split(",") if s.strip()}
    program = check.backend.exported_program(saved) if saved is not None else None
    made = _unbacked_site(program, symbols) if program is not None else None
    return (
        f"{check.name} saved the program, but torch.export.load cannot read it back: the program holds a size "
        f"computed from a tensor's values ({', '.join(sorted(symbols))}"
        + (f", made by {made}" if made else "")
        + "), and this torch's reader cannot bind such a size again when it rebuilds the graph, so the file "
        "cannot be shipped as it is; keep value-dependent sizes (nonzero, unique, boolean-mask indexing) out "
        "of the checked call, for instance by computing the indices outside it and passing them in"
    )


def _unbacked_site(program: torch.export.ExportedProgram, symbols: set[str]) -> str | None:
    """The operator whose output first has one of ``symbols`` as a size, with its module and line."""
    for node in program.graph.nodes:
        bound = node.meta.get("unbacked_bindings") or {}
        if not any(str(symbol) in symbols for symbol in bound):
            continue
        if node.target is operator.getitem and node.args and isinstance(node.args[0], torch.fx.Node):
            node = node.args[0]  # the size is bound on one output of a multi-output op
        frames = explain.quoted_frames(node.meta.get("stack_trace") or "")
        # The innermost frame in the model's code; a library's (transformers') is the model's too.
        site = next((f for f in reversed(frames) if explain.is_model_file(f[0])), frames[-1] if frames else None)
        module = _node_module(node)
        return str(node.target) + (f" in {module}" if module else "") + (f" at {explain.where(*site)}" if site else "")
    return None


def _node_module(node: torch.fx.Node) -> str | None:
    """The class of the innermost module the node was captured in."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    _, kind = list(stack.values())[-1]
    return str(getattr(kind, "__name__", kind)).rsplit(".", 1)[-1] or None


def _unserializable(name: str, reason: str) -> str | None:
    """A saver's refusal of one node of a captured program, in a person's words."""
    found = _SERIALIZING.search(reason)
    if found is None:
        return None
    node, target = found.groups()
    return (
        f"{name} captured the module, but its saver cannot serialize the node {node} ({target}) the capture "
        "kept: the artifact cannot be written, so it cannot be shipped"
    )


def roundtrip(check: Check, artifact: object, ctx: ExportContext) -> object:
    """Save ``artifact`` under the scratch dir and load it back."""
    backend, result = check.backend, check.result
    directory = check.scratch / "artifact"
    directory.mkdir()
    t0 = time.perf_counter()
    files = _step(check, "save", backend.save, artifact, directory)
    result.extra["artifact_files"] = [p.name for p in files]
    if check.options.keep_artifacts:  # before the load, so an artifact that fails to load is kept too
        check.artifact_dir = keep(result, check.options.keep_artifacts, _test_dirname(result), files)
    result.extra["artifact_bytes"] = sum(p.stat().st_size for p in files if p.exists())
    if len(files) > 1:
        result.findings.append(
            Finding(
                "external_data",
                f"the {result.backend} artifact is {len(files)} files ({', '.join(p.name for p in files)}): "
                "ship them together; the model file refers to the others by name",
            )
        )
    # [Crash Preflight] On CUDA, load first in a fresh process (standalone.py).
    check.loading = preflight(check)
    loaded = _step(check, "load", backend.load, directory, ctx, saved=artifact)
    result.timings["load_s"] = time.perf_counter() - t0
    return loaded


def _step(check: Check, stage: str, fn: Callable[..., T], *args: Any, saved: object = None) -> T:
    """Run ``fn(*args)`` as the check's ``stage``; any exception ends the check. ``saved``: the
    in-memory artifact a failed load read back, for naming the cause."""
    runner.stage(check.result, stage)
    with quiet_torch():
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any failure of the step is its error row
            export_failed(check, exc, stage, saved=saved)


# --- submodules compiled in place before the call ---


def compiled_parts(module: torch.nn.Module) -> list[tuple[str, str]]:
    """(path, what it is) of each outermost submodule that is not Python code at the call."""
    parts: list[tuple[str, str]] = []
    for path, sub in module.named_modules():
        if any(path.startswith(p + ".") for p, _ in parts):
            continue  # inside a part already named
        if path and isinstance(sub, torch.jit.ScriptModule):
            traced = isinstance(sub, torch.jit.TracedModule)
            parts.append((path, "traced by torch.jit.trace" if traced else "scripted by torch.jit.script"))
        elif path and type(sub).__name__ == "OptimizedModule":
            parts.append((path, "compiled by torch.compile"))
        elif compiled_in_place(sub):
            parts.append((path or "(the module itself)", "compiled in place by Module.compile()"))
    return parts


def compiled_words(parts: list[tuple[str, str]], name: str) -> str:
    """Which parts are compiled, and that a fresh instance may export differently."""
    listed = ", ".join(f"{path} ({what})" for path, what in parts[:4]) + (" ..." if len(parts) > 4 else "")
    # "may": parts compiled by the class itself, not a helper, do not make a fresh instance differ.
    return (
        f"{name} held compiled submodules when the test called it: {listed}; the exporter met that code, not "
        f"the Python code of those parts: where the test or a helper compiled them in place, a fresh {name} "
        "may export differently"
    )


def compiled_finding(parts: list[tuple[str, str]], name: str) -> Finding:
    return Finding("compiled_parts", compiled_words(parts, name), parts[0][0])


def with_cause(parts: list[tuple[str, str]], name: str, cause: str | None) -> str | None:
    """``cause`` with the compiled parts named first."""
    if not parts:
        return cause
    return compiled_words(parts, name) + (f"; {cause}" if cause else "")
