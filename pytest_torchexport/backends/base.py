"""The one interface every export path implements.

A backend *produces, saves and loads* a runnable; it never compares anything (that is
``compare.py``'s job) and never touches pytest. The engine calls, in order::

    reason = backend.unavailable_reason()          # None, or why it is skipped
    artifact = backend.export(module, args, kwargs, ctx)
    files = backend.save(artifact, directory)      # the artifact travels through files
    loaded = backend.load(directory, ctx)          # ... and a fresh process could load them
    outputs = backend.run(loaded, args, kwargs)

Because the artifact travels through ``directory``, an export can later move into a
worker process with a time limit without changing this interface (see docs/backends.md).

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class ExportContext:
    """What an exporter may need beyond the module and the example call."""

    device: str
    plan: Any  # specs.InputPlan: dynamic shapes, ONNX names and axes come from it
    module: Any = None  # the eval-mode module being exported
    notes: list[str] = field(default_factory=list)  # become backend_note findings
    relaxed: frozenset[str] = frozenset()  # dims left to the exporter after a constraint violation
    scratch: Path | None = None  # a directory removed after the check, for intermediate files

    def dynamic_shapes(self, module: Any) -> Any:
        return self.plan.export_dynamic_shapes(module, relaxed=self.relaxed)


class Backend:
    """Base class for an export path. Subclasses set ``name`` and implement four methods."""

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

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (missing library, too old a torch), or None."""
        return None

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

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


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
