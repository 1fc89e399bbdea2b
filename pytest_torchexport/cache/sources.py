"""[Sources] The Python files a check's verdict rests on: the files whose code ran or was read.

The verdict cache (``store.py``) may reuse a verdict only while every file the check ran or
read is unchanged. This module finds those files, in the process that runs the check (a
forked child, or the test's process inline), and hashes them:

- every eager call (``eager.py``: the recorded call and every drawn input, the float64
  reference, the determinism and side-effect probes) and the user's ``compare=`` run under a
  ``sys.settrace`` hook that records the file of each Python frame started (the global trace
  function only: it returns None, so no line events; about a microsecond a frame);
- each export runs with ``linecache.getlines`` observed: every file TorchScript compiles
  source from (``torch._sources`` reads it through ``inspect``, which reads ``linecache``),
  and every user frame ``torch.export``/dynamo formats into a node's ``stack_trace``.

The files go back to the parent on the ``Result`` (``result.sources``, a field, popped before
the row is reported). ``keyed`` turns them into (path, sha256) pairs, leaving out what the
cache key already covers by a version: the standard library (Python's version) and the
installs ``VERSIONED`` lists (their versions; this plugin also by a digest of its sources). Every other file,
third-party libraries' included, is hashed. ``digest`` is memoised per process by
(path, mtime_ns, size), so a warm run hashes each file once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import linecache
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

#: [Versioned Not Hashed] The one list of libraries the cache key covers by a version instead
#: of hashing their files: (distribution, import name). ``fingerprint.environment`` puts each
#: distribution's version in every key and ``hashed`` skips each import's folder, both from
#: here, so a library can never be skipped without being versioned (tests/test_cache_reuse.py).
VERSIONED = (
    ("torch", "torch"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("onnxscript", "onnxscript"),
    ("onnx-ir", "onnx_ir"),
    ("executorch", "executorch"),
    ("hypothesis", "hypothesis"),
    ("numpy", "numpy"),
    ("pytest-torchexport", "pytest_torchexport"),
)


class Collector:
    """The files seen while one check ran."""

    def __init__(self) -> None:
        self.files: set[str] = set()


#: The collector of the check running in this context, if any: the stages that run eager or an
#: export note their files to it without a handle passed down six modules (a context, as
#: ``decimal``'s: set by ``collecting`` for the block, put back after it, never rebound).
_COLLECTING: contextvars.ContextVar[Collector | None] = contextvars.ContextVar("torchexport_sources", default=None)


def active() -> bool:
    return _COLLECTING.get() is not None


def note(filenames: Iterable[str]) -> None:
    """Files whose code ran or was read (no-op when nothing is collecting)."""
    collector = _COLLECTING.get()
    if collector is not None:
        collector.files.update(filenames)


@contextlib.contextmanager
def collecting(result: Any) -> Iterator[Collector]:
    """Collect while the block runs; ``result.sources`` gets the union with what it had."""
    collector = Collector()
    token = _COLLECTING.set(collector)
    try:
        yield collector
    finally:
        _COLLECTING.reset(token)
        result.sources = sorted(set(result.sources or ()) | collector.files)


class FileTracer:
    """``sys.settrace`` with a global function only: the file of every frame started."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self._previous: Any = None

    def _global(self, frame: FrameType, event: str, arg: Any) -> None:
        self.files.add(frame.f_code.co_filename)

    def start(self) -> None:
        self._previous = sys.gettrace()
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(self._previous)
        note(self.files)


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """The files of the Python code the block runs, when a check is collecting."""
    if not active():
        yield
        return
    tracer = FileTracer()
    tracer.start()
    try:
        yield
    finally:
        tracer.stop()


def watched(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``fn`` run under ``watching()`` (the user's ``compare=``, which runs in the search)."""
    if fn is None or not active():
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        with watching():
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Files read through ``linecache`` while the block runs (an export), when collecting."""
    if not active():
        yield
        return
    original = linecache.getlines
    seen: set[str] = set()

    def getlines(filename: str, module_globals: Any = None) -> list[str]:
        seen.add(filename)
        return original(filename, module_globals)

    linecache.getlines = getlines
    try:
        yield
    finally:
        linecache.getlines = original
        note(seen)


# -- which files are hashed, and their digests -----------------------------------------
def _roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the stdlib's folders, the VERSIONED installs' folders): files the key covers by a version.
    Per set of VERSIONED modules imported so far (onnxscript is imported by the first ONNX export)."""
    return _roots_of(tuple(name for _, name in VERSIONED if name in sys.modules))


@functools.lru_cache(maxsize=len(VERSIONED) + 1)  # a set only grows: one entry per import of one
def _roots_of(present: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = tuple(os.path.realpath(paths[n]) + os.sep for n in ("stdlib", "platstdlib") if paths.get(n))
    versioned = []
    for name in present:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            versioned.append(os.path.realpath(os.path.dirname(path)) + os.sep)
    return stdlib, tuple(versioned)


@functools.lru_cache(maxsize=1)
def _site_dirs() -> tuple[str, ...]:
    dirs = {sysconfig.get_paths().get(n) for n in ("purelib", "platlib")}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def hashed(path: str) -> bool:
    """Whether ``path`` is keyed by its content (else by a version, or not a file at all)."""
    if not path or path.startswith("<") or not os.path.isabs(path):
        return False  # code compiled from a string (fx's generated forward, exec): see docs/howto-cache.md
    real = os.path.realpath(path)
    stdlib, versioned = _roots()
    if real.startswith(versioned):
        return False
    if real.startswith(_site_dirs()):
        return True  # a third-party library (site-packages may lie inside the stdlib's folder)
    return not real.startswith(stdlib)


def digest(path: str) -> str | None:
    """sha256 of the file's bytes (memoised by mtime and size); None where it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    try:
        return _content_digest(path, stat.st_mtime_ns, stat.st_size)
    except OSError:  # not remembered: a file readable later is hashed then
        return None


#: A file changed on disk has another (mtime, size), so a stale entry is never read back, only
#: pushed out. Bounded: a suite's files, each a few hundred bytes of entry.
@functools.lru_cache(maxsize=1 << 16)
def _content_digest(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def keyed(files: Iterable[str]) -> list[list[str]] | None:
    """(path, sha256) of each hashed file; None when one cannot be read (the verdict cannot be keyed)."""
    out = []
    for path in sorted(set(files)):
        if not hashed(path):
            continue
        value = digest(path)
        if value is None:
            return None  # unreadable or gone: nothing a later run could compare
        out.append([path, value])
    return out


def unchanged(files: Iterable[Iterable[str]]) -> bool:
    """Every (path, sha256) still holds."""
    return all(digest(path) == value for path, value in files)


__all__ = [
    "Collector",
    "active",
    "collecting",
    "digest",
    "keyed",
    "note",
    "reading",
    "unchanged",
    "watched",
    "watching",
]
