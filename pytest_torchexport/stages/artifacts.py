"""``--torchexport-keep-artifacts=DIR``: every saved artifact, plus a form a person can read.

The readable form (``code.py``, ``graph.txt`` or the AOTInductor C++) is made from the saved
files, so it shows what ships. See docs/howto-read-a-failure.md.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path

import torch

from .._compat import quiet_torch
from ..results.report import Result

README = "REPLAY.txt"


def test_dirname(nodeid: str | None, test: str | None, module: str) -> str:
    """``tests/test_m.py::test_gate[torchexport-trace]`` -> ``test_m.py__test_gate``."""
    name = nodeid or test
    if not name:
        return _safe(f"check__{module}")
    path, _, function = name.partition("::")
    function = re.sub(r"-?torchexport-[^\]]*(?=\]$)", "", function).removesuffix("[]")
    return _safe(f"{Path(path).name}__{function.replace('::', '__')}" if function else Path(path).name)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "check"


def keep(result: Result, root: str, test: str, files: list[Path]) -> str:
    """Copy ``files`` under ``root/test/backend`` with their readable form; returns the folder."""
    backend = result.backend if result.device == "cpu" else f"{result.backend}-{result.device}"
    target = Path(root) / test / backend
    if target.exists():
        shutil.rmtree(target)  # never mix two runs' files
    target.mkdir(parents=True)
    for path in files:
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        elif path.exists():
            shutil.copy2(path, target / path.name)
    for path in files:
        readable(path, target)
    result.extra["artifact_dir"] = shown = display_path(target)
    return shown


def readable(path: Path, target: Path) -> None:
    """The readable form of one saved file, where there is one; never raises."""
    try:
        if path.suffix == ".onnx":
            text = onnx_text(path)
            (target / "graph.txt").write_text(text, encoding="utf-8")
        elif path.suffix == ".pt" and path.name == "model.pt":
            (target / "code.py").write_text(torchscript_code(path), encoding="utf-8")
        elif path.suffix == ".pt2" and aoti_sources(path, target):
            pass
        elif path.suffix == ".pt2":
            (target / "graph.txt").write_text(export_graph(path), encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - a readable form is a convenience, never a verdict
        (target / f"{path.name}.unreadable.txt").write_text(
            f"no readable form of {path.name}: {type(exc).__name__}: {exc}\n", encoding="utf-8"
        )


def torchscript_code(path: Path) -> str:
    with quiet_torch():
        loaded = torch.jit.load(str(path), map_location="cpu")
    return module_code(loaded)


def module_code(module: torch.jit.ScriptModule) -> str:
    """``.code`` of a TorchScript module and of every submodule that has a forward."""
    parts = []
    for name, sub in module.named_modules():
        try:
            code = sub.code
        except (AttributeError, RuntimeError):  # a submodule the trace never called has no forward
            continue
        kind = getattr(sub, "original_name", type(sub).__name__)
        parts.append(f"# ---- {name or '(top level)'} ({kind}) ----\n{code.strip()}\n")
    return "\n".join(parts)


def export_graph(path: Path) -> str:
    with quiet_torch():
        program = torch.export.load(str(path))
    return str(program)


def aoti_sources(path: Path, target: Path) -> bool:
    """Write an AOTInductor package's generated C++; False if it is not one."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        sources = [n for n in archive.namelist() if "/aotinductor/" in n and n.endswith(".cpp")]
        for kind in ("wrapper", "kernel"):
            texts = [archive.read(n).decode("utf-8", "replace") for n in sources if n.endswith(f".{kind}.cpp")]
            if texts:
                (target / f"{kind}.cpp").write_text("\n\n".join(texts), encoding="utf-8")
    return bool(sources)


def onnx_text(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        return onnx.printer.to_text(model)
    except Exception:  # noqa: BLE001 - older onnx, or a model its printer refuses
        return onnx.helper.printable_graph(model.graph)


def display_path(path: Path) -> str:
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def link_replay(artifact_dir: str | None, repro: str) -> None:
    """Point the kept artifacts at the replay file."""
    if not artifact_dir or not Path(artifact_dir).is_dir():
        return
    (Path(artifact_dir) / README).write_text(
        f"The failing example of this check is saved for replay:\n    python -m pytest_torchexport replay {repro}\n",
        encoding="utf-8",
    )
