"""Replay a failing example saved by ``--torchexport-repro-dir``: ``python -m pytest_torchexport replay FILE``.

The file (``search/repro.py``) is read with ``torch.load(weights_only=True)``, which runs no
code, and the module is rebuilt from its classes as imported from this checkout. Replay
exports again, runs the failing input through the artifact and eager, and exits 1 while the
failure reproduces, 0 once fixed, 2 when it cannot replay.

A file that needs unpickling is refused unless ``--allow-pickle`` is given, because
unpickling runs whatever code the file names. See docs/report.md.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._compat import quiet_torch
from .backends.base import ExportContext, load_backend
from .inputs.specs import plan_inputs
from .options import BUILTIN_BACKENDS
from .reference.compare import compare
from .reference.eager import Eager, run_artifact
from .search.repro import NotPlain, printable, rebuild, resolve_class

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    import torch

    from .backends.base import Backend
    from .reference.eager import Eager

    T = TypeVar("T")

#: How a person runs it.
COMMAND = "python -m pytest_torchexport replay"
#: The exit code when the file cannot be replayed (as argparse's for a bad command line).
CANNOT = 2
_ALLOW = "--allow-pickle"
#: What every repro file holds (``search/repro.py``).
_KEYS = ("module_class", "backend", "device", "options", "export_inputs", "failing_inputs", "failing_kwargs", "test")


def replay(path: str, allow_pickle: bool = False) -> int:
    data = _load(path, allow_pickle)
    if data is None:
        return CANNOT
    module = _module(path, data, allow_pickle)
    if module is None:
        return CANNOT
    name, device = data["backend"], data["device"]
    if name not in BUILTIN_BACKENDS:
        print(f"cannot replay: {name} is a third-party backend; replay runs built-in backends only")
        return CANNOT
    backend = load_backend(BUILTIN_BACKENDS[name])
    opts = data["options"]
    export_args, export_kwargs = data["export_inputs"]
    plan = plan_inputs(module, export_args, export_kwargs, dims=opts["dims"], dynamic=opts["dynamic"])
    eager = Eager(module, device)

    what = data["test"] or f"a check() call of {data['module_class'].rpartition(':')[2]}"
    print(f"replaying {what} on {name} ({device})")
    if data.get("artifact_dir"):
        print(f"the artifact of the failing run is kept in {data['artifact_dir']}")
    # Laid out as the engine lays them out: an aoti package runs from its directory.
    with tempfile.TemporaryDirectory(prefix="torchexport-replay-") as scratch:
        ctx = ExportContext(device=device, plan=plan, module=eager.module, scratch=Path(scratch))
        with quiet_torch(fds=True):
            artifact = backend.export(eager.module, export_args, export_kwargs, ctx)
            if backend.saveable:
                directory = Path(scratch) / "artifact"
                directory.mkdir()
                backend.save(artifact, directory)
                artifact = backend.load(directory, ctx)
        return _verdict(backend, artifact, eager, data)


def _refuse(path: str, why: str) -> None:
    print(
        f"cannot replay {path} without unpickling it: {why}.\n"
        "Unpickling runs whatever code the file names, so a file made by anyone else can run their code "
        "on this machine; replay does it only when asked.\n"
        f"If you trust whoever made this file: {COMMAND} {path} {_ALLOW}"
    )


def _load(path: str, allow_pickle: bool) -> dict[str, Any] | None:
    """The file's outer dict, read weights-only; unpickled only with ``--allow-pickle``."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        why = f"it holds Python objects beyond tensors and plain values ({_weights_only_reason(exc)})"
        if not allow_pickle:
            _refuse(path, why)
            return None
        print(f"unpickling {path} as {_ALLOW} asks: {why}")
        try:
            data = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as err:  # noqa: BLE001 - whatever the file holds, a line, not a traceback
            print(f"cannot replay {path}: it does not unpickle ({type(err).__name__}: {err})")
            return None
    except Exception as exc:  # noqa: BLE001 - not a torch file at all
        print(
            f"cannot replay {path}: not a repro file written by --torchexport-repro-dir ({type(exc).__name__}: {exc})"
        )
        return None
    if not isinstance(data, dict) or data.get("format") not in (1, 2):
        print(f"cannot replay {path}: not a repro file written by --torchexport-repro-dir (no known format)")
        return None
    missing = [key for key in _KEYS if key not in data]
    if missing:
        print(f"cannot replay {path}: not a whole repro file (it has no {', '.join(missing)})")
        return None
    return data


def _weights_only_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return (useful or lines or [type(exc).__name__])[0].rstrip(".")


def _module(path: str, data: dict[str, Any], allow_pickle: bool) -> torch.nn.Module | None:
    """The module: rebuilt from its classes (format 2), else unpickled only when allowed."""
    _import_root(data)
    if data.get("format") == 1:
        if data.get("module") is None:
            print(f"cannot replay: {data['module_class']} is not importable (defined inside a function?)")
            return None
        why = "it was written by an earlier version of the plugin (format 1), which pickled the module"
        if not allow_pickle:
            _refuse(path, why)
            return None
        print(f"unpickling the module of {path} as {_ALLOW} asks: {why}")
        return _unpickled(lambda: torch.load(io.BytesIO(data["module"]), weights_only=False, map_location="cpu"), data)
    blob, why = data.get("pickle"), printable(data.get("pickle_reason") or "it holds Python objects")
    if data.get("module_tree") is None or blob is not None:
        if blob is None:
            print(f"cannot replay: {data['module_class']} could not be saved ({why})")
            return None
        if not allow_pickle:
            _refuse(path, why)
            return None
        print(f"unpickling part of {path} as {_ALLOW} asks: {why}")
        pickled = _unpickled(lambda: torch.load(io.BytesIO(blob), weights_only=False, map_location="cpu"), data)
        if pickled is None:
            return None
        data.update({k: v for k, v in pickled.items() if k != "module"})
        if data.get("module_tree") is None:
            return pickled.get("module")
    model = str(data.get("module_class", "")).partition(":")[0]
    try:
        return rebuild(data["module_tree"], lambda name: resolve_class(name, imports=model))
    except NotPlain as exc:
        print(f"cannot replay: the file {exc}")
    except (AttributeError, ImportError) as exc:
        print(
            f"cannot replay: {data['module_class']} does not import here ({exc}); "
            "define the model in an importable module (not __main__ or inside a function)"
        )
    except (KeyError, TypeError, ValueError) as exc:
        print(f"cannot replay {path}: its module tree is malformed ({type(exc).__name__}: {exc})")
    return None


def _unpickled(load: Callable[[], T], data: dict[str, Any]) -> T | None:
    try:
        return load()
    except (AttributeError, ImportError, ModuleNotFoundError) as exc:
        print(
            f"cannot replay: {data['module_class']} does not import here ({exc}); "
            "define the model in an importable module (not __main__ or inside a function)"
        )
        return None


def _import_root(data: dict[str, Any]) -> None:
    """The folder the model's module was imported from, on ``sys.path``, where it holds that module."""
    root, name = data.get("source_root"), str(data.get("module_class", "")).partition(".")[0].partition(":")[0]
    if not isinstance(root, str) or not name or root in sys.path:
        return
    folder = Path(root)
    # Only a folder that holds the named module, so the file cannot put arbitrary code on the path.
    if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file():
        sys.path.insert(0, root)


def _verdict(backend: Backend, artifact: object, eager: Eager, data: dict[str, Any]) -> int:
    """Run the saved failing input through eager and the artifact; print and return the outcome."""
    opts = data["options"]
    args, kwargs = data["failing_inputs"], data["failing_kwargs"]
    expected = eager(args, kwargs).outputs
    try:
        with quiet_torch():
            actual, _ = run_artifact(lambda a, k: backend.run(artifact, a, k), args, kwargs)
    except Exception as exc:  # noqa: BLE001 - a runtime raises anything: printed, the replay's verdict
        print(
            f"still failing: the artifact raises {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        return 1
    cmp = compare(expected, actual, relowered=backend.relowered, rtol=opts["rtol"], atol=opts["atol"])
    if cmp.ok:
        print("fixed: the artifact now matches eager on the saved input")
        return 0
    print("still failing: outputs differ from eager")
    print("\n".join(cmp.lines()))
    return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .pt file written by --torchexport-repro-dir")
    parser.add_argument(
        _ALLOW,
        action="store_true",
        help="unpickle what the file cannot hold otherwise (runs code the file names: only for "
        "a file whose maker you trust)",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pytest_torchexport.replay FILE``, the earlier form of ``python -m pytest_torchexport replay``."""
    parser = argparse.ArgumentParser(prog="python -m pytest_torchexport.replay", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return replay(args.file, allow_pickle=args.allow_pickle)


if __name__ == "__main__":
    sys.exit(main())
