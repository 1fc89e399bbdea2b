"""A bundle per check (``--torchexport-bundle=DIR``): what another machine checks again.

The saved artifact, a few inputs with eager's and the artifact's outputs, the tolerances and the
environment; ``python -m pytest_torchexport verify DIR`` compares again elsewhere. See docs/howto-verify.md.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .._compat import package_version
from ..inputs.strategies import materialize
from ..reference.compare import flatten
from ..results import bundle_files as files
from .check import Check

#: Inputs a bundle keeps besides the recorded and failing ones (the first tried), so it stays small.
MORE_CASES = 6


def folder(check: Check) -> Path:
    result = check.result
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.nodeid or result.test or result.module or "check").strip("_")
    test = re.sub(r"_torchexport-[\w-]+$", "", test)  # drop the item's suffix: the backend is the subfolder
    name = result.backend if result.device == "cpu" else f"{result.backend}-{result.device}"
    assert check.options.bundle is not None
    return Path(check.options.bundle) / test / name


def _cases(check: Check) -> list[tuple[str, str, tuple[Any, ...], dict[str, Any], Any]]:
    """(kind, what the input is, args, kwargs, eager's outputs) for each input the bundle keeps."""
    recorded = check.recorded
    cases = [("recorded", recorded.draw.describe(), recorded.args, recorded.kwargs, recorded.outputs)]
    # A stateful sequence is replayed from its start, so it keeps only the recorded call.
    if check.steps is None and check.shared is not None:
        shared = check.shared
        more = [d for d in shared.tried if d != recorded.draw and shared.expected(d) is not None][:MORE_CASES]
        for draw in more:
            args, kwargs = materialize(check.plan, draw, check.device)
            kind = shared.kinds.get(draw, "drawn")
            cases.append((kind, draw.describe(), args, kwargs, shared.expected(draw).outputs))
    failure = check.failure
    if failure is not None and failure.args is not None:
        expected = check.shared.expected(failure.draw) if check.shared is not None else None
        outputs = expected.outputs if expected is not None else check.eager(failure.args, failure.kwargs).outputs
        cases.append(("failing", failure.draw.describe(), tuple(failure.args), dict(failure.kwargs), outputs))
    return cases


def _leaves(outputs: Any) -> list[Any]:
    """The output's leaves, in the order ``compare`` pairs them; what is not a plain value is None."""
    keep = (torch.Tensor, bool, int, float, str, type(None))
    return [v if isinstance(v, keep) else None for _, v in flatten(outputs)[0]]


def write(check: Check) -> None:
    """Write the check's bundle; a value it cannot hold is a ``bundle`` note on the row, never a failure."""
    result, artifacts = check.result, check.artifacts
    target = folder(check)
    saved = check.scratch / files.ARTIFACT
    if artifacts is None or not saved.is_dir():
        result.extra["bundle"] = {"path": None, "why": "not written: no saved artifact (roundtrip=False)"}
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copytree(saved, target / files.ARTIFACT)
    tensors: dict[str, Any] = {}
    cases, left_out = [], []
    for n, (kind, what, args, kwargs, outputs) in enumerate(_cases(check)):
        try:
            case = {
                "kind": kind,
                "input": what,
                "args": files.encode(list(args), tensors, f"c{n}.in."),
                "kwargs": files.encode(dict(kwargs), tensors, f"c{n}.in."),
                "expected": files.encode(_leaves(outputs), tensors, f"c{n}.eager."),
            }
            try:  # the artifact's own outputs here, for verify to compare against too
                ran = check.run(artifacts.runnable, args, kwargs)[0]
                case["artifact"] = files.encode(_leaves(ran), tensors, f"c{n}.artifact.")
                case["matched_here"] = check.compare(outputs, ran).ok  # False: passed only as eager's own rounding
            except Exception as exc:  # noqa: BLE001 - a failing input may fail in any way: recorded
                case["artifact_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        except files.UnsupportedValue as exc:
            left_out.append(f"{kind} input: {exc}")
            continue
        cases.append(case)
    files.save_tensors(target / files.TENSORS, tensors)
    spec = check.spec if isinstance(check.spec, str) else None
    manifest = {
        "format": files.FORMAT,
        "test": result.test,
        "nodeid": result.nodeid,
        "module": result.module,
        "backend": result.backend,
        "spec": spec,
        "device": result.device,
        "status": result.status,
        "message": (result.message or "").split("\n")[0],
        "xfail": check.options.xfail.get(result.backend),  # a known failure stays known when verified
        "rtol": check.rtol,
        "atol": check.atol,
        "relowered": bool(check.backend.relowered),
        "plan": {
            "scalars": [[i, v] for i, v in check.plan.scalars.items() if isinstance(v, (bool, int, float, str))],
            "kwargs": list(check.plan.kwargs),
        },
        "artifact_files": sorted(p.name for p in (target / files.ARTIFACT).iterdir()),
        "written_by": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "pytest_torchexport": package_version("pytest-torchexport"),
            "platform": platform.platform(),
        },
        "cases": cases,
        "left_out": left_out,
    }
    (target / files.MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    result.extra["bundle"] = {"path": str(target), "cases": len(cases), **({"left_out": left_out} if left_out else {})}
