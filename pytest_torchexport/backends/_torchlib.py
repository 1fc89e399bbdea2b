"""[One Torchlib Registry] The dynamo ONNX exporter's op registry, built once per process.

``torch.onnx.export(dynamo=True)`` builds its registry of ATen-to-ONNX translations anew on
every call (``ONNXRegistry.from_torchlib``): onnxscript reads the source of ~500 torchlib
functions and parses their signatures. That is 0.6-1.2 s of every ONNX export here, more
than the export of a small model itself (measured: a 2-layer MLP's export 0.95 s, of which
0.6 s was the registry; ``benchmarks/bench_floor.py``). The registry depends only on the
installed torch and onnxscript and the opset, which do not change within a process.

``reused()`` keeps the first registry built for an opset and hands each export a copy of
its tables (lists copied, so an export's ``custom_translation_table`` or any other
registration lands in its own copy, never in the one kept). The patch is in place only
around this package's own export call, so a test's own ``torch.onnx.export`` is untouched,
and a torch without ``from_torchlib`` where this expects it simply builds its registry as
before. Forked check children inherit the kept registry from their parent.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any


class _Uncopyable(Exception):  # noqa: N818 - not an error: the registry, returned as built
    """A registry of another layout: no copy we trust, so it is returned as built, never kept
    (``lru_cache`` keeps no call that raised)."""

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry


@functools.lru_cache(maxsize=8)  # one per opset (and keyword set) asked in this process
def _kept(build: Callable[..., Any], owner: type, args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> Any:
    built = build(owner, *args, **dict(kwargs))
    if not isinstance(getattr(built, "functions", None), dict):
        raise _Uncopyable(built)
    return built


def _copy(registry: Any) -> Any:
    copy = object.__new__(type(registry))
    copy.__dict__.update(registry.__dict__)
    copy.functions = {target: list(decomps) for target, decomps in registry.functions.items()}
    return copy


@contextlib.contextmanager
def reused() -> Iterator[None]:
    """Within: ``ONNXRegistry.from_torchlib`` builds a registry once per opset, then copies it."""
    from .._compat import onnx_registry_class

    cls = onnx_registry_class()
    if cls is None:  # a torch without the dynamo exporter: nothing to reuse
        yield
        return
    original = cls.__dict__.get("from_torchlib")
    if not isinstance(original, classmethod):
        yield
        return
    build = original.__func__

    def from_torchlib(owner: type, *args: Any, **kwargs: Any) -> Any:
        try:
            kept = _kept(build, owner, args, tuple(sorted(kwargs.items())))
        except _Uncopyable as another_layout:
            return another_layout.registry
        return _copy(kept)

    cls.from_torchlib = classmethod(from_torchlib)  # type: ignore[attr-defined]  # onnx_registry_class() is typed `type`
    try:
        yield
    finally:
        cls.from_torchlib = original  # type: ignore[attr-defined]
