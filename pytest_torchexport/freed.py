"""[Freed Memory] Hand memory a stage has freed back to the OS.

glibc keeps small freed blocks in its heap and returns only the heap's top, so after an
exporter or a runtime frees many allocations a long-lived process stays at its peak size.
``malloc_trim(0)`` returns every free page of every arena. Only glibc has it; elsewhere
this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release(collect: bool = True) -> bool:
    """Collect Python's garbage (if ``collect``), then give the allocator's free pages back.

    Returns True where trimmed. The trim is cheap; a full collection can be slow in a test's
    own process, so callers there may pass ``collect=False``."""
    if collect:
        gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
