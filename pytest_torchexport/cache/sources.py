"""[Sources] The Python files a check's verdict rests on: the files whose code ran or was read.

Exports run with ``linecache.getlines`` observed, since TorchScript and ``torch.export`` read
source through it. See docs/howto-cache.md.
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import ParamSpec, Protocol, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")

    class _HasSources(Protocol):
        """What ``collecting`` adds to: a ``Result``, or anything with a ``sources`` list."""

        sources: list[str] | None


#: Libraries keyed by version, not by hashing their files: ``fingerprint.environment`` and
#: ``hashed`` share this list, so nothing skipped is unversioned.
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


#: The collector of the check running in this context, if any.
_COLLECTING: contextvars.ContextVar[Collector | None] = contextvars.ContextVar("torchexport_sources", default=None)


def active() -> bool:
    return _COLLECTING.get() is not None


def note(filenames: Iterable[str]) -> None:
    """Note files whose code ran or was read, if collecting."""
    collector = _COLLECTING.get()
    if collector is not None:
        collector.files.update(filenames)


@contextlib.contextmanager
def collecting(result: _HasSources) -> Iterator[Collector]:
    """Collect while the block runs, adding to ``result.sources``."""
    collector = Collector()
    token = _COLLECTING.set(collector)
    try:
        yield collector
    finally:
        _COLLECTING.reset(token)
        result.sources = sorted(set(result.sources or ()) | collector.files)


class FileTracer:
    """The file of every frame started (a global trace function only: no line events)."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self._previous: Any = None

    def _global(self, frame: FrameType, event: str, arg: object) -> None:
        self.files.add(frame.f_code.co_filename)

    def start(self) -> None:
        self._previous = sys.gettrace()
        sys.settrace(self._global)

    def stop(self) -> None:
        sys.settrace(self._previous)
        note(self.files)


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Note the files of the code the block runs."""
    if not active():
        yield
        return
    tracer = FileTracer()
    tracer.start()
    try:
        yield
    finally:
        tracer.stop()


def watched(fn: Callable[P, R] | None) -> Callable[P, R] | None:
    """``fn`` run under ``watching()``."""
    if fn is None or not active():
        return fn

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with watching():
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Note the files read through ``linecache`` while the block runs."""
    if not active():
        yield
        return
    original = linecache.getlines
    seen: set[str] = set()

    def getlines(filename: str, module_globals: dict[str, Any] | None = None) -> list[str]:
        seen.add(filename)
        return original(filename, module_globals)

    linecache.getlines = getlines
    try:
        yield
    finally:
        linecache.getlines = original
        note(seen)


# -- which files are hashed, and their digests
def _roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stdlib folders, VERSIONED folders), per set of VERSIONED modules imported so far."""
    return _roots_of(tuple(name for _, name in VERSIONED if name in sys.modules))


@functools.lru_cache(maxsize=len(VERSIONED) + 1)  # the set only grows
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
    """Whether ``path`` is keyed by its content (rather than by a version)."""
    if not path or path.startswith("<") or not os.path.isabs(path):
        return False  # code compiled from a string (fx's generated forward, exec)
    real = os.path.realpath(path)
    stdlib, versioned = _roots()
    if real.startswith(versioned):
        return False
    if real.startswith(_site_dirs()):
        return True  # site-packages may lie inside the stdlib's folder
    return not real.startswith(stdlib)


def digest(path: str) -> str | None:
    """sha256 of the file's bytes; None where it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    try:
        return _content_digest(path, stat.st_mtime_ns, stat.st_size)
    except OSError:  # not cached, so a file readable later is hashed then
        return None


#: A changed file has another (mtime, size), so a stale entry is never hit.
@functools.lru_cache(maxsize=1 << 16)
def _content_digest(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def keyed(files: Iterable[str]) -> list[list[str]] | None:
    """(path, sha256) of each hashed file; None when one cannot be read."""
    out = []
    for path in sorted(set(files)):
        if not hashed(path):
            continue
        value = digest(path)
        if value is None:
            return None  # a later run could not compare it
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
