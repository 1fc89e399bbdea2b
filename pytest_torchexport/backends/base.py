"""The interface every export path implements.

A backend exports, saves, loads and runs an artifact; it never compares outputs and never
touches pytest. The artifact goes through files so a fresh process can load it too.
See docs/howto-backend.md.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import torch

from .._compat import pytree

if TYPE_CHECKING:
    from ..options import ShippedOnnx

    #: A value returned in its own shape (``to_cpu``).
    _Tree = TypeVar("_Tree")

#: The artifact a backend's ``export`` and ``load`` make and its other methods take: ``Backend[A]``.
A = TypeVar("A")
#: The same, for the ONNX protocols that only take an artifact.
A_contra = TypeVar("A_contra", contravariant=True)


@dataclass
class ExportContext:
    """What an exporter may need besides the module and the call."""

    device: str
    plan: Any  # specs.InputPlan
    module: Any = None  # the eval-mode module being exported
    notes: list[str] = field(default_factory=list)  # become backend_note findings
    relaxed: frozenset[str] = frozenset()  # dims left to the exporter after a constraint violation
    scratch: Path | None = None  # removed after the check
    #: options.ShippedOnnx: post-processing for the onnx backend, or None
    shipped: Any = None
    #: [Shared Capture] ``relaxed`` -> the capture made once for the test's backends
    captures: dict[frozenset[str], Captured] = field(default_factory=dict)
    #: "shared" or "own": which capture the export started from, if any
    capture: str | None = None
    capture_s: float = 0.0
    own_capture_s: float = 0.0  # the part of ``capture_s`` spent inside this export

    def dynamic_shapes(
        self, module: torch.nn.Module, *, derived_auto: bool = False
    ) -> dict[str, Any] | tuple[Any, ...] | None:
        return self.plan.export_dynamic_shapes(module, relaxed=self.relaxed, derived_auto=derived_auto)

    def shared_capture(self) -> Captured | None:
        """[Shared Capture] The engine's capture at this check's ``relaxed`` dims, or None."""
        return self.captures.get(self.relaxed)

    def exported_program(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> torch.export.ExportedProgram:
        """The ``ExportedProgram`` to lower: the shared capture (or its error), else a new one."""
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
    """[Shared Capture] One ``torch.export`` capture: its program or the error it raised."""

    program: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    def result(self) -> torch.export.ExportedProgram:
        """The program, or raise the capture's error."""
        if self.error is not None:
            raise self.error
        return self.program


def capture_program(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dynamic_shapes: dict[str, Any] | tuple[Any, ...] | list[Any] | None,
) -> torch.export.ExportedProgram:
    """The capture every lowering backend makes (non-strict, as users usually export)."""
    return torch.export.export(module, args, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False)


class Backend(Generic[A]):
    """Base class for an export path: set ``name`` and implement ``export``, ``save``, ``load``
    and ``run``; the other methods are optional. ``A`` is the artifact's type: a subclass of
    ``Backend[MyArtifact]`` has its methods typed; a plain ``Backend`` subclass takes ``Any``."""

    name: ClassVar[str] = ""
    #: The artifact re-lowers ops (other kernels), so default tolerances are looser.
    relowered: ClassVar[bool] = False
    #: The artifact can be saved and loaded back.
    saveable: ClassVar[bool] = True
    #: Shape-generic, by construction or through dynamic shapes.
    dynamic: ClassVar[bool] = True
    #: Captures through torch.export, which assumes dynamic sizes >= 2: code branching on 0 or 1 is specialized.
    specializes_small_dims: ClassVar[bool] = False
    #: The saved artifact should load without the model's code: failing that is a load_error.
    loads_without_python: ClassVar[bool] = False
    #: [Shared Capture] Starts from ``ctx.exported_program(...)``.
    shares_capture: ClassVar[bool] = False

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here, or None."""
        return None

    def captures_otherwise(self, module: torch.nn.Module) -> bool:
        """[Shared Capture] True when this backend would capture ``module`` differently."""
        return False

    def export(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> A:
        raise NotImplementedError

    def save(self, artifact: A, directory: Path) -> list[Path]:
        raise NotImplementedError

    def load(self, directory: Path, ctx: ExportContext) -> A:
        raise NotImplementedError

    def run(self, artifact: A, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if callable(artifact):
            return artifact(*args, **kwargs)
        raise TypeError(f"{type(artifact).__name__!r} object is not callable")  # as calling it would raise

    def input_shapes(self, artifact: A) -> list[tuple[Any, ...]] | None:
        """Optional: the artifact's input shapes (int = static, None = dynamic)."""
        return None

    def guard_violation(self, artifact: A, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Optional: why ``args`` fall outside what the export proved, for artifacts that drop
        torch.export's runtime asserts."""
        return None

    def artifact_module(self, artifact: A) -> torch.nn.Module | None:
        """Optional: the ``nn.Module`` the artifact runs, whose buffers are reset between calls."""
        return artifact if isinstance(artifact, torch.nn.Module) else None

    def exported_program(self, artifact: A) -> torch.export.ExportedProgram | None:
        """Optional: the ``ExportedProgram`` behind the artifact, for localisation."""
        return None

    def device_fallback(self, artifact: A) -> str | None:
        """Optional: why the artifact runs on another device than the check's, or None."""
        return None

    def set_aside(self, artifact: A) -> None:
        """Optional: free what can be rebuilt; the artifact is now kept only for blame."""
        return None

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


# Protocols for ONNX artifacts, checked with isinstance: a backend opts in by defining the methods.


@runtime_checkable
class OnnxModelSource(Protocol[A_contra]):
    """The ONNX model an artifact runs, and a way to run a modified copy (for localisation)."""

    def onnx_model(self, artifact: A_contra) -> bytes | str | None:
        """The ONNX model (bytes or a path), or None."""
        ...

    def run_onnx_model(
        self, artifact: A_contra, model: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``model`` run like the artifact; its outputs by name."""
        ...


@runtime_checkable
class GraphLevels(Protocol[A]):
    """A runtime that rewrites the graph at load; a failure is rerun at lower levels."""

    def graph_optimizer(self, artifact: A) -> GraphOptimizer | None:
        """The runtime's levels and the one the artifact runs at, or None."""
        ...

    def at_level(self, artifact: A, level: str) -> A:
        """The artifact at another of ``graph_optimizer``'s levels."""
        ...


@runtime_checkable
class PostProcessed(Protocol[A_contra]):
    """[ONNX As Shipped] An artifact post-processed after export (float16, int8, optimization)."""

    def steps_unavailable(self, shipped: ShippedOnnx) -> str | None:
        """Why ``shipped``'s steps cannot run here, or None."""
        ...

    def post_processing(self, artifact: A_contra) -> PostProcessing | None:
        """The steps the artifact went through after export, or None."""
        ...


class OnnxArtifact(OnnxModelSource[A], GraphLevels[A], PostProcessed[A], Protocol[A]):
    """All three, as the built-in ONNX backends implement."""


@dataclass
class PostProcessing:
    """[ONNX As Shipped] What a post-processed artifact went through."""

    steps: list[str]  # in order: ["fp16", "optimize=all"]
    stages: list[tuple[str, Any]]  # ("export", model), then (step, model after it)
    budget: float | None  # allowed error as a fraction of the output's scale
    budget_from: str
    op_depth: int  # operators on the longest input-to-output path


@dataclass(frozen=True)
class GraphOptimizer:
    """A runtime's graph optimization levels."""

    runtime: str
    levels: tuple[str, ...]  # least rewriting first
    deployed: str


def load_backend(spec: Any) -> Backend:
    """A ``Backend`` from a ``"module:Class"`` string, a class, or an instance."""
    if isinstance(spec, str):
        module_name, _, attr = spec.partition(":")
        spec = getattr(importlib.import_module(module_name), attr)
    if isinstance(spec, type):
        spec = spec()
    for method in ("export", "save", "load", "run"):
        if not callable(getattr(spec, method, None)):
            raise TypeError(f"torchexport backend {spec!r} has no {method}() method")
    return spec


def keywords_bound(module: torch.nn.Module, kwargs: dict[str, Any]) -> torch.nn.Module:
    """``module``, or an adapter whose forward names every keyword the call passes.

    For ``forward(self, x, **kwargs)``, torch.export's documented nested dynamic_shapes form
    fails in torch 2.13, so the adapter's signature names the keywords to accept a flat dict.
    """
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
    # Keep *args, or the adapter would refuse extra positional arguments.
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    keyword = [p for p in params.values() if p.kind is p.KEYWORD_ONLY]
    keyword += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in extra]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

    def forward(self: Any, *args: object, **kw: object) -> Any:
        return self.module(*args, **kw)

    forward.__signature__ = inspect.Signature([self_param, *positional, *keyword])  # type: ignore[attr-defined]
    adapter = type("KeywordsBound", (torch.nn.Module,), {"forward": forward})()
    adapter.module = module
    return adapter.train(module.training)


def call_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """The call's tensors in pytree order, for runtimes fed by position."""
    return [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def onnx_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``args`` as ``torch.onnx.export`` needs them to pass them positionally.

    Both exporters read a trailing dict as keyword arguments; the documented fix is an empty dict after it.
    """
    if args and isinstance(args[-1], dict) and not kwargs:
        return (*args, {})
    return args


def positional_adapter(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """A module taking the call's tensors positionally, and those tensors.

    Legacy ONNX export binds keyword tensors by position, which breaks models called by keyword.
    """
    flat, spec = pytree.tree_flatten((args, kwargs))
    slots = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *tensors: torch.Tensor) -> Any:
            values = list(flat)
            for i, t in zip(slots, tensors):
                values[i] = t
            a, k = pytree.tree_unflatten(values, spec)
            return self.module(*a, **k)

    return Positional().train(module.training), tuple(flat[i] for i in slots)


class MethodCall:
    """Mixin marking the wrappers ``method_call`` makes."""

    module: Any
    method: str
    original_name: str  # the user's class (set by method_call)


def method_call(module: torch.nn.Module, method: str) -> torch.nn.Module:
    """[Another Method] A module whose ``forward`` calls ``module.<method>``.

    Exporters only export ``forward``; the wrapper keeps the method's signature.
    """
    try:
        signature = inspect.signature(getattr(module, method))
    except (TypeError, ValueError):
        signature = None

    def forward(self: MethodCall, *args: object, **kwargs: object) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)

    if signature is not None:
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        forward.__signature__ = signature.replace(parameters=[self_param, *signature.parameters.values()])  # type: ignore[attr-defined]
    cls = type(f"MethodCall_{method}", (torch.nn.Module, MethodCall), {"forward": forward})
    wrapper = cls()
    wrapper.module = module
    wrapper.method = method
    # So the row names the user's class, as for a scripted module.
    wrapper.original_name = getattr(module, "original_name", None) or type(module).__name__
    wrapper.training = module.training  # not train(): that would set every submodule to the root's mode
    return wrapper


def to_cpu(tree: _Tree) -> _Tree:
    """``tree`` with its tensors on cpu, for runtimes that only run on CPU."""
    return pytree.tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, tree)


def on_cpu(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: str
) -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    """The call moved to cpu. Moving the module is safe: the backend gets a copy."""
    if device == "cpu":
        return module, args, kwargs
    return module.to("cpu"), to_cpu(args), to_cpu(kwargs)


def not_installed(what: str, install: str, imports: Callable[[], object]) -> str | None:
    """An ``unavailable_reason`` if ``imports()`` raises ``ImportError``."""
    try:
        imports()
    except ImportError as exc:
        return f"{what} is not installed ({exc}); {install}"
    return None


def cpu_fallback(device: str, why: str) -> str | None:
    """A ``device_fallback`` message for a CPU-only runtime."""
    return None if device == "cpu" else f"{why}: the {device} inputs ran on cpu"
