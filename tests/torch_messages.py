"""The messages of torch (and onnx, onnxruntime, pickle) that the plugin reads, produced for real.

Each producer makes the installed torch say one thing the plugin matches a pattern against
(an exporter's error, a TracerWarning, what a load in a fresh process logs and raises) and
returns that text as the plugin sees it. tests/test_torch_message_patterns.py runs them live and
keeps each torch's text as data; to record the texts of another torch, run this file with
that torch's interpreter:

    PYTHONPATH=. /path/to/venv/bin/python tests/torch_messages.py > messages-<version>.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from models import fresh_process_lacks

from pytest_torchexport._compat import quiet_torch

PRODUCERS: dict[str, Callable[[], str]] = {}


def producer(fn: Callable[[], str]) -> Callable[[], str]:
    PRODUCERS[fn.__name__] = fn
    return fn


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        with quiet_torch(fds=True):  # the legacy ONNX exporter prints its graph from C++
            fn()
    except Exception as exc:  # noqa: BLE001 - the exception is what is produced
        return exc
    raise AssertionError(f"{fn} raised nothing on torch {torch.__version__}")


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _tracer_warning(module: torch.nn.Module, *args: torch.Tensor) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_torch() as captured:
            torch.jit.trace(module, args, check_trace=False)
    found = [str(w.message) for w in [*caught, *captured.warnings] if issubclass(w.category, torch.jit.TracerWarning)]
    assert found, f"torch {torch.__version__} raised no TracerWarning tracing {type(module).__name__}"
    return found[0]


# ---- TracerWarning texts (results/explain.py, _TRACER_KINDS) ----------------------------


class _Branch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


class _Iterate(torch.nn.Module):
    def forward(self, x):
        return torch.stack([row * 2 for row in x])


class _Int(torch.nn.Module):
    def forward(self, x):
        return x * int(x.sum())


class _Float(torch.nn.Module):
    def forward(self, x):
        return x * float(x.sum())


class _Item(torch.nn.Module):
    def forward(self, x):
        return x * x.sum().item()


class _Constant(torch.nn.Module):
    def forward(self, x):
        return x * torch.tensor(x.shape[0])


#: Each model traced on a (2, 3) input: the TracerWarning it makes torch write.
_TRACED = {
    "tracer_python_boolean": _Branch,
    "tracer_iterating": _Iterate,
    "tracer_python_integer": _Int,
    "tracer_python_float": _Float,
    "tracer_python_number": _Item,
    "tracer_constant": _Constant,
}


def _traced(model: type[torch.nn.Module]) -> Callable[[], str]:
    return lambda: _tracer_warning(model(), torch.ones(2, 3))


PRODUCERS.update({name: _traced(model) for name, model in _TRACED.items()})


@producer
def jit_deprecation() -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(_Item(), (torch.ones(2),), check_trace=False)
    said = [
        w
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "torch.jit" in str(w.message)
    ]
    assert said, f"torch {torch.__version__} did not warn that torch.jit.trace is deprecated"
    return f"{said[0].category.__name__}: {said[0].message}"


# ---- exporters' errors (results/explain.py _ERROR_KINDS, trim_error; stages/) -------------


class _ReturnsText(torch.nn.Module):
    def forward(self, x):
        return x + 1, "done"


@producer
def trace_non_tensor_output() -> str:
    return _text(_raised(lambda: torch.jit.trace(_ReturnsText(), (torch.ones(2),), check_trace=False)))


@producer
def export_data_dependent() -> str:
    return _text(_raised(lambda: torch.export.export(_Branch(), (torch.ones(2, 3),))))


class _Fixed(torch.nn.Module):
    def forward(self, x):
        return x.reshape(4, 3)


@producer
def export_constraints_violated() -> str:
    batch = torch.export.Dim("batch", min=2, max=16)
    return _text(_raised(lambda: torch.export.export(_Fixed(), (torch.ones(4, 3),), dynamic_shapes={"x": {0: batch}})))


class _Id(torch.nn.Module):
    def forward(self, x):
        return x * id(x)


class _Undefined(torch.nn.Module):
    def forward(self, x):
        return x + not_defined_anywhere  # noqa: F821 - what TorchScript refuses


class _Builtin(torch.nn.Module):
    def forward(self, x):
        return x * len(vars(self))


class _ModuleValue(torch.nn.Module):
    def forward(self, x):
        return x + warnings


#: Each model TorchScript refuses to compile: the error it makes torch raise.
_SCRIPTED = {
    "script_expected_type": _Id,
    "script_undefined_value": _Undefined,
    "script_python_builtin": _Builtin,
    "script_module_as_value": _ModuleValue,
}


def _scripted(model: type[torch.nn.Module]) -> Callable[[], str]:
    return lambda: _text(_raised(lambda: torch.jit.script(model())))


PRODUCERS.update({name: _scripted(model) for name, model in _SCRIPTED.items()})


class _Bessel(torch.nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)


@producer
def onnx_legacy_unsupported_op() -> str:
    import io

    return _text(_raised(lambda: torch.onnx.export(_Bessel(), (torch.ones(3),), io.BytesIO(), dynamo=False)))


@producer
def script_runtime_size() -> str:
    with quiet_torch():
        scripted = torch.jit.script(_FixedScript())
    return _text(_raised(lambda: scripted(torch.ones(5, 3))))


class _FixedScript(torch.nn.Module):
    def forward(self, x):
        return x.view(4, 3)


@producer
def onnx_unsupported_op() -> str:
    class Eig(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real

    return _text(_raised(lambda: torch.onnx.export(Eig(), (torch.ones(3, 3),), dynamo=True)))


@producer
def export_scripted_module() -> str:
    with quiet_torch():
        scripted = torch.jit.script(_FixedScript())
    return _text(_raised(lambda: torch.onnx.export(scripted, (torch.ones(4, 3),), dynamo=True)))


# ---- what a load in a fresh process reached for (isolation/loader.py, _REACHED) ------------

_SAVE = fresh_process_lacks("msg_probe") + textwrap.dedent(
    """
    import sys

    out = sys.argv[1]
    x = torch.ones(2, 4)
    torch.export.save(torch.export.export(WithOp(), (x,)), out + "/op.pt2")
    torch.export.save(torch.export.export(Tree(), (x,)), out + "/tree.pt2")
    torch.jit.save(torch.jit.trace(WithOp(), (x,)), out + "/op.pt")
    """
)

# As the loader does: what torch logs while loading, then the exception's traceback.
_LOAD = textwrap.dedent(
    """
    import json, logging, sys, traceback
    import torch

    records = []

    def without_frames(text):
        # each chained exception's own lines, without the frames (they name this machine's paths)
        return [line for line in text.splitlines() if not line.startswith((" ", "Traceback"))]

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
            if record.exc_info:
                records.extend(without_frames("".join(traceback.format_exception(*record.exc_info))))

    for name in ("torch", "torch.export"):  # torch.export does not propagate to torch
        logging.getLogger(name).addHandler(Keep(level=logging.WARNING))
    out = sys.argv[1]
    texts = {}
    for name, load in (("op.pt2", torch.export.load), ("tree.pt2", torch.export.load), ("op.pt", torch.jit.load)):
        records.clear()
        try:
            load(out + "/" + name)
            texts[name] = ["loaded"]
        except Exception as exc:
            texts[name] = [*records, *without_frames("".join(traceback.format_exception(exc)))]
    print(json.dumps(texts))
    """
)


def _loads() -> dict[str, list[str]]:
    if not _LOADED:
        with tempfile.TemporaryDirectory() as tmp:
            for script in (_SAVE, _LOAD):
                proc = subprocess.run(
                    [sys.executable, "-W", "ignore", "-c", script, tmp], capture_output=True, text=True, timeout=300
                )
                assert proc.returncode == 0, proc.stderr[-3000:]
            _LOADED.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return _LOADED


_LOADED: dict[str, list[str]] = {}


def _last_lines(lines: list[str]) -> str:
    return "\n".join(line for line in lines if line.strip())


@producer
def load_pt2_custom_op() -> str:
    return _last_lines(_loads()["op.pt2"])


@producer
def load_pt2_pytree_type() -> str:
    return _last_lines(_loads()["tree.pt2"])


@producer
def load_torchscript_custom_op() -> str:
    return _last_lines(_loads()["op.pt"])


@producer
def ops_namespace_missing() -> str:
    return _text(_raised(lambda: torch.ops.msg_probe_absent.twice))


class _Gone:
    pass


@producer
def pickle_missing_class() -> str:
    import pickle

    # Protocol 0 names the class as text: point it at a module that has no such class.
    data = pickle.dumps(_Gone(), protocol=0)
    data = data.replace(f"c{_Gone.__module__}\n_Gone".encode(), b"ctorch.nn\n_Gone")
    return _text(_raised(lambda: pickle.loads(data)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    texts = {"torch": torch.__version__}
    for name, fn in PRODUCERS.items():
        try:
            texts[name] = fn()
        except Exception as exc:  # noqa: BLE001 - recorded as what it is
            texts[name] = f"PRODUCER FAILED: {type(exc).__name__}: {exc}"
    print(json.dumps(texts, indent=1))
