"""ONNX, run in onnxruntime: the dynamo exporter (``onnx``) and the TorchScript one (``onnx-legacy``).

The in-memory artifact is an onnxruntime session over the serialized model; the loaded
one is a new session over the saved file, so external-data files must sit beside it.
Every exported model also goes through ``onnx.checker.check_model(full_check=True)``:
onnxruntime runs models that stricter runtimes refuse (``check_artifact``). The dynamo
exporter's op registry is built once per process (``reused``, at the end: [One Torchlib Registry]).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .._compat import onnx_capture_strategies, onnx_registry_class, torchscript_unavailable
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

FILENAME = "model.onnx"
#: onnxruntime's graph optimization levels, least rewriting first; sessions run at its
#: default, the last, as deployed. The cause experiment reruns a failure at the others.
OPTIMIZATION_LEVELS = (
    "ORT_DISABLE_ALL",
    "ORT_ENABLE_BASIC",
    "ORT_ENABLE_EXTENDED",
    "ORT_ENABLE_LAYOUT",
    "ORT_ENABLE_ALL",
)


def check_artifact(data: bytes, name: str) -> None:
    """``onnx.checker.check_model(full_check=True)`` on an exported model; a failure is a
    warning carrying an ``onnx_checker`` finding, which the engine records like a
    TracerWarning (explain.py): it explains, the artifact is still checked for parity.

    ``onnx.load`` never runs the checker and onnxruntime is lenient (it merges a declared
    shape that contradicts the inferred one, with a log line), so a model it runs may be
    refused by TensorRT, OpenVINO or ``onnx.shape_inference`` in a converter.
    """
    import onnx

    try:
        onnx.checker.check_model(data, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError, ...: each is the finding
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

    ``level`` names a ``GraphOptimizationLevel`` (OPTIMIZATION_LEVELS); None is
    onnxruntime's default, ``ORT_ENABLE_ALL``, as models are served.
    """

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
        # onnxruntime's C++ logger writes kernel errors straight to stderr; the error
        # also comes back as the exception the engine reports, so log only fatal ones.
        options.log_severity_level = 4
        # onnxruntime's pool spin-waits after each run by default; between runs the engine
        # runs eager, which the spinning threads would starve of cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # [Memory Budget] The engine feeds many input shapes: the arena (which never shrinks)
        # and the memory pattern planned per shape kept every size's buffers, 6.7 GB for a
        # 268 MB output searched at 4x (benchmarks/bench_memory.py). Plain allocation frees them.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        if level is not None:
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        self.runtime = f"onnxruntime {ort.__version__}"
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        self.source = source  # the model, for localisation (onnx_model) and other levels
        self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        # [ONNX As Shipped] An offline-optimized file is served with the optimizations off
        # (onnx_shipped.py marks it so): load it as it is served.
        serve = self.session.get_modelmeta().custom_metadata_map.get(onnx_shipped.SERVE_LEVEL_KEY)
        if level is None and serve is not None and hasattr(ort.GraphOptimizationLevel, serve):
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, serve)
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        self.level = options.graph_optimization_level.name
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = device

    @property
    def optimization_levels(self) -> tuple[str, ...]:
        """The levels this onnxruntime has, least rewriting first (causes.runtime_optimizer)."""
        import onnxruntime as ort

        return tuple(level for level in OPTIMIZATION_LEVELS if hasattr(ort.GraphOptimizationLevel, level))

    def at_level(self, level: str) -> OnnxSession:
        """The same model in a new session at another graph optimization level."""
        return OnnxSession(self.source, self.device, level)

    def feed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's tensors as onnxruntime takes them: numpy arrays by input name, in the
        element type each input declares (a float16 model with float16 inputs takes those)."""
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
        # A float16 model that does not keep float32 outputs: compared in float32, as eager's.
        return [_widened(torch.from_numpy(o)).to(self.device) for o in outputs]


def _widened(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype == torch.float16 else t


class _OnnxBackend(Backend):
    loads_without_python = True
    relowered = True
    #: onnxruntime takes the call's tensors by position (``OnnxSession.feed``): the standalone
    #: loader is sent them flat, as a deployment feeds them (stages/standalone.py)
    feeds_flat_tensors = True

    def unavailable_reason(self) -> str | None:
        for lib in ("onnx", "onnxruntime"):
            try:
                __import__(lib)
            except ImportError as exc:
                return f"{lib} is not installed ({exc}): pip install onnx onnxruntime"
        return None

    def load(self, directory: Path, ctx: ExportContext) -> Any:
        return OnnxSession(str(directory / FILENAME), ctx.device)

    def run(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return artifact(args, kwargs)

    def input_shapes(self, artifact: Any) -> list[tuple[Any, ...]] | None:
        return [
            tuple(d if isinstance(d, int) else None for d in i.shape) for i in _session(artifact).session.get_inputs()
        ]

    def onnx_model(self, artifact: Any) -> bytes | str | None:
        return _session(artifact).source

    def run_onnx_model(
        self, artifact: Any, model: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        session = OnnxSession(model, _session(artifact).device)
        names = [o.name for o in session.session.get_outputs()]
        return dict(zip(names, session(args, kwargs)))

    def device_fallback(self, artifact: Any) -> str | None:
        return _session(artifact).fallback

    def graph_optimizer(self, artifact: Any) -> GraphOptimizer | None:
        session = _session(artifact)
        return GraphOptimizer(session.runtime, session.optimization_levels, session.level)

    def at_level(self, artifact: Any, level: str) -> Any:
        return _session(artifact).at_level(level)

    def set_aside(self, artifact: Any) -> None:
        if isinstance(artifact, _InMemory):
            artifact.set_aside()


class DynamoOnnxBackend(_OnnxBackend):
    name = "onnx"
    shares_capture = True
    specializes_small_dims = True  # it captures the model through torch.export
    #: Weights above this size go to an external-data file beside the .onnx (protobuf
    #: caps a single file at 2 GiB).
    external_data_bytes: int = 1 << 30

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        if reason:
            return reason
        # Looked up, not imported: its import takes ~1 s, which the check's child pays anyway
        # when it exports, while asked here (in the parent, before the fork) it held up every
        # check of the test behind it.
        if _missing("onnxscript"):
            return "onnxscript is not installed; the dynamo ONNX exporter needs it: pip install onnxscript"
        return None

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        module = keywords_bound(module, kwargs)
        shared = ctx.shared_capture()
        if shared is not None and self.captures_otherwise(module):
            shared = None  # its own entry point captures otherwise: every strategy of its own runs
        if shared is not None and shared.error is None:
            # [Shared Capture] Given the program, torch.onnx.export skips its capture strategies.
            ctx.capture, model, dynamic = "shared", shared.program, None
            ctx.capture_s += shared.seconds
        else:
            model, dynamic = module, ctx.dynamic_shapes(module)
        try:
            with (
                reused(),
                _own_capture(ctx, shared),
            ):  # its op registry built once per process, not per export
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
                # Every fallback failed too: the error is the shared capture's, as torch.onnx.export
                # itself raises its first strategy's, and the row says the capture it names was shared.
                assert shared is not None and shared.error is not None  # _repeats said so
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

    def captures_otherwise(self, module: Any) -> bool:
        """[Shared Capture] Whether ``torch.onnx.export``'s own capture of ``module`` is not the shared
        one: under dynamic shapes its strategies register while-loop decompositions of LSTM and GRU
        (``torch.export._patches``, torch 2.13), so a recurrent module's ONNX graph is not made from
        the plain capture (which unrolls the loop at the example's length). Its onnx check captures
        on its own; the other backends still share theirs (stages/capture.py)."""
        return any(isinstance(m, torch.nn.RNNBase) for m in module.modules())

    def steps_unavailable(self, shipped: Any) -> str | None:
        return onnx_shipped.unavailable_reason(shipped)

    def post_processing(self, artifact: Any) -> PostProcessing | None:
        return artifact.shipped if isinstance(artifact, _InMemory) else None

    def guard_violation(self, artifact: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        program = getattr(getattr(artifact, "program", None), "exported_program", None)
        if program is None:
            return None
        if artifact.guarded is None:
            artifact.guarded = program.module()
        try:
            with torch.no_grad():
                artifact.guarded(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any guard or assert failure is the answer
            text = str(exc).strip().splitlines()
            return text[0] if text else type(exc).__name__
        return None

    def save(self, artifact: Any, directory: Path) -> list[Path]:
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
        # The legacy exporter is TorchScript's tracer underneath (torch.jit._get_trace_graph):
        # where torch.jit raises, it cannot export either.
        return super().unavailable_reason() or torchscript_unavailable("trace")

    def export(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: ExportContext) -> Any:
        buffer = io.BytesIO()
        if kwargs:
            # Named by input_names below: the ONNX inputs keep the keyword names.
            module, args = positional_adapter(module, args, kwargs)
            kwargs = {}
        torch.onnx.export(
            module,
            onnx_args(args, kwargs),
            buffer,  # type: ignore[arg-type]  # a file-like object is what the legacy exporter writes to
            kwargs=kwargs or None,
            dynamo=False,
            input_names=ctx.plan.onnx_input_names(),
            dynamic_axes=ctx.plan.onnx_dynamic_axes() or None,
            verbose=False,
        )
        return _InMemory(buffer.getvalue(), ctx.device, self.name)

    def save(self, artifact: Any, directory: Path) -> list[Path]:
        path = directory / FILENAME
        path.write_bytes(artifact.program)
        return [path]


@contextlib.contextmanager
def _own_capture(ctx: ExportContext, shared: Any) -> Any:
    """[Shared Capture] Around ``torch.onnx.export`` given the module: its capture strategies timed
    (``ctx.capture_s``). Where the shared capture failed, its non-strict strategy (the same
    ``torch.export.export`` call) is left out and the fallbacks that differ (strict, draft export)
    still run; a constraint violation is the exception: that strategy retries with the dims
    torch suggests, other arguments than the shared capture's."""
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


def _repeats(shared: Any) -> bool:
    """Whether ``torch.onnx.export``'s non-strict strategy would repeat the shared capture that failed."""
    return shared is not None and shared.error is not None and not _refinable(shared.error)


def _refinable(error: BaseException) -> bool:
    """Whether the non-strict strategy of ``torch.onnx.export`` retries after ``error``: a
    ``torch._dynamo.exc.UserError`` (a constraint violation) with suggested fixes."""
    return type(error).__name__ == "UserError"


def _session(artifact: Any) -> OnnxSession:
    """The onnxruntime session an artifact runs: the loaded one is a session, the in-memory one holds one."""
    return artifact.revived() if isinstance(artifact, _InMemory) else artifact


class _InMemory:
    """The exported program plus a session over it, before the check saves it.

    [Spilled Model] The serialized model is written to a file of this process's temporary
    folder and the session is made from that path: onnxruntime keeps the bytes it was given
    for as long as the session lives (``InferenceSession._model_bytes``), and parses a path
    with half the peak (DenseNet169 3-D, 75 MB of weights: 136 MB against 267 MB while the
    session is made, 133 MB against 205 MB after). The file goes with the artifact."""

    def __init__(self, program: Any, device: str, name: str = "onnx") -> None:
        self.program = program
        self.guarded: Any = None  # the ExportedProgram's module, with its runtime asserts
        data = program if isinstance(program, bytes) else program.model_proto.SerializeToString()
        check_artifact(data, name)
        self.path = _spill(self, data)
        del data
        self.session: OnnxSession | None = OnnxSession(self.path, device)
        self.device = device
        self.stages: list[Any] = []  # onnx_shipped.Stage per post-processing step
        self.shipped: PostProcessing | None = None

    @property
    def data(self) -> bytes:
        """The serialized model, read back from its file (post-processing reads it; rarely)."""
        return Path(self.path).read_bytes()

    def set_aside(self) -> None:
        """[Set Aside] Kept for round-trip blame only: drop the session (onnxruntime's copy of the
        weights: ~90 MB for DenseNet169 3-D), made again from the file if a loaded artifact fails."""
        if self.shipped is None:
            self.session = None

    def revived(self) -> OnnxSession:
        """The session, made again from the file where ``set_aside`` dropped it."""
        if self.session is None:
            self.session = OnnxSession(self.path, self.device)
        return self.session

    def ship(self, ctx: ExportContext) -> None:
        """[ONNX As Shipped] The exported model through the steps ``ctx.shipped`` asks for: this
        artifact then runs the last step's model, as it is served; the model before each step
        stays runnable for blame."""
        # Before an offline optimization, each stage runs with onnxruntime's optimizations off,
        # so blame tells that step's rewrites from the others; without one, as it is served.
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
    """An intermediate step's model, its session built when a failure is blamed (rarely)."""

    def __init__(self, data: bytes, device: str, level: str | None) -> None:
        self.data, self.device, self.level = data, device, level
        self._session: OnnxSession | None = None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        if self._session is None:
            self._session = OnnxSession(self.data, self.device, self.level)
        return self._session(args, kwargs)


def _spill(owner: Any, data: bytes) -> str:
    """[Spilled Model] ``data`` in a file of this process's temporary folder (a check's child:
    its scratch folder), removed when ``owner`` is collected in this process."""
    handle, path = tempfile.mkstemp(suffix=".onnx", prefix="in-memory-")
    with os.fdopen(handle, "wb") as f:
        f.write(data)
    weakref.finalize(owner, _remove, path, os.getpid())
    return path


def _remove(path: str, owner: int) -> None:
    # As reference/noise.py's Float64Store: a forked child that collects its inherited copy of the
    # artifact leaves the file to the process that made it, whose session may be made from it again.
    if os.getpid() == owner:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _missing(name: str) -> bool:
    """Whether the top-level package ``name`` cannot be found (without importing it)."""
    if name in sys.modules:
        return sys.modules[name] is None
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


# [One Torchlib Registry] The dynamo ONNX exporter's op registry, built once per process.
#
# ``torch.onnx.export(dynamo=True)`` builds its registry of ATen-to-ONNX translations anew on
# every call (``ONNXRegistry.from_torchlib``): onnxscript reads the source of ~500 torchlib
# functions and parses their signatures. That is 0.6-1.2 s of every ONNX export here, more
# than the export of a small model itself (measured: a 2-layer MLP's export 0.95 s, of which
# 0.6 s was the registry; ``benchmarks/bench_floor.py``). The registry depends only on the
# installed torch and onnxscript and the opset, which do not change within a process.
#
# ``reused()`` keeps the first registry built for an opset and hands each export a copy of
# its tables (lists copied, so an export's ``custom_translation_table`` or any other
# registration lands in its own copy, never in the one kept). The patch is in place only
# around this package's own export call, so a test's own ``torch.onnx.export`` is untouched,
# and a torch without ``from_torchlib`` where this expects it simply builds its registry as
# before. Forked check children inherit the kept registry from their parent.


class _Uncopyable(Exception):  # noqa: N818 - not an error: the registry, returned as built
    """A registry of another layout: no copy we trust, so it is returned as built, never kept
    (``lru_cache`` keeps no call that raised)."""

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry


@functools.lru_cache(maxsize=8)  # one per opset (and keyword set) asked in this process
def _kept(build: Callable[..., Any], owner: type, args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> Any:
    built = build(owner, *args, **dict(kwargs))
    if not isinstance(getattr(built, "functions", None), dict):
        raise _Uncopyable(built)
    return built


def _copy(registry: Any) -> Any:
    copy = object.__new__(type(registry))
    copy.__dict__.update(registry.__dict__)
    copy.functions = {target: list(decomps) for target, decomps in registry.functions.items()}
    return copy


@contextlib.contextmanager
def reused() -> Iterator[None]:
    """Within: ``ONNXRegistry.from_torchlib`` builds a registry once per opset, then copies it."""
    cls = onnx_registry_class()
    if cls is None:  # a torch without the dynamo exporter: nothing to reuse
        yield
        return
    original = cls.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__func__

    def from_torchlib(owner: type, *args: Any, **kwargs: Any) -> Any:
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
