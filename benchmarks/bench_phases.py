"""The exporters' phases, side by side: each backend capturing on its own against one shared capture.

For each model, the seconds of each phase of each backend's export, save, load and
first run, measured in this one process at one intra-op thread (as a check's child runs):

- ``capture``: ``torch.export.export(module, args, dynamic_shapes=..., strict=False)``, the
  plan's dynamic shapes (the batch dim, as the plugin declares it by default);
- ``lower``: what a backend does after the capture: ONNX's decompositions (``onnx`` splits it
  into ``decomp`` and ``translate``), AOTInductor's compile, ExecuTorch's
  ``to_edge_transform_and_lower`` (``to_executorch`` is its ``serialize``), TorchScript's
  trace or script (no capture of torch.export's: their ``lower`` is their whole capture);
- ``optimize``: the ONNX optimizer (``ONNXProgram.optimize``, which ``torch.onnx.export`` runs);
- ``save``, ``load``, ``first run``: the artifact to a file, loaded back as the check loads
  it, and its first call on the example.

Two ways, alternated per model (``--repeat`` rounds, each way first in turn, the fastest kept), in one run:

- ``separate``: as before the shared capture, every backend of ``THROUGH`` captures the call itself
  (``torch.onnx.export`` given the module, which runs its own non-strict capture first);
- ``shared``: the call captured once, each of those backends starting from that program
  (``torch.onnx.export`` given the ``ExportedProgram`` skips its capture strategies).

Printed: a table per model and way, then per model the seconds of the backends that start
from ``torch.export`` (capture and lowering, not save/load/run, which the capture does not
change) each way, and their ratio. This machine's 2 cores are shared by other work: the
seconds are noisy, the ratios measured back to back less so.

    python benchmarks/bench_phases.py                    # cnn, conv3d, bert; aoti and executorch on cnn only
    python benchmarks/bench_phases.py --models cnn --repeat 3
    python benchmarks/bench_phases.py --lowered all      # AOTInductor and ExecuTorch on every model (minutes each)
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Inductor's caches would hand the second way AOTInductor's compile of the first: each compiles anew.
os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

#: The backends whose export starts with torch.export's capture of the recorded call.
THROUGH = ("export", "onnx", "aoti", "executorch")
PHASES = (
    "capture",
    "decomp+translate",
    "decomp",
    "translate",
    "lower",
    "optimize",
    "serialize",
    "save",
    "load",
    "first run",
)


class CNN(nn.Module):
    """A small residual image classifier (a ResNet's shape at a tenth of its width)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.BatchNorm2d(c),
            )
            for c in (16, 16, 16, 16)
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


class Conv3d(nn.Module):
    """A small 3-D encoder-decoder (a segmentation network's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.InstanceNorm3d(8),
            nn.LeakyReLU(),
            nn.Conv3d(8, 16, 3, stride=2, padding=1),
            nn.InstanceNorm3d(16),
            nn.LeakyReLU(),
        )
        self.up = nn.ConvTranspose3d(16, 8, 2, stride=2)
        self.out = nn.Conv3d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down[:3](x)
        return self.out(torch.cat([self.up(self.down[3:](skip)), skip], 1))


def bert() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    ids = torch.randint(0, 512, (2, 16))
    return model, (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def models() -> dict[str, Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]]:
    return {
        "cnn": lambda: (CNN().eval(), (torch.randn(2, 3, 64, 64),), {}),
        "conv3d": lambda: (Conv3d().eval(), (torch.randn(2, 1, 24, 24, 24),), {}),
        "bert": bert,
    }


def dynamic_shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The batch dim dynamic on every tensor input, as the plugin declares it by default."""
    batch = torch.export.Dim("batch", min=1, max=16)
    if kwargs:
        return {k: {0: batch} for k in kwargs}
    return tuple({0: batch} for _ in args)


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __call__(self, phase: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0
        return value


def capture(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return torch.export.export(model, args, kwargs or None, dynamic_shapes=dynamic_shapes(args, kwargs), strict=False)


def run_backend(
    name: str, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], program: Any, scratch: Path
) -> dict[str, float]:
    """One backend's phases; ``program``: the shared capture, or None (the backend captures itself)."""
    timer = Timer()
    with torch.no_grad():
        if name in THROUGH and name != "onnx" and program is None:
            program = timer("capture", lambda: capture(model, args, kwargs))
        if name == "export":
            path = scratch / "model.pt2"
            timer("save", lambda: torch.export.save(program, str(path)))
            loaded = timer("load", lambda: torch.export.load(str(path)).module())
            timer("first run", lambda: loaded(*args, **kwargs))
        elif name == "onnx":
            run_onnx(timer, model, args, kwargs, program, scratch)
        elif name == "aoti":
            path = str(scratch / "model_aoti.pt2")
            timer("lower", lambda: torch._inductor.aoti_compile_and_package(program, package_path=path))
            runner = timer("load", lambda: torch._inductor.aoti_load_package(path))
            timer("first run", lambda: runner(*args, **kwargs))
        elif name == "executorch":
            run_executorch(timer, program, args, kwargs, scratch)
        elif name in ("trace", "script"):
            if name == "trace":
                made = timer(
                    "lower",
                    lambda: torch.jit.trace(model, args or None, example_kwarg_inputs=kwargs or None, strict=False),
                )
            else:  # a copy: a module scripted once cannot be scripted again (its methods are defined)
                made = timer("lower", lambda: torch.jit.script(copy.deepcopy(model)))
            buffer = io.BytesIO()
            timer("save", lambda: torch.jit.save(made, buffer))
            loaded = timer("load", lambda: torch.jit.load(io.BytesIO(buffer.getvalue())))
            timer("first run", lambda: loaded(*args, **kwargs))
    return timer.phases


def run_onnx(
    timer: Timer, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], program: Any, scratch: Path
) -> None:
    import onnxruntime as ort
    from torch.onnx._internal.exporter import _core, _registration

    from pytest_torchexport.backends import onnx as onnx_backend

    with onnx_backend.reused():  # the registry built once per process, as the plugin does
        if program is None:
            # torch.onnx.export's own capture, decompositions and translation in one call; its capture
            # strategies timed apart (the plugin's own timing of them, _compat.onnx_capture_strategies).
            from pytest_torchexport._compat import onnx_capture_strategies

            seconds: list[float] = []
            with onnx_capture_strategies(seconds, skip_non_strict=False):
                onnx_program = timer(
                    "decomp+translate",
                    lambda: torch.onnx.export(
                        model,
                        args,
                        kwargs=kwargs or None,
                        dynamo=True,
                        dynamic_shapes=dynamic_shapes(args, kwargs),
                        optimize=False,
                        verbose=False,
                    ),
                )
            timer.phases["capture"] = sum(seconds)
            timer.phases["decomp+translate"] -= sum(seconds)
        else:
            registry = _registration.ONNXRegistry.from_torchlib()
            decomposed = timer("decomp", lambda: _core._prepare_exported_program_for_export(program, registry=registry))
            onnx_program = timer(
                "translate", lambda: _core._exported_program_to_onnx_program(decomposed, registry=registry)
            )
    timer("optimize", onnx_program.optimize)
    path = str(scratch / "model.onnx")
    timer("save", lambda: onnx_program.save(path))
    session = timer("load", lambda: ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), tensors)}
    timer("first run", lambda: session.run(None, feed))


def run_executorch(timer: Timer, program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], scratch: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    edge = timer("lower", lambda: to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]))
    buffer = timer("serialize", lambda: bytes(edge.to_executorch().buffer))
    path = scratch / "model.pte"
    timer("save", lambda: path.write_bytes(buffer))

    def load() -> Any:
        loaded = Runtime.get().load_program(str(path))
        return loaded, loaded.load_method("forward")

    _, method = timer("load", load)
    timer("first run", lambda: method.execute([*args, *kwargs.values()]))


def one_way(
    way: str, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], backends: list[str]
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    rows: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    program = None
    if way == "shared" and any(b in THROUGH for b in backends):
        timer = Timer()
        with torch.no_grad():
            program = timer("capture", lambda: capture(model, args, kwargs))
        rows["(shared capture)"] = timer.phases
    for name in backends:
        with tempfile.TemporaryDirectory(prefix=f"phases-{name}-") as scratch:
            try:
                rows[name] = run_backend(name, model, args, kwargs, program if name in THROUGH else None, Path(scratch))
            except Exception as exc:  # noqa: BLE001 - a backend that fails on a model is a row saying so
                errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
    return rows, errors


def fastest(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per row and phase, the fastest of two rounds."""
    return {row: {p: min(v, b.get(row, {}).get(p, v)) for p, v in phases.items()} for row, phases in a.items()}


def table(title: str, rows: dict[str, dict[str, float]], errors: dict[str, str]) -> str:
    used = [p for p in PHASES if any(p in phases for phases in rows.values())]
    head = f"| {title} | " + " | ".join(used) + " | total |"
    lines = [head, "|---" * (len(used) + 2) + "|"]
    for row, phases in rows.items():
        cells = [f"{phases[p]:.2f}" if p in phases else "" for p in used]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {sum(phases.values()):.2f} |")
    for row, error in errors.items():
        lines.append(f"| {row} | failed: {error} |")
    return "\n".join(lines)


def exporting_seconds(rows: dict[str, dict[str, float]]) -> float:
    """The seconds of the capture and the lowering of the backends that start from torch.export."""
    keep = ("capture", "decomp+translate", "decomp", "translate", "lower", "optimize", "serialize")
    return sum(
        v
        for row, phases in rows.items()
        if row in THROUGH or row == "(shared capture)"
        for p, v in phases.items()
        if p in keep
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,conv3d,bert")
    parser.add_argument("--backends", default="export,onnx,aoti,executorch,trace,script")
    parser.add_argument(
        "--lowered",
        default="cnn",
        help="models AOTInductor and ExecuTorch run on ('all', or names): their lowering takes minutes",
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both ways, in turn first; the fastest kept")
    options = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # the exporters' deprecation chatter, not what is measured
    torch.set_num_threads(1)  # as a check's child runs
    torch.manual_seed(0)
    warm, warm_args = nn.Linear(4, 4).eval(), (torch.randn(2, 4),)
    wanted = options.backends.split(",")
    with tempfile.TemporaryDirectory() as scratch:  # first uses (imports, registrations) paid before any timing
        for name in wanted:
            try:
                run_backend(name, warm, warm_args, {}, None, Path(scratch))
            except Exception:  # noqa: BLE001 - the timed run says what fails
                pass
    summary = []
    for model_name in options.models.split(","):
        model, args, kwargs = models()[model_name]()
        slow = options.lowered == "all" or model_name in options.lowered.split(",")
        backends = [b for b in wanted if b not in ("aoti", "executorch") or slow]
        best: dict[str, dict[str, dict[str, float]]] = {}
        failed: dict[str, dict[str, str]] = {}
        for round_ in range(options.repeat):
            for way in ("separate", "shared")[:: 1 if round_ % 2 == 0 else -1]:  # neither way always second
                rows, errors = one_way(way, model, args, kwargs, backends)
                best[way] = fastest(rows, best[way]) if way in best else rows
                failed[way] = errors
        for way in ("separate", "shared"):
            print(f"\n{model_name}, {way} capture (seconds)\n" + table(way, best[way], failed[way]), flush=True)
        separate, shared = exporting_seconds(best["separate"]), exporting_seconds(best["shared"])
        through = ",".join(b for b in backends if b in THROUGH and b not in failed["separate"])
        summary.append(f"| {model_name} | {through} | {separate:.2f} | {shared:.2f} | {shared / separate:.2f} |")
    print("\ncapture and lowering of the backends that start from torch.export (seconds)")
    print("| model | backends | separate | shared | shared/separate |\n|---|---|---|---|---|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
