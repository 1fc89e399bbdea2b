"""Replay a failing example saved by ``--torchexport-repro-dir``: ``python -m pytest_torchexport.replay FILE``.

The file holds the module (pickled, so its class must be importable: the test file's
folder is put on ``sys.path``), its state, the inputs the export used and the failing
inputs. Replay exports again on the same backend, runs the failing input through the
saved-and-loaded artifact and eager, and prints the verdict: exit 1 while the failure
reproduces, 0 once it is fixed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def replay(path: str) -> int:
    import io

    import torch

    from .backends.base import ExportContext, load_backend
    from .inputs.specs import plan_inputs
    from .options import BUILTIN_BACKENDS
    from .reference.eager import Eager

    data = torch.load(path, weights_only=False, map_location="cpu")
    if data["module"] is None:
        print(f"cannot replay: {data['module_class']} is not importable (defined inside a function?)")
        return 2
    root = data.get("source_root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = torch.load(io.BytesIO(data["module"]), weights_only=False, map_location="cpu")
    except (AttributeError, ImportError, ModuleNotFoundError) as exc:
        print(
            f"cannot replay: {data['module_class']} does not import here ({exc}); "
            "define the model in an importable module (not __main__ or inside a function)"
        )
        return 2
    name, device = data["backend"], data["device"]
    if name not in BUILTIN_BACKENDS:
        print(f"cannot replay: {name} is a third-party backend; replay runs built-in backends only")
        return 2
    backend = load_backend(BUILTIN_BACKENDS[name])
    opts = data["options"]
    export_args, export_kwargs = data["export_inputs"]
    plan = plan_inputs(module, export_args, export_kwargs, dims=opts["dims"], dynamic=opts["dynamic"])
    eager = Eager(module, device)
    from ._compat import quiet_torch

    what = data["test"] or f"a check() call of {data['module_class'].rpartition(':')[2]}"
    print(f"replaying {what} on {name} ({device})")
    if data.get("artifact_dir"):
        print(f"the artifact of the failing run is kept in {data['artifact_dir']}")
    # Intermediate files and the saved artifact live only for this replay, laid out as the
    # engine lays them out (an aoti package runs from its directory).
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


def _verdict(backend: Any, artifact: Any, eager: Any, data: dict[str, Any]) -> int:
    """Run the saved failing input through eager and the artifact; print and return the outcome."""
    from ._compat import quiet_torch
    from .reference.compare import compare
    from .reference.eager import run_artifact

    opts = data["options"]
    args, kwargs = data["failing_inputs"], data["failing_kwargs"]
    expected = eager(args, kwargs).outputs
    try:
        with quiet_torch():
            actual, _ = run_artifact(lambda a, k: backend.run(artifact, a, k), args, kwargs)
    except Exception as exc:  # noqa: BLE001
        print(f"still failing: the artifact raises {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return 1
    cmp = compare(expected, actual, relowered=backend.relowered, rtol=opts["rtol"], atol=opts["atol"])
    if cmp.ok:
        print("fixed: the artifact now matches eager on the saved input")
        return 0
    print("still failing: outputs differ from eager")
    print("\n".join(cmp.lines()))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_torchexport.replay", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a .pt file written by --torchexport-repro-dir")
    return replay(parser.parse_args(argv).file)


if __name__ == "__main__":
    sys.exit(main())
