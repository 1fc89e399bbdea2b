"""[Model By Name] A ``--torchexport-model`` SPEC read but not built (``models.py`` builds it).
Keyword arguments follow ``?``, each read as a Python literal where it is one, else as text."""

from __future__ import annotations

import ast
import difflib
import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

#: The prefixes that name a library rather than a module.
LIBRARIES: dict[str, str] = {
    "timm": "pip install timm",
    "torchvision": "pip install torchvision",
    "transformers": "pip install transformers",
}
FORMS = (
    "timm:NAME, torchvision:NAME, transformers:NAME, pkg.module:Factory or path/to/file.py:Factory "
    "(keyword arguments after ?)"
)


def install_line(library: str) -> str:
    """The pip line for a model library, pinned to the installed torch: an unpinned torchvision
    may not load beside it, or may replace it. torch 2.N pairs with torchvision 0.(N+15), and a
    CPU or CUDA build is found on PyTorch's index of that build."""
    try:
        torch = version("torch")
    except PackageNotFoundError:
        return LIBRARIES[library]
    if library == "transformers":
        return f'{LIBRARIES[library]} "torch=={torch}"'
    release, _, build = torch.partition("+")
    major, minor = (int(part) for part in release.split(".")[:2])
    vision = f"torchvision=={major - 2}.{minor + 15}.*" if major == 2 else "torchvision"
    index = f" --extra-index-url https://download.pytorch.org/whl/{build}" if build else ""
    packages = "timm " if library == "timm" else ""
    return f'pip install {packages}"{vision}" "torch=={torch}"{index}'


class ModelError(Exception):
    """A ``--torchexport-model`` SPEC that cannot be built, or given inputs: a usage error."""


@dataclass(frozen=True)
class ModelSpec:
    """One SPEC, read but not built: ``kind`` is ``library``, ``module`` or ``file``."""

    text: str
    kind: str
    target: str  # the library, module path or file path
    name: str  # the model name, or the factory's (dotted) attribute name
    kwargs: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def parse(cls, text: str, base: Path | None = None) -> ModelSpec:
        """Read a SPEC; a malformed one, or an unknown library prefix, is a ``ModelError``."""
        text = text.strip()
        head, sep, query = text.partition("?")
        target, colon, name = head.rpartition(":")
        if not colon or not target.strip() or not name.strip():
            raise ModelError(
                f"--torchexport-model={text!r} is not a model SPEC: write one of {FORMS}, e.g. timm:resnet18"
            )
        target, name = target.strip(), name.strip()
        kwargs = _kwargs(text, query) if sep else ()
        if target in LIBRARIES:
            return cls(text, "library", target, name, kwargs)
        if target.endswith(".py") or "/" in target or "\\" in target:
            path = Path(target)
            if not path.is_absolute() and base is not None:
                path = base / path
            if not path.is_file():
                raise ModelError(f"--torchexport-model={text}: no file {target} (looked at {path}); {_file_hint()}")
            return cls(text, "file", str(path), name, kwargs)
        if not all(part.isidentifier() for part in target.split(".")):
            raise ModelError(
                f"--torchexport-model={text}: {target!r} is no library prefix or module path; write {FORMS}"
            )
        if "." not in target and find(target) is None:
            near = difflib.get_close_matches(target, list(LIBRARIES), n=1)
            hint = f"did you mean {near[0]}:{name}? " if near else ""
            raise ModelError(
                f"--torchexport-model={text}: unknown library prefix {target!r}, and no module of that name can be "
                f"imported here; {hint}SPEC is one of {FORMS}"
            )
        return cls(text, "module", target, name, kwargs)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)


def call_text(spec: ModelSpec) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in spec.kwargs)


def _kwargs(text: str, query: str) -> tuple[tuple[str, Any], ...]:
    out = []
    for pair in query.split("&"):
        if not pair.strip():
            continue
        key, eq, value = pair.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ModelError(
                f"--torchexport-model={text}: cannot read {pair!r}; keyword arguments are ?name=value&name=value"
            )
        try:
            parsed: Any = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value.strip()
        out.append((key.strip(), parsed))
    return tuple(out)


def find(name: str) -> ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _file_hint() -> str:
    return "a relative path is read from the directory pytest was started in"
