"""Temporary folders of checks and captures, removed even when a session is interrupted.

A check's scratch folder is removed when its check is waited for, but a Ctrl-C can land between a
child's fork and its wait (a check started ahead for a later item), or inside the removal itself.
Every folder made here is also removed when the process that made it exits; a forked child,
which inherits the list, never removes its parent's folders.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

#: Each live folder, with the process that made it.
_LIVE: dict[Path, int] = {}


def make(prefix: str) -> Path:
    """A new private temporary folder, named ``<prefix>XXXX``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    _LIVE[folder] = os.getpid()
    return folder


def remove(folder: Path) -> None:
    """Remove ``folder`` and forget it."""
    shutil.rmtree(folder, ignore_errors=True)
    _LIVE.pop(folder, None)


@atexit.register
def _remove_left_behind() -> None:
    pid = os.getpid()
    for folder, owner in list(_LIVE.items()):
        if owner == pid:
            remove(folder)


__all__ = ["make", "remove"]
