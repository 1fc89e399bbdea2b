"""ONNX, run in onnxruntime: the dynamo exporter (``onnx``) and the TorchScript one (``onnx-legacy``).

Every exported model also goes through ``onnx.checker``, since onnxruntime runs models that
stricter runtimes refuse. See docs/backends.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._compat import onnx_capture_strategies, onnx_registry_class, program_guards, torchscript_unavailable
from ..results.explain import FindingWarning
from ..results.report import Finding
from . import onnx_shipped
from .base import (
    Backend,
    ExportContext,
    GraphOptimizer,
    PostProcessing,
    call_tensors,
    keywords_bound,
    onnx_args,
    positional_adapter,
)

if TYPE_CHECKING:
    from ..options import ShippedOnnx
    from .base import Captured

FILENAME = "model.onnx"
#: onnxruntime's graph optimization levels, least rewriting first; sessions default to the last.
OPTIMIZATION_LEVELS = (
    "ORT_DISABLE_ALL",
    "ORT_ENABLE_BASIC",
    "ORT_ENABLE_EXTENDED",
    "ORT_ENABLE_LAYOUT",
    "ORT_ENABLE_ALL",
)


def check_artifact(data: bytes, name: str) -> None:
    """Warn with an ``onnx_checker`` finding if ``onnx.checker`` refuses the model; the check goes on."""
    import onnx

    try:
        onnx.checker.check_model(data, full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker error is the finding
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        if len(reason) > 300:
            reason = reason[:300] + "..."
        warnings.warn(
            FindingWarning(
                Finding(
                    "onnx_checker",
                    f"the {name} artifact fails onnx.checker.check_model(model, full_check=True) (onnx {onnx.__version__}): "
                    f"{type(exc).__name__}: {reason}; onnxruntime runs it, but stricter runtimes and converters "
                    "(TensorRT, OpenVINO) may refuse it",
                )
            ),
            stacklevel=2,
        )


class OnnxSession:
    """An onnxruntime session fed the flat tensor inputs, returning torch tensors.
    ``level``: a ``GraphOptimizationLevel`` name; None is the default, as served."""

    def __init__(self, source: bytes | str, device: str, level: str | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        self.fallback = None
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in available:
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            else:
                self.fallback = "onnxruntime has no CUDAExecutionProvider here; ran on CPU"
        options = ort.SessionOptions()
        # Errors also come back as exceptions, so only fatal ones are logged.
        options.log_severity_level = 4
        # Spin-waiting threads would starve eager runs of cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # [Memory Budget] With many input shapes, the arena and memory patterns keep every size's buffers.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        if level is not None:
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        self.runtime = f"onnxruntime {ort.__version__}"
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        self.source = source
        self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        # [ONNX As Shipped] Load an offline-optimized file at its serving level.
        serve = self.session.get_modelmeta().custom_metadata_map.get(onnx_shipped.SERVE_LEVEL_KEY)
        if level is None and serve is not None and hasattr(ort.GraphOptimizationLevel, serve):
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, serve)
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        self.level = options.graph_optimization_level.name
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = device
        # [ONNX As Shipped] Outputs the float16 conversion narrowed are read back in float32, as
        # eager returns them; a float16 model's own float16 outputs stay float16, as eager's do.
        narrowed = self.session.get_modelmeta().custom_metadata_map.get(onnx_shipped.NARROWED_KEY)
        self.widened = [o.name in json.loads(narrowed or "[]") for o in self.session.get_outputs()]

    @property
    def optimization_levels(self) -> tuple[str, ...]:
        """The levels this onnxruntime has."""
        import onnxruntime as ort

        return tuple(level for level in OPTIMIZATION_LEVELS if hasattr(ort.GraphOptimizationLevel, level))

    def at_level(self, level: str) -> OnnxSession:
        """The same model at another optimization level."""
        return OnnxSession(self.source, self.device, level)

    def feed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's tensors as numpy arrays by input name."""
        tensors = call_tensors(args, kwargs)
        if len(tensors) != len(self.input_names):
            raise RuntimeError(
                f"the ONNX graph takes {len(self.input_names)} inputs ({', '.join(self.input_names)}) "
                f"but the call has {len(tensors)} tensors: an input was folded into a constant or dropped"
            )
        feed = {}
        for spec, t in zip(self.session.get_inputs(), tensors):
            array = t.detach().cpu().numpy()
            if spec.type == "tensor(float16)" and array.dtype.name == "float32":
                array = array.astype("float16")
            feed[spec.name] = array
        return feed

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        outputs = self.session.run(None, self.feed(args, kwargs), self.run_options)
        return [_widened(torch.from_numpy(o), wide).to(self.device) for o, wide in zip(outputs, self.widened)]


def _widened(t: torch.Tensor, wide: bool) -> torch.Tensor:
    return t.float() if wide and t.dtype == torch.float16 else t


class _OnnxBackend(Backend["_InMemory | OnnxSession"]):
    loads_without_python = True
    relowered = True
    #: The standalone loader sends the tensors flat, as onnxruntime takes them
    feeds_flat_tensors = True

    def unavailable_reason(self) -> str | None:
        for lib in ("onnx", "onnxruntime"):
            try:
                __import__(lib)
            except ImportError as exc:
                return f"{lib} is not installed ({exc}): pip install onnx onnxruntime"
        return None

    def load(self, directory: Path, ctx: ExportContext) -> OnnxSession:
        return OnnxSession(str(directory / FILENAME), ctx.device)

    def run(
        self, artifact: _InMemory | OnnxSession, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[torch.Tensor]:
        return artifact(args, kwargs)

    def input_shapes(self, artifact: _InMemory | OnnxSession) -> list[tuple[Any, ...]] | None:
        return [
            tuple(d if isinstance(d, int) else None for d in i.shape) for i in _session(artifact).session.get_inputs()
        ]

    def onnx_model(self, artifact: _InMemory | OnnxSession) -> bytes | str | None:
        return _session(artifact).source

    def run_onnx_model(
        self, artifact: _InMemory | OnnxSession, model: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        session = OnnxSession(model, _session(artifact).device)
        names = [o.name for o in session.session.get_outputs()]
        return dict(zip(names, session(args, kwargs)))

    def device_fallback(self, artifact: _InMemory | OnnxSession) -> str | None:
        return _session(artifact).fallback

    def graph_optimizer(self, artifact: _InMemory | OnnxSession) -> GraphOptimizer | None:
        session = _session(artifact)
        return GraphOptimizer(session.runtime, session.optimization_levels, session.level)

    def at_level(self, artifact: _InMemory | OnnxSession, level: str) -> OnnxSession:
        return _session(artifact).at_level(level)

    def set_aside(self, artifact: _InMemory | OnnxSession) -> None:
        if isinstance(artifact, _InMemory):
            artifact.set_aside()


class DynamoOnnxBackend(_OnnxBackend):
    name = "onnx"
    shares_capture = True
    specializes_small_dims = True  # it captures the model through torch.export
    #: Larger weights go to an external-data file (protobuf caps a file at 2 GiB).
    external_data_bytes: int = 1 << 30

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        # Looked up, not imported: importing it here in the parent is slow.
        if _missing("onnxscript"):
            return "onnxscript is not installed; the dynamo ONNX exporter needs it: pip install onnxscript"
        return None

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _InMemory:
        module = keywords_bound(module, kwargs)
        shared = ctx.shared_capture()
        # An input dim that is another's plus a constant (a decode step's mask, "past+1") is an
        # expression in the shared capture, which the ONNX translation cannot name ("expected
        # sympy.Symbol", torch 2.13): it captures itself, with those dims left to the exporter.
        derives = getattr(ctx.plan, "derives", False)
        if shared is not None and (self.captures_otherwise(module) or derives):
            shared = None  # torch.onnx.export would capture differently: let it capture itself
        if shared is not None and shared.error is None:
            # [Shared Capture] Given a program, torch.onnx.export does not capture again.
            ctx.capture, model, dynamic = "shared", shared.program, None
            ctx.capture_s += shared.seconds
        else:
            model, dynamic = module, ctx.dynamic_shapes(module, derived_auto=derives)
        try:
            with (
                reused(),
                _own_capture(ctx, shared),
            ):
                program = torch.onnx.export(
                    model,
                    onnx_args(args, kwargs),
                    kwargs=kwargs or None,
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    verbose=False,
                )
        except Exception as exc:
            if type(exc).__name__ == "TorchExportError" and _repeats(shared):
                # Every fallback failed too: raise the shared capture's error, as torch.onnx.export would.
                assert shared is not None and shared.error is not None
                ctx.capture = "shared"
                ctx.capture_s += shared.seconds
                raise shared.error from None
            raise
        if program is None:  # pragma: no cover - torch versions that returned nothing
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
        artifact = _InMemory(program, ctx.device, self.name)
        if ctx.shipped is not None:
            artifact.ship(ctx)
        return artifact

    def captures_otherwise(self, module: torch.nn.Module) -> bool:
        """[Shared Capture] True for recurrent modules: ``torch.onnx.export`` decomposes LSTM and GRU
        into while loops (torch 2.13), while the plain capture unrolls them."""
        return any(isinstance(m, torch.nn.RNNBase) for m in module.modules())

    def steps_unavailable(self, shipped: ShippedOnnx) -> str | None:
        return onnx_shipped.unavailable_reason(shipped)

    def post_processing(self, artifact: _InMemory | OnnxSession) -> PostProcessing | None:
        return artifact.shipped if isinstance(artifact, _InMemory) else None

    def guard_violation(
        self, artifact: _InMemory | OnnxSession, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str | None:
        if not isinstance(artifact, _InMemory):  # a loaded model: no program
            return None
        program = getattr(artifact.program, "exported_program", None)
        if program is None:
            return None
        if artifact.guarded is None:
            module = program.module()
            # Its input guards alone where they are all it asserts: running the whole program
            # on every new size cost as much as running the artifact.
            artifact.guarded = program_guards(module) or (lambda a, k: module(*a, **k))
        try:
            with torch.no_grad():
                artifact.guarded(args, kwargs)
        except Exception as exc:  # noqa: BLE001 - any guard or assert failure is the answer
            text = str(exc).strip().splitlines()
            return text[0] if text else type(exc).__name__
        return None

    def save(self, artifact: _InMemory | OnnxSession, directory: Path) -> list[Path]:
        assert isinstance(artifact, _InMemory), "save takes the artifact export made, not a loaded one"
        if artifact.shipped is not None:  # the file that ships is the last step's
            path = directory / FILENAME
            path.write_bytes(artifact.stages[-1].data)
            return [path]
        weights = (
            sum(t.nbytes for t in artifact.program.exported_program.state_dict.values())
            if getattr(artifact.program, "exported_program", None) is not None
            else 0
        )
        artifact.program.save(str(directory / FILENAME), external_data=weights > self.external_data_bytes or None)
        return sorted(p for p in directory.iterdir() if p.is_file())


class LegacyOnnxBackend(_OnnxBackend):
    name = "onnx-legacy"

    def unavailable_reason(self) -> str | None:
        # The legacy exporter is built on TorchScript's tracer.
        return super().unavailable_reason() or torchscript_unavailable("trace")

    def export(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext
    ) -> _InMemory:
        buffer = io.BytesIO()
        if kwargs:
            # input_names below keeps the keyword names on the ONNX inputs.
            module, args = positional_adapter(module, args, kwargs)
            kwargs = {}
        torch.onnx.export(
            module,
            onnx_args(args, kwargs),
            buffer,  # type: ignore[arg-type]  # a file-like object is accepted
            kwargs=kwargs or None,
            dynamo=False,
            input_names=ctx.plan.onnx_input_names(),
            dynamic_axes=ctx.plan.onnx_dynamic_axes() or None,
            verbose=False,
        )
        return _InMemory(buffer.getvalue(), ctx.device, self.name)

    def save(self, artifact: _InMemory | OnnxSession, directory: Path) -> list[Path]:
        assert isinstance(artifact, _InMemory), "save takes the artifact export made, not a loaded one"
        path = directory / FILENAME
        path.write_bytes(artifact.program)
        return [path]


@contextlib.contextmanager
def _own_capture(ctx: ExportContext, shared: Captured | None) -> Iterator[None]:
    """[Shared Capture] Time ``torch.onnx.export``'s own capture, skipping the strategy that would
    repeat a failed shared capture."""
    if ctx.capture == "shared":
        yield
        return
    repeat = _repeats(shared)
    seconds: list[float] = []
    ctx.capture = "own"
    try:
        with onnx_capture_strategies(seconds, skip_non_strict=repeat):
            yield
    finally:
        ctx.capture_s += sum(seconds)
        ctx.own_capture_s += sum(seconds)


def _repeats(shared: Captured | None) -> bool:
    """Whether the non-strict strategy would repeat the failed shared capture."""
    return shared is not None and shared.error is not None and not _refinable(shared.error)


def _refinable(error: BaseException) -> bool:
    """Whether the non-strict strategy retries after ``error`` with suggested dims."""
    return type(error).__name__ == "UserError"


def _session(artifact: _InMemory | OnnxSession) -> OnnxSession:
    """The onnxruntime session an artifact runs."""
    return artifact.revived() if isinstance(artifact, _InMemory) else artifact


class _InMemory:
    """The exported program plus a session over it, read from a temporary file because
    onnxruntime keeps any bytes it is given alive."""

    def __init__(self, program: Any, device: str, name: str = "onnx") -> None:
        self.program = program
        #: raises where an input breaks the ExportedProgram's guards or runtime asserts; made on first use
        self.guarded: Callable[[tuple[Any, ...], dict[str, Any]], object] | None = None
        data = program if isinstance(program, bytes) else program.model_proto.SerializeToString()
        check_artifact(data, name)
        self.path = _spill(self, data)
        del data
        self.session: OnnxSession | None = OnnxSession(self.path, device)
        self.device = device
        self.stages: list[Any] = []
        self.shipped: PostProcessing | None = None

    @property
    def data(self) -> bytes:
        """The serialized model, read back from its file."""
        return Path(self.path).read_bytes()

    def set_aside(self) -> None:
        """Drop the session (a copy of the weights) until needed again."""
        if self.shipped is None:
            self.session = None

    def revived(self) -> OnnxSession:
        """The session, rebuilt if ``set_aside`` dropped it."""
        if self.session is None:
            self.session = OnnxSession(self.path, self.device)
        return self.session

    def ship(self, ctx: ExportContext) -> None:
        """[ONNX As Shipped] Apply ``ctx.shipped``'s steps; keep each step's model to blame."""
        # With an offline optimization step, earlier stages run unoptimized to isolate its rewrites.
        before = "ORT_DISABLE_ALL" if ctx.shipped.optimize is not None else None
        plain = self.session if before is None else OnnxSession(self.path, self.device, before)
        assert plain is not None, "post-processing runs on a fresh artifact, before any set_aside"
        calibration = None
        if ctx.shipped.quantize is not None and ctx.shipped.quantize.mode == "static":
            calibration = [plain.feed(a, k) for a, k in onnx_shipped.calibration_inputs(ctx.plan)]
        scratch = (ctx.scratch or Path(".")) / "onnx-shipped"
        data = self.data
        self.stages = onnx_shipped.process(data, ctx.shipped, scratch, calibration)
        depth = onnx_shipped.op_depth(data)
        del data
        budget = onnx_shipped.budget(ctx.shipped, depth)
        stages: list[tuple[str, Any]] = [("export", plain)]
        stages += [(stage.name, _Lazy(stage.data, self.device, stage.serve_level or before)) for stage in self.stages]
        try:
            self.session = OnnxSession(self.stages[-1].data, self.device)
        except Exception as exc:  # noqa: BLE001 - a step's output that onnxruntime refuses
            raise onnx_shipped.StepFailed(
                f"the model after the post-processing step {self.stages[-1].name} does not load in onnxruntime: "
                f"{type(exc).__name__}: {str(exc).strip()[:400]}"
            ) from exc
        widened = [
            o.name
            for o, p in zip(self.session.session.get_outputs(), plain.session.get_outputs())
            if o.type == "tensor(float16)" and p.type == "tensor(float)"
        ]
        if widened and ctx.shipped.fp16 is not None and ctx.shipped.fp16.keep_io_types:
            ctx.notes.append(
                f"the shipped model's output(s) {', '.join(widened)} are float16, though keep_io_types=True keeps "
                "float32 outputs (the converter casts blocked ops' results back to float16): callers get float16; "
                "the check compares them in float32"
            )
        self.shipped = PostProcessing(
            steps=[stage.name for stage in self.stages],
            stages=stages,
            budget=budget[0] if budget else None,
            budget_from=budget[1] if budget else "",
            op_depth=depth,
        )

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        return self.revived()(args, kwargs)


class _Lazy:
    """An intermediate step's model, whose session is built only when needed."""

    def __init__(self, data: bytes, device: str, level: str | None) -> None:
        self.data, self.device, self.level = data, device, level
        self._session: OnnxSession | None = None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if self._session is None:
            self._session = OnnxSession(self.data, self.device, self.level)
        return self._session(args, kwargs)


def _spill(owner: _InMemory, data: bytes) -> str:
    """``data`` in a temporary file, removed with ``owner``."""
    handle, path = tempfile.mkstemp(suffix=".onnx", prefix="in-memory-")
    with os.fdopen(handle, "wb") as f:
        f.write(data)
    weakref.finalize(owner, _remove, path, os.getpid())
    return path


def _remove(path: str, owner: int) -> None:
    # A forked child must leave the file to the process that made it.
    if os.getpid() == owner:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _missing(name: str) -> bool:
    """Whether package ``name`` is missing, without importing it."""
    if name in sys.modules:
        return sys.modules[name] is None
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


# ``torch.onnx.export(dynamo=True)`` rebuilds its op registry on every call, which costs more than
# exporting a small model. ``reused()`` keeps one per opset and gives each export a copy; it
# patches only around this package's own export call.


class _Uncopyable(Exception):  # noqa: N818 - not an error: carries the registry out of the cache
    """A registry of an unknown layout: returned as built, not cached."""

    def __init__(self, registry: object) -> None:
        super().__init__()
        self.registry = registry


@functools.lru_cache(maxsize=8)  # one per opset and keyword set
def _kept(build: Callable[..., Any], owner: type, args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> object:
    built = build(owner, *args, **dict(kwargs))
    if not isinstance(getattr(built, "functions", None), dict):
        raise _Uncopyable(built)
    return built


def _copy(registry: Any) -> object:
    copy = object.__new__(type(registry))
    copy.__dict__.update(registry.__dict__)
    copy.functions = {target: list(decomps) for target, decomps in registry.functions.items()}
    return copy


@contextlib.contextmanager
def reused() -> Iterator[None]:
    """Within: ``ONNXRegistry.from_torchlib`` builds once per opset, then copies."""
    cls = onnx_registry_class()
    if cls is None:  # a torch without the dynamo exporter
        yield
        return
    original = cls.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__func__

    def from_torchlib(owner: type, *args: object, **kwargs: object) -> object:
        try:
            kept = _kept(build, owner, args, tuple(sorted(kwargs.items())))
        except _Uncopyable as another_layout:
            return another_layout.registry
        return _copy(kept)

    cls.from_torchlib = classmethod(from_torchlib)  # type: ignore[attr-defined]  # onnx_registry_class() is typed `type`
    try:
        yield
    finally:
        cls.from_torchlib = original  # type: ignore[attr-defined]
