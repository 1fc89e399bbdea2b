"""The repro file of a failing example (``--torchexport-repro-dir``), as ``replay.py`` reads it.

Written here, by the search's message stage; read back by ``python -m pytest_torchexport.replay FILE``
(``replay.py``, the command). The format number is the one both sides agree on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FORMAT = 1


def save(path: Path, *, module: Any, **payload: Any) -> None:
    import io
    import pickle

    import torch

    cls = type(module)
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    # Nested bytes: the outer file loads without the model's class, so replay can first
    # put the test's folder on sys.path, then unpickle the module.
    try:
        buffer = io.BytesIO()
        torch.save(module, buffer)
        pickled: bytes | None = buffer.getvalue()
    except (pickle.PicklingError, AttributeError, TypeError):  # a class defined inside a function
        pickled = None
    torch.save(
        {
            "format": FORMAT,
            "module": pickled,
            "module_class": f"{cls.__module__}:{cls.__qualname__}",
            "module_state": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "source_root": _import_root(cls.__module__, source),
            **payload,
        },
        path,
    )


def _import_root(module_name: str, source: str | None) -> str | None:
    if not source:
        return None
    root = Path(source).resolve().parent
    for _ in module_name.split(".")[1:]:
        root = root.parent
    return str(root)
