"""The one interface every export path implements.

A backend *produces, saves and loads* a runnable; it never compares anything (that is
``compare.py``'s job) and never touches pytest. The engine calls, in order::

    reason = backend.unavailable_reason()          # None, or why it is skipped
    artifact = backend.export(module, args, kwargs, ctx)
    files = backend.save(artifact, directory)      # the artifact travels through files
    loaded = backend.load(directory, ctx)          # ... and a fresh process could load them
    outputs = backend.run(loaded, args, kwargs)

Each check runs these in a forked child with a time limit (``isolation/runner.py``), which
inherits the backend and the module; the artifact travels through ``directory``, so a fresh
process can load it too (the standalone load, ``stages/standalone.py``).

Third-party backends are registered by the ``pytest_torchexport_backends`` hook::

    class MyBackend(Backend):
        name = "mine"
        relowered = True                     # numerics may differ: looser defaults
        def export(self, module, args, kwargs, ctx): ...
        def save(self, artifact, directory): ...
        def load(self, directory, ctx): ...
        def run(self, artifact, args, kwargs): ...
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable


@dataclass
class ExportContext:
    """What an exporter may need beyond the module and the example call."""

    device: str
    plan: Any  # specs.InputPlan: dynamic shapes, ONNX names and axes come from it
    module: Any = None  # the eval-mode module being exported
    notes: list[str] = field(default_factory=list)  # become backend_note findings
    relaxed: frozenset[str] = frozenset()  # dims left to the exporter after a constraint violation
    scratch: Path | None = None  # a directory removed after the check, for intermediate files
    #: options.ShippedOnnx: the post-processing the onnx backend applies to its export (None: none)
    shipped: Any = None
    #: [Shared Capture] ``relaxed`` -> the ``Captured`` program of this call the engine made once for
    #: the test's backends (stages/capture.py); a backend whose ``shares_capture`` is True starts from it
    captures: dict[frozenset[str], Captured] = field(default_factory=dict)
    #: which capture the export started from, "shared" or "own" (the row's ``capture``); None: no torch.export capture
    capture: str | None = None
    capture_s: float = 0.0  # the seconds of that capture (the test's process's, where shared)
    own_capture_s: float = 0.0  # of ``capture_s``, the seconds captured in this export (inside its export_s)

    def dynamic_shapes(self, module: Any) -> Any:
        return self.plan.export_dynamic_shapes(module, relaxed=self.relaxed)

    def shared_capture(self) -> Captured | None:
        """[Shared Capture] The engine's capture of this call at this check's ``relaxed`` dims, or
        None (the backend captures on its own)."""
        return self.captures.get(self.relaxed)

    def exported_program(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``torch.export.export(module, args, kwargs, dynamic_shapes=..., strict=False)``: what the
        backends that lower an ``ExportedProgram`` start from. The shared capture where the engine
        made one (its failure raised as it was: a capture is not repeated with the same arguments);
        else captured here. ``module`` is the one the backend would export (``keywords_bound``)."""
        import time

        shared = self.shared_capture()
        if shared is not None:
            self.capture = "shared"
            self.capture_s += shared.seconds
            return shared.result()
        self.capture = "own"
        t0 = time.perf_counter()
        try:
            return capture_program(module, args, kwargs, self.dynamic_shapes(module))
        finally:
            seconds = time.perf_counter() - t0
            self.own_capture_s += seconds
            self.capture_s += seconds


@dataclass
class Captured:
    """[Shared Capture] One ``torch.export`` capture of a call: its program or the error it raised."""

    program: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    def result(self) -> Any:
        """The program, or the capture's error raised again."""
        if self.error is not None:
            raise self.error
        return self.program


def capture_program(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_shapes: Any) -> Any:
    """The one capture every backend that lowers an ``ExportedProgram`` makes (non-strict, as users do)."""
    import torch

    return torch.export.export(module, args, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False)


class Backend:
    """Base class for an export path. Subclasses set ``name`` and implement four methods
    (``export``, ``save``, ``load``, ``run``); the others are optional and answer for the
    backend's own artifacts. What only an ONNX artifact can answer is not here: see
    ``OnnxModelSource``, ``GraphLevels`` and ``PostProcessed`` below."""

    name: ClassVar[str] = ""
    #: The artifact re-lowers ops (other kernels, fused arithmetic): looser default tolerances.
    relowered: ClassVar[bool] = False
    #: The artifact can be saved and loaded back (False: the round trip is not applicable).
    saveable: ClassVar[bool] = True
    #: Shape-generic by construction (script) or through dynamic shapes at export.
    dynamic: ClassVar[bool] = True
    #: Captures through torch.export, whose symbolic shapes assume every dynamic size is
    #: >= 2 while tracing: code that branches on a size of 0 or 1 is silently specialized.
    specializes_small_dims: ClassVar[bool] = False
    #: The saved artifact is meant to load without the model's Python code (TorchScript,
    #: ONNX, AOTInductor, ExecuTorch): failing to load in a fresh process is a load_error,
    #: not only a standalone_load finding (standalone.py).
    loads_without_python: ClassVar[bool] = False
    #: [Shared Capture] Starts from ``ctx.exported_program(...)``, torch.export's capture of the
    #: call: the engine may capture it once for all such backends of a test and hand it over.
    shares_capture: ClassVar[bool] = False

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (missing library, too old a torch), or None."""
        return None

    def captures_otherwise(self, module: Any) -> bool:
        """[Shared Capture] Optional, with ``shares_capture``: whether this backend's own entry point
        would capture ``module`` otherwise than the shared capture does (other options, other
        decompositions), so it captures on its own. Default: False."""
        return False

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        raise NotImplementedError

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        raise NotImplementedError

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        raise NotImplementedError

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return artifact(*args, **kwargs)

    def input_shapes(self, artifact: Any) -> list[tuple[Any, ...]] | None:
        """Optional: the artifact's tensor input shapes (int = static), in call order."""
        return None

    def guard_violation(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Optional: why ``args`` fall outside what the export proved, when the artifact cannot say.

        The dynamo ONNX exporter strips ``torch.export``'s runtime asserts, so an input
        that violates a guard still runs in onnxruntime, silently wrong.
        """
        return None

    # -- optional: what the engine may ask of an artifact; a backend answers for its own ----

    def artifact_module(self, artifact: Any) -> Any:
        """Optional: the ``nn.Module`` the artifact runs (TorchScript included), or None.

        Its buffers are the artifact's state, which is put back to the module's initial
        state after export and before each call of a stateful module (reference/eager.py); a
        TorchScript one is also what localisation walks (localize.py). Default: the
        artifact itself when it is a module.
        """
        import torch

        return artifact if isinstance(artifact, torch.nn.Module) else None

    def exported_program(self, artifact: Any) -> Any:
        """Optional: the ``torch.export.ExportedProgram`` behind the artifact, or None.

        Localisation unflattens it, and runs ``artifact_module(artifact)`` (the program's
        module) to read each submodule's value in a run.
        """
        return None

    def device_fallback(self, artifact: Any) -> str | None:
        """Optional: why the artifact runs on another device than the check's, or None.

        Becomes a ``device_fallback`` finding (onnxruntime without CUDA ran on CPU).
        """
        return None

    def set_aside(self, artifact: Any) -> None:
        """Optional: ``artifact`` (the in-memory one, whose saved copy loaded back) is kept only to
        blame a round trip when the loaded one fails: drop what can be made again when it next
        runs (an onnxruntime session and its serialized model). Default: nothing."""
        return None

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


# -- what a backend whose artifact runs an ONNX model may also answer -----------------------------
# Three small protocols, not methods every backend stubs: the engine asks ``isinstance(backend,
# OnnxModelSource)`` (and so on) before it calls one, so a backend answers by defining the two methods
# (no base class to inherit: a third-party backend written before they moved here still answers).


@runtime_checkable
class OnnxModelSource(Protocol):
    """The ONNX model an artifact runs, and another model run as it runs its own: localisation adds
    each module's output to a copy of the model as a graph output and runs that copy
    (search/localize.py)."""

    def onnx_model(self, artifact: Any) -> bytes | str | None:
        """The ONNX model the artifact runs (serialized, or its path), or None."""
        ...

    def run_onnx_model(
        self, artifact: Any, model: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``model`` run as the artifact runs its own (same runtime, same device); its outputs by name."""
        ...


@runtime_checkable
class GraphLevels(Protocol):
    """A runtime that rewrites the graph at load, at levels it can be asked for: a failure is rerun at
    the lower levels to tell an export defect from a rewrite that changed the result
    (search/causes.py's ``runtime_optimizer``)."""

    def graph_optimizer(self, artifact: Any) -> GraphOptimizer | None:
        """The runtime's levels and the one the artifact runs at, or None (none here)."""
        ...

    def at_level(self, artifact: Any, level: str) -> Any:
        """The artifact at another of ``graph_optimizer``'s levels."""
        ...


@runtime_checkable
class PostProcessed(Protocol):
    """[ONNX As Shipped] An artifact post-processed after its export (float16, int8, the offline
    optimization): a failing input is rerun on the model before each step to name the first step
    after which it fails (search.py), and the budget replaces the default tolerances."""

    def steps_unavailable(self, shipped: Any) -> str | None:
        """Why the post-processing ``shipped`` asks for (options.ShippedOnnx) cannot run here (a
        library missing), or None; the check is then skipped with that reason."""
        ...

    def post_processing(self, artifact: Any) -> PostProcessing | None:
        """The steps the artifact went through after the export, or None (none asked for)."""
        ...


class OnnxArtifact(OnnxModelSource, GraphLevels, PostProcessed, Protocol):
    """All three: what the built-in ONNX backends (backends/onnx.py) implement."""


@dataclass
class PostProcessing:
    """[ONNX As Shipped] What a post-processed artifact went through, for the engine to judge it."""

    steps: list[str]  # in order: ["fp16", "optimize=all"]
    stages: list[tuple[str, Any]]  # ("export", the model before any step), then (step, the model after it)
    budget: float | None  # the error allowed, as a fraction of each output's scale; None: the default tolerances
    budget_from: str  # how the budget was set, for the message
    op_depth: int  # operators on the longest input-to-output path of the exported graph


@dataclass(frozen=True)
class GraphOptimizer:
    """A runtime that rewrites the graph at load, at levels it can be asked for."""

    runtime: str  # "onnxruntime 1.22.0"
    levels: tuple[str, ...]  # least rewriting first
    deployed: str  # the level the artifact runs at


def load_backend(spec: Any) -> Backend:
    """A ``Backend`` from a ``"module:Class"`` string, a class, or an instance."""
    if isinstance(spec, str):
        import importlib

        module_name, _, attr = spec.partition(":")
        spec = getattr(importlib.import_module(module_name), attr)
    if isinstance(spec, type):
        spec = spec()
    for method in ("export", "save", "load", "run"):
        if not callable(getattr(spec, method, None)):
            raise TypeError(f"torchexport backend {spec!r} has no {method}() method")
    return spec


def keywords_bound(module: Any, kwargs: dict[str, Any]) -> Any:
    """``module``, or an adapter whose forward names every keyword the call passes.

    ``forward(self, x, **kwargs)`` called with ``mask=``: ``torch.export`` wants
    ``dynamic_shapes`` keyed ``{"x": ..., "kwargs": {"mask": ...}}`` for that signature,
    and that documented form fails inside torch 2.13 ("Must provide a tree_name when
    there might be a mismatch"). The adapter's signature is ``(x, *, mask)``, so the
    flat ``{"x": ..., "mask": ...}`` the plan builds binds, and the exported program
    is still called as the user calls the module.
    """
    import torch

    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return module
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return module
    extra = [k for k in kwargs if k not in params]
    if not extra:
        return module
    # *args stays: dropping it would make the adapter refuse the call's extra positions.
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    keyword = [p for p in params.values() if p.kind is p.KEYWORD_ONLY]
    keyword += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in extra]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def forward(self: Any, *args: Any, **kw: Any) -> Any:
        return self.module(*args, **kw)

    forward.__signature__ = inspect.Signature([self_param, *positional, *keyword])  # type: ignore[attr-defined]
    adapter = type("KeywordsBound", (torch.nn.Module,), {"forward": forward})()
    adapter.module = module
    return adapter.train(module.training)


def call_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The call's tensors, flat, in this process's pytree order (a registered input type, such as a
    transformers cache, flattened as registered): what a runtime fed by position takes."""
    import torch

    from .._compat import pytree  # deferred: torch's pytree; base.py stays torch-free (the public Backend)

    return [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def onnx_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``args`` as ``torch.onnx.export`` must be given them to pass them positionally.

    Both ONNX exporters read a dict at the end of ``args`` as keyword arguments (when no
    ``kwargs`` are given), so ``forward(self, data: dict)`` called as ``model({"x": x})``
    fails with "missing a required argument: 'data'". Their documented remedy is an empty
    dict after it, which they take as the (empty) keywords.
    """
    if args and isinstance(args[-1], dict) and not kwargs:
        return (*args, {})
    return args


def positional_adapter(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """A module taking the call's tensors positionally, for exporters that cannot take keywords.

    Legacy ONNX export binds keyword tensors by position into ``forward``'s parameters, so
    ``BertModel(input_ids=..., attention_mask=...)`` fails with "got multiple values for
    argument 'use_cache'". Users export such models through a positional wrapper; this is
    that wrapper. Non-tensor leaves keep the call's values. Returns (adapter, tensors).
    """
    import torch

    from .._compat import pytree  # deferred: torch's pytree; base.py stays torch-free (the public Backend)

    flat, spec = pytree.tree_flatten((args, kwargs))
    slots = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *tensors: Any) -> Any:
            values = list(flat)
            for i, t in zip(slots, tensors):
                values[i] = t
            a, k = pytree.tree_unflatten(values, spec)
            return self.module(*a, **k)

    return Positional().train(module.training), tuple(flat[i] for i in slots)


class MethodCall:
    """Marks the modules ``method_call`` makes (a mixin of their class, never instantiated alone)."""

    module: Any
    method: str
    original_name: str  # the user's class (set by method_call)


def method_call(module: Any, method: str) -> Any:
    """[Another Method] A module whose ``forward`` calls ``module.<method>``: what a test that
    calls ``model.forward_features(x)`` checks.

    ``torch.export``, ONNX and the other exporters take a module and export its ``forward``;
    users export another method through such a wrapper, and this is it. Its ``forward``
    has the method's signature, so argument names (``dynamic=``, ONNX input names) are the
    method's. TorchScript does better (``backends/trace.py``, ``script.py``): the method
    itself is traced with ``torch.jit.trace_module`` or reached in the scripted module.
    """
    import torch

    try:
        signature = inspect.signature(getattr(module, method))
    except (TypeError, ValueError):
        signature = None

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)

    if signature is not None:
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        forward.__signature__ = signature.replace(parameters=[self_param, *signature.parameters.values()])  # type: ignore[attr-defined]
    cls = type(f"MethodCall_{method}", (torch.nn.Module, MethodCall), {"forward": forward})
    wrapper = cls()
    wrapper.module = module
    wrapper.method = method
    # The row names the user's class (module_name reads original_name, as for a scripted module).
    wrapper.original_name = getattr(module, "original_name", None) or type(module).__name__
    wrapper.training = module.training  # not train(): that would set every submodule to the root's mode
    return wrapper


def to_cpu(tree: Any) -> Any:
    """[CPU-Only Runtime] ``tree`` with its tensors on cpu: the call a runtime that runs on CPU
    only (executorch, openvino, litert) is exported and run with, whatever device was asked."""
    import torch

    from .._compat import pytree  # deferred: torch's pytree; base.py stays torch-free (the public Backend)

    return pytree.tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, tree)


def on_cpu(
    module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], device: str
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """[CPU-Only Runtime] The call to export, moved to cpu where ``device`` is not. The engine
    hands the backend a copy of the module: moving it touches nothing of the user's."""
    if device == "cpu":
        return module, args, kwargs
    return module.to("cpu"), to_cpu(args), to_cpu(kwargs)


def not_installed(what: str, install: str, imports: Any) -> str | None:
    """What ``unavailable_reason`` says where ``imports()`` raises ``ImportError``: that ``what``
    is not installed, the error, and the line that installs it; None where it imports."""
    try:
        imports()
    except ImportError as exc:
        return f"{what} is not installed ({exc}); {install}"
    return None


def cpu_fallback(device: str, why: str) -> str | None:
    """[CPU-Only Runtime] What ``device_fallback`` says where ``device`` is not cpu: ``why``
    (the runtime runs on CPU), and that the inputs ran there."""
    return None if device == "cpu" else f"{why}: the {device} inputs ran on cpu"
