"""Torch-version shims, and THE one place that silences torch's own noise.

[Quiet Calls] Every call the plugin makes into an exporter goes through
``quiet_torch()``. Every ``torch.jit.*`` call warns that TorchScript is deprecated
(``DeprecationWarning`` on torch 2.13, ``FutureWarning`` from 2.14, which Python shows
by default), the dynamo ONNX exporter prints progress to stdout and logs graphs at WARNING;
none of that is the user's doing, so it must not break a user's ``-W error`` suite or
clutter their output. Warnings are *recorded*, never dropped blindly: the engine turns
``TracerWarning`` into findings at the user's source line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any


class Captured:
    """What a quiet call emitted: warnings (all categories) and any printed text."""

    def __init__(self) -> None:
        self.warnings: list[warnings.WarningMessage] = []
        self.stdout = ""


@contextlib.contextmanager
def quiet_torch(fds: bool = False) -> Iterator[Captured]:
    """Record warnings, capture prints; with ``fds``, also what C++ writes to fds 1 and 2."""
    captured = Captured()
    buffer = io.StringIO()
    previous_disable = logging.root.manager.disable
    # torch's structured-trace logger answers DEBUG even under logging.disable() (its
    # level is cached apart), and pytest would show every record of it: mute it by name.
    trace_log = logging.getLogger("torch.__trace")
    previous_trace = trace_log.disabled
    with warnings.catch_warnings(record=True) as caught:
        # "always" so a TracerWarning raised at the same line as an earlier run is still
        # seen (the default filter would show it once per process).
        warnings.simplefilter("always")
        warnings.showwarning = _recording_stacks(caught)
        logging.disable(logging.WARNING)
        trace_log.disabled = True
        try:
            # The exporters print progress to stdout and dump graphs to stderr directly
            # (not through logging), so both streams are captured for the call.
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                with _fds_silenced() if fds else contextlib.nullcontext():
                    yield captured
        finally:
            logging.disable(previous_disable)
            trace_log.disabled = previous_trace
            captured.warnings.extend(caught)
            captured.stdout = buffer.getvalue()


def _recording_stacks(caught: list[warnings.WarningMessage]) -> Any:
    """Record each warning as ``catch_warnings(record=True)`` does, and for a TracerWarning
    also the stack it was raised from, as ``warning.stack``: [(file, line, function), ...]
    from the warning's own frame outwards. A TracerWarning raised in torch's own code
    (``torch/nn/functional.py``'s input checks) is then named at the model's line that
    called into torch (``explain.tracer_findings``)."""

    # warnings.showwarning's own signature (six positional parameters), which warnings calls.
    def showwarning(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        record = warnings.WarningMessage(message, category, filename, lineno, file, line)
        if category.__name__ == "TracerWarning":
            stack: list[tuple[str, int, str]] = []
            frame: Any = sys._getframe(1)  # a FrameType, then f_back's None at the bottom
            while frame is not None and len(stack) < 200:
                code = frame.f_code
                if stack or code.co_filename == filename:  # from the warning's own frame on
                    stack.append((code.co_filename, frame.f_lineno, code.co_qualname))
                frame = frame.f_back
            record.stack = stack  # type: ignore[attr-defined]
        caught.append(record)

    return showwarning


@contextlib.contextmanager
def _fds_silenced() -> Iterator[None]:
    """Point fds 1 and 2 at a scratch file: the legacy ONNX exporter dumps graphs from C++."""
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real fds (an embedded interpreter): nothing to silence
        yield
        return
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_attr(obj: Any, dotted: str) -> str | None:
    """The first missing attribute on the path ``dotted`` under ``obj``, or None."""
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return part
        obj = getattr(obj, part)
    return None


def torchscript_unavailable(call: str) -> str | None:
    """Why TorchScript's ``torch.jit.<call>`` (``trace`` or ``script``) cannot be used here, or None.

    TorchScript is deprecated (torch 2.14 warns ``FutureWarning`` on every ``torch.jit``
    call). A torch that drops it may remove the names, or keep them and raise when called,
    so the answer comes from one tiny round trip (``call``, ``torch.jit.save``,
    ``torch.jit.load``) rather than from the version number. The probe is cached per
    function object, so it runs once per process (and again if ``torch.jit`` is replaced).
    The legacy ONNX exporter is built on the tracer: ``torchscript_unavailable("trace")``
    answers for it too.
    """
    import torch

    missing = missing_attr(torch, f"jit.{call}") or missing_attr(torch, "jit.save") or missing_attr(torch, "jit.load")
    if missing:
        return f"torch {torch.__version__} has no torch.jit.{missing}: TorchScript was removed"
    jit = torch.jit
    return _torchscript_probe(call, getattr(jit, call), jit.save, jit.load)


@lru_cache(maxsize=8)
def _torchscript_probe(call: str, compile_fn: Any, save: Any, load: Any) -> str | None:
    import torch

    stage = f"torch.jit.{call}"
    try:
        with quiet_torch(), torch.no_grad():
            example = torch.zeros(1)
            # No check_trace, as the trace backend itself: the check's assert_close imports
            # torch.distributed.tensor, 1-2 s of the first check of every process.
            compiled = (
                compile_fn(_plus_one, (example,), check_trace=False) if call == "trace" else compile_fn(_plus_one)
            )
            buffer = io.BytesIO()
            stage = "torch.jit.save"
            save(compiled, buffer)
            buffer.seek(0)
            stage = "torch.jit.load"
            load(buffer)
    except Exception as exc:  # noqa: BLE001 - whatever the call raises is the reason
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        return f"TorchScript is not available in torch {torch.__version__}: {stage} raises {detail}"
    return None


def _plus_one(x):
    # Scripted by the probe. Unannotated means Tensor to TorchScript; no comment on the
    # def line, which TorchScript would parse as a type comment.
    return x + 1


#: torch's own words for its deprecation of TorchScript, the same on 2.13.0 (``DeprecationWarning``),
#: 2.14.1 and 2.15.0 (``FutureWarning``): "`torch.jit.trace` is deprecated. Please switch to
#: `torch.compile` or `torch.export`." (tests/test_torch_message_patterns.py holds each version's text).
_JIT_DEPRECATED = re.compile(r"`torch\.jit\.\w+` is deprecated")


def torchscript_deprecation(caught: Iterable[warnings.WarningMessage]) -> str | None:
    """torch's deprecation of TorchScript among the warnings a ``quiet_torch()`` call recorded,
    as ``"torch 2.15.0: `torch.jit.trace` is deprecated. ..."``, or None where this torch said
    nothing of it. The export stage asks once per export; the session summary says it once.
    """
    import torch

    for w in caught:
        text = str(w.message).strip()
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and _JIT_DEPRECATED.search(text):
            return f"torch {torch.__version__}: {text.splitlines()[0]}"
    return None


def is_in_ci() -> bool:
    """hypothesis's own CI detection (the ``CI`` variable and the usual CI services): its private
    ``hypothesis._settings.is_in_ci`` (hypothesis 6.170.17)."""
    try:
        from hypothesis._settings import is_in_ci as hypothesis_is_in_ci
    except ImportError:  # pragma: no cover - a hypothesis that moved it
        return "CI" in os.environ
    return hypothesis_is_in_ci()


def cuda_closed_in_forked_child() -> bool:
    """[CUDA In A Forked Child] In a check's forked child (always a CPU check: cuda checks run
    inline), where the parent had already touched CUDA (``torch.cuda.is_available()`` reaches the
    driver and registers torch's fork handler, without ``torch.cuda.is_initialized()`` becoming
    true), make CUDA look absent to this process: torch.export's ``preserve_rng_state`` and others
    ask ``torch.cuda.is_available()`` and then initialise CUDA, which raises "Cannot re-initialize
    CUDA in forked subprocess" (seen on a lent H200, torch 2.11: the cpu ONNX check an
    export_error). True where it did. Reads torch's private ``torch.cuda._is_in_bad_fork``
    (torch 2.11-2.14.1)."""
    import torch

    in_bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
    if in_bad_fork is None or not in_bad_fork():
        return False
    torch.cuda.is_available = lambda: False  # this process only: it exits when the check ends
    torch.cuda.device_count = lambda: 0
    return True


# [Private APIs] Every private name of a library the plugin reads, overrides or imports is
# reached through this module, one named function (or constant) each, with the versions it was
# checked on; tests/test_compat.py names each one and asserts the shape used here, so a
# library upgrade that moves one fails that test first, not a user's suite. Checked on:
# torch 2.13.0 and 2.14.1, pytest 9.2.0, hypothesis 6.170.17, executorch 1.5.1.


def __getattr__(name: str) -> Any:
    """``from .._compat import pytree``: ``torch.utils._pytree`` (no public twin in torch 2.13.0-2.14.1),
    imported when first named, so this module stays torch-free for the plugin's import."""
    if name == "pytree":
        import torch.utils._pytree

        return torch.utils._pytree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tree_flatten_with_path(tree: Any, is_leaf: Any = None) -> tuple[list[tuple[tuple[Any, ...], Any]], Any]:
    """``pytree.tree_flatten_with_path`` that reads every registered node, as ``tree_flatten`` does.

    A node registered without ``flatten_with_keys_fn`` (transformers 4.x and early 5.x register
    ``ModelOutput`` so; so does a user's ``register_pytree_node(cls, flatten, unflatten)``) makes
    torch's own function raise. Here its children come from its plain flatten, keyed by its
    context where that is one string per child (``ModelOutput``'s field names, as later
    releases key them) and by position otherwise; the spec is ``tree_flatten``'s."""
    import torch.utils._pytree as pytree

    _, spec = pytree.tree_flatten(tree, is_leaf=is_leaf)
    return list(_key_paths((), tree, is_leaf)), spec


def _key_paths(path: tuple[Any, ...], tree: Any, is_leaf: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
    import torch.utils._pytree as pytree

    if is_leaf is not None and is_leaf(tree):
        yield path, tree
        return
    handler = pytree.SUPPORTED_NODES.get(pytree._get_node_type(tree))
    if handler is None:
        yield path, tree
        return
    if handler.flatten_with_keys_fn is not None:
        keyed = handler.flatten_with_keys_fn(tree)[0]
    else:
        children, context = handler.flatten_fn(tree)
        names = list(context) if isinstance(context, (list, tuple)) else []
        if len(names) == len(children) and all(isinstance(n, str) for n in names):
            keyed = [(pytree.MappingKey(n), c) for n, c in zip(names, children)]
        else:
            keyed = [(pytree.SequenceKey(i), c) for i, c in enumerate(children)]
    for key, child in keyed:
        yield from _key_paths((*path, key), child, is_leaf)


def graph_module_flat_inputs(graph_module: Any, call: Any) -> list[Any]:
    """The flat placeholders of an unflattened/exported ``GraphModule`` for ``call`` (``(args, kwargs)``),
    in its own input order: ``torch.fx._pytree.tree_flatten_spec`` over the module's private
    ``_in_spec`` (torch 2.13.0-2.14.1)."""
    import torch.fx._pytree as fx_pytree

    return fx_pytree.tree_flatten_spec(call, graph_module._in_spec)


def reorder_kwargs(kwargs: dict[str, Any], in_spec: Any) -> dict[str, Any]:
    """``torch.export._tree_utils.reorder_kwargs``: keywords in a program's order (torch 2.13.0-2.14.1)."""
    from torch.export._tree_utils import reorder_kwargs as reorder

    return reorder(kwargs, in_spec)


def onnx_registry_class() -> type | None:
    """``torch.onnx._internal.exporter._registration.ONNXRegistry`` (whose ``from_torchlib``
    classmethod ``backends/onnx.py``'s ``reused`` wraps), or None on a torch without the dynamo exporter
    (torch 2.13.0-2.14.1)."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    return _registration.ONNXRegistry


def torch_cxx11_abi() -> bool:
    """Whether the installed torch's C++ libraries use the C++11 string ABI (``torch._C._GLIBCXX_USE_CXX11_ABI``,
    torch 2.13.0 to 2.15.0; True on every wheel since 2.6): the C++ runner must be compiled to match
    (isolation/cpp.py)."""
    import torch

    return bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))


#: What AOTInductor needs of ``torch._inductor`` (documented, under a private module name).
AOTI_FUNCTIONS = ("aoti_compile_and_package", "aoti_load_package")


@contextlib.contextmanager
def onnx_capture_strategies(seconds: list[float], *, skip_non_strict: bool) -> Iterator[None]:
    """[Shared Capture] Within: each capture strategy ``torch.onnx.export(dynamo=True)`` tries on a
    module is timed (its seconds appended to ``seconds``), and with ``skip_non_strict`` its
    ``TorchExportNonStrictStrategy`` is left out. ``torch.onnx._internal.exporter._capture_strategies``:
    ``CAPTURE_STRATEGIES`` (a tuple of ``CaptureStrategy`` classes, read at each export) and
    ``CaptureStrategy.__call__`` (torch 2.13.0). Elsewhere the export runs as it is."""
    try:
        from torch.onnx._internal.exporter import _capture_strategies as strategies
    except ImportError:
        yield
        return
    listed, base = getattr(strategies, "CAPTURE_STRATEGIES", None), getattr(strategies, "CaptureStrategy", None)
    if not isinstance(listed, tuple) or base is None or "__call__" not in base.__dict__:
        yield
        return
    call = base.__dict__["__call__"]

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return call(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    non_strict = getattr(strategies, "TorchExportNonStrictStrategy", None)
    kept = tuple(s for s in listed if not (skip_non_strict and s is non_strict))
    strategies.CAPTURE_STRATEGIES = kept or listed
    base.__call__ = timed
    try:
        yield
    finally:
        strategies.CAPTURE_STRATEGIES = listed
        base.__call__ = call


def aoti_unavailable() -> str | None:
    """Why ``torch._inductor``'s AOTInductor functions cannot be used here, or None (torch 2.13.0-2.14.1)."""
    import torch

    try:
        import torch._inductor as inductor
    except ImportError as exc:  # pragma: no cover - a torch built without inductor
        return f"torch._inductor does not import: {exc}"
    missing = next((attr for attr in AOTI_FUNCTIONS if not hasattr(inductor, attr)), None)
    return f"torch {torch.__version__} has no torch._inductor.{missing}" if missing else None


def aoti_compile_and_package(program: Any, package_path: str) -> Any:
    import torch._inductor  # torch 2.13.0-2.14.1, as all of AOTI_FUNCTIONS

    return torch._inductor.aoti_compile_and_package(program, package_path=package_path)


def aoti_load_package(path: str) -> Any:
    import torch._inductor

    return torch._inductor.aoti_load_package(path)


def conv_module_types() -> tuple[type, ...]:
    """Every convolution layer: ``torch.nn.modules.conv._ConvNd``, the base of Conv1d-3d and their
    transposed and lazy forms (torch 2.13.0-2.14.1)."""
    import torch

    return (torch.nn.modules.conv._ConvNd,)


# A module's own parameters, buffers and children, a None registered as such and a repeated
# child included (``named_parameters(recurse=False)``, ``named_children()`` leave those out), and
# the buffers ``state_dict`` leaves out: ``nn.Module``'s private dicts (torch 2.13.0-2.14.1).
def own_parameters(module: Any) -> dict[str, Any]:
    return module._parameters


def own_buffers(module: Any) -> dict[str, Any]:
    return module._buffers


def own_children(module: Any) -> dict[str, Any]:
    return module._modules


def non_persistent_buffers(module: Any) -> set[str]:
    return module._non_persistent_buffers_set


def script_has_method(scripted: Any, name: str) -> bool:
    """Whether TorchScript compiled ``name`` into ``scripted``: ``scripted._c._has_method``, the
    compiled module's own answer (torch 2.13.0-2.14.1)."""
    return bool(scripted._c._has_method(name))


def compiled_original(module: Any) -> Any:
    """The user's module inside ``torch.compile(module)``'s ``OptimizedModule`` (its ``_orig_mod``),
    or None for any other module (torch 2.13.0-2.14.1)."""
    if type(module).__name__ != "OptimizedModule":
        return None
    return getattr(module, "_orig_mod", None)


def compiled_in_place(module: Any) -> bool:
    """Whether ``module.compile()`` compiled this module in place (``nn.Module._compiled_call_impl``
    set) (torch 2.13.0-2.14.1)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def deserialize_pte(data: bytes) -> Any:
    """``executorch.exir._serialize._program.deserialize_pte_binary``: a ``.pte`` file's program,
    whose metadata says the call's structure (executorch 1.5.1)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(data)


def unittest_item_class() -> type:
    from _pytest.unittest import TestCaseFunction  # a unittest.TestCase method's item (pytest 9.2.0)

    return TestCaseFunction


def unittest_excinfo(item: Any) -> list[Any] | None:
    """The errors a unittest body reported: unittest collects them instead of raising, and pytest's
    unittest support keeps them on the item (``item._excinfo``) until the report (pytest 9.2.0)."""
    return getattr(item, "_excinfo", None)


def item_aware_fixtures(item: Any) -> list[str]:
    """[Fixtures Once] The function-scoped fixtures of ``item`` (its closure, autouse ones
    included) that take ``request``, so may decide by the item they serve (skip one backend's
    item, apply a marker), pytest's own apart (``tmp_path`` names a folder by it, nothing more).
    Reads ``item._fixtureinfo.name2fixturedefs``, whose last definition is the one used, and
    each ``FixtureDef``'s ``scope``, ``argnames`` and ``func`` (pytest 8.0 to 9.2)."""
    info = getattr(item, "_fixtureinfo", None)  # a function item's; another kind of item has none
    if info is None:
        return []
    found = []
    for name, defs in info.name2fixturedefs.items():
        if not defs:
            continue
        fixturedef = defs[-1]
        own = (getattr(fixturedef.func, "__module__", "") or "").startswith(("_pytest.", "pytest."))
        if fixturedef.scope == "function" and "request" in fixturedef.argnames and not own:
            found.append(name)
    return sorted(found)


def skip_fixture_setup(item: Any) -> bool:
    """[Fixtures Once] pytest's ``Function.setup`` is ``self._request._fillfixtures()`` (8.0 to
    9.2), called by its ``SetupState`` as ``col.setup()``: an instance attribute in its place
    makes this item's setup set up no fixture. Only for an item whose class keeps pytest's own
    ``setup`` (a unittest item sets up its TestCase there); False where it does not."""
    import pytest

    if getattr(type(item), "setup", None) is not pytest.Function.setup:
        return False
    item.setup = lambda: None
    return True


def xdist_queued(config: Any) -> list[int] | None:
    """[Side By Side] The indices into ``session.items`` this xdist worker has been sent and not
    yet started, in the order it runs them: its ``WorkerInteractor`` (registered as a plugin)
    keeps the next one as ``nextitem_index`` and the rest in ``torun._items``, a deque read under
    ``torun.lock()`` (pytest-xdist 3.5 to 3.8). None where that is not there to read; a scheduler
    may still take queued items back (``--dist worksteal``), so this is what will run here as far
    as is known now."""
    for plugin in config.pluginmanager.get_plugins():
        torun = getattr(plugin, "torun", None)
        if type(plugin).__name__ != "WorkerInteractor" or torun is None or not hasattr(torun, "lock"):
            continue
        with torun.lock() as queued:
            rest = list(queued)
        following = [getattr(plugin, "nextitem_index", None), *rest]
        return [index for index in following if isinstance(index, int)]
    return None


def fixtureinfo(item: Any) -> Any:
    """``item._fixtureinfo``, which ``Function.from_parent(fixtureinfo=...)`` takes to copy an item
    with the same fixtures (pytest 9.2.0)."""
    return item._fixtureinfo


#: The ``pytest.Function`` methods ``glue/items.py``'s per-backend copy overrides: ``_getobj``
#: finds the test by its function's name while the item's name carries the backend id, and
#: ``_getinstance`` builds a ``unittest.TestCase`` with its method's name (pytest 9.2.0).
FUNCTION_OVERRIDES = ("_getobj", "_getinstance")


def terminal_width(terminalreporter: Any) -> int:
    """The width pytest measured: ``terminalreporter._tw.fullwidth`` (pytest 9.2.0)."""
    return int(terminalreporter._tw.fullwidth)


def add_database_digest(test: Any, digest: bytes) -> None:
    """[Database Keys] hypothesis keys its example database by the test function's source; a
    digest set as ``inner_test._hypothesis_internal_add_digest`` is added to that key, so each
    (test, backend) has its own entries (hypothesis 6.170.17)."""
    test.hypothesis.inner_test._hypothesis_internal_add_digest = digest


def scan_local_constants() -> bool:
    """Have hypothesis scan the local modules for constants to draw now (its private
    ``hypothesis.internal.conjecture.providers._get_local_constants``, which caches): True where it
    did, False with a hypothesis that has no such function (hypothesis 6.170.17). Its callers keep
    the plugin's own modules out of it first (``plugin_modules_not_local``)."""
    try:
        from hypothesis.internal.conjecture.providers import _get_local_constants
    except ImportError:
        return False
    _get_local_constants()
    return True


#: The plugin's package folder, with a trailing separator: a file under it is the plugin's.
PLUGIN_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _NotPluginFile:
    """hypothesis's ``is_local_module_file``, False for a file under the plugin's folder."""

    def __init__(self, local: Any) -> None:
        self.local = local

    def __call__(self, path: str) -> bool:
        return not os.path.abspath(path).startswith(PLUGIN_FOLDER) and bool(self.local(path))


def plugin_modules_not_local() -> bool:
    """[Own Constants] hypothesis draws some values from the literals of "local" modules, those
    neither in the standard library nor in site-packages (its private
    ``providers.is_local_module_file``, which ``providers._get_local_constants`` asks of each new
    module). Installed editable (a contributor, this project's CI, the docs), the plugin's own
    modules are local; installed from a wheel (a user) they are not: the same test then drew
    other inputs in the two, and moved whenever a plugin module was added or first imported at
    another time. Wrapped here so a file under the plugin's folder is never local; a scan made
    before (a user's own hypothesis test earlier in the session) is forgotten, so the next draw
    scans again without the plugin's files. Idempotent. True where done, False with a hypothesis
    that has none of these names (its search then draws what it draws) (hypothesis 6.170.17)."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a hypothesis without the module
        return False
    local = getattr(providers, "is_local_module_file", None)
    constants = getattr(providers, "_local_constants", None)
    seen = getattr(providers, "_seen_modules", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if local is None or constants is None or seen is None or cache is None:
        return False
    if isinstance(local, _NotPluginFile):
        return True
    setattr(providers, "is_local_module_file", _NotPluginFile(local))  # noqa: B010 - typed as an lru_cache there
    for found in (constants.integers, constants.floats, constants.bytes, constants.strings):
        found.clear()
    seen.clear()
    providers._sys_modules_len = None
    cache.cache.clear()
    return True
