"""pytest-torchexport: prove a PyTorch model still exports correctly.

Public names are re-exported lazily (PEP 562), so importing the package or loading the
plugin never imports torch: a session with no marked test pays nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "check": "pytest_torchexport.engine.pipeline",
    "Report": "pytest_torchexport.results.report",
    "Result": "pytest_torchexport.results.report",
    "Finding": "pytest_torchexport.results.report",
    "ExportMismatch": "pytest_torchexport.errors",
    "InvalidArgument": "pytest_torchexport.errors",
    "Dim": "pytest_torchexport.inputs.specs",
    "TensorSpec": "pytest_torchexport.inputs.specs",
    "Backend": "pytest_torchexport.backends.base",
    "ExportContext": "pytest_torchexport.backends.base",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # at run time __getattr__ imports lazily
    from .backends.base import Backend, ExportContext  # noqa: F401
    from .engine.pipeline import check  # noqa: F401
    from .errors import ExportMismatch, InvalidArgument  # noqa: F401
    from .inputs.specs import Dim, TensorSpec  # noqa: F401
    from .results.report import Finding, Report, Result  # noqa: F401


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pytest_torchexport' has no attribute {name!r}")
