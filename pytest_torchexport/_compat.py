"""Torch-version shims, every private API of another library, torch's noise kept quiet, and
torch imported on first use.

Every exporter call goes through ``quiet_torch()``: exporters warn and print in ways that are
not the user's doing (``torch.jit`` deprecation warnings from torch 2.13), which must not break
a ``-W error`` suite. Warnings are recorded, not dropped. See docs/architecture.md.

The plugin is loaded into every pytest session, and most sessions call no model. The modules it
imports to configure, collect and report (``glue/``, ``recording/``, ``options.py``, parts of
``results/``) name torch through ``from .._compat import torch``: the name is bound at import,
and torch itself is imported by the first attribute read, once a marked test runs. The engine's
modules, imported after that point, import torch at their top. tests/test_import_without_torch.py
holds the seam.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO


class _Deferred(types.ModuleType):
    """A stand-in for a module that imports it on the first attribute read. Every read goes to the
    real module, so an attribute a test patches on torch is seen here at once."""

    def __getattr__(self, name: str) -> Any:
        module = sys.modules.get(self.__name__) or importlib.import_module(self.__name__)
        return getattr(module, name)


if TYPE_CHECKING:
    import pytest
    import torch as torch
    import torch.utils._pytree as pytree
    from _pytest.fixtures import FuncFixtureInfo
    from executorch.exir._serialize._program import PTEFile
    from torch.export.pt2_archive._package import AOTICompiledModel
else:
    #: torch for the modules the plugin loads into every session: imported by the first read.
    torch = _Deferred("torch")
    #: ``torch.utils._pytree`` (no public twin in torch 2.13.0-2.14.1), imported by the first read.
    pytree = _Deferred("torch.utils._pytree")


class Quieted:
    """What a quiet call emitted: warnings and printed text."""

    def __init__(self) -> None:
        self.warnings: list[warnings.WarningMessage] = []
        self.stdout = ""


@contextlib.contextmanager
def quiet_torch(fds: bool = False) -> Iterator[Quieted]:
    """Record warnings, capture prints; with ``fds``, also what C++ writes to fds 1 and 2."""
    captured = Quieted()
    buffer = io.StringIO()
    previous_disable = logging.root.manager.disable
    # torch's structured-trace logger ignores logging.disable(), so it is muted by name.
    trace_log = logging.getLogger("torch.__trace")
    previous_trace = trace_log.disabled
    with warnings.catch_warnings(record=True) as caught:
        # The default filter would show a warning from a given line only once per process.
        warnings.simplefilter("always")
        warnings.showwarning = _recording_stacks(caught)
        logging.disable(logging.WARNING)
        trace_log.disabled = True
        try:
            # The exporters print to stdout and stderr directly, not through logging.
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                with _fds_silenced() if fds else contextlib.nullcontext():
                    yield captured
        finally:
            logging.disable(previous_disable)
            trace_log.disabled = previous_trace
            captured.warnings.extend(caught)
            captured.stdout = buffer.getvalue()


def _recording_stacks(caught: list[warnings.WarningMessage]) -> Callable[..., None]:
    """Record warnings, adding ``warning.stack`` to a TracerWarning to find the model's line."""

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        record = warnings.WarningMessage(message, category, filename, lineno, file, line)
        if category.__name__ == "TracerWarning":
            stack: list[tuple[str, int, str]] = []
            frame: Any = sys._getframe(1)
            while frame is not None and len(stack) < 200:
                code = frame.f_code
                if stack or code.co_filename == filename:  # start at the warning's own frame
                    stack.append((code.co_filename, frame.f_lineno, code.co_qualname))
                frame = frame.f_back
            record.stack = stack  # type: ignore[attr-defined]
        caught.append(record)

    return showwarning


@contextlib.contextmanager
def _fds_silenced() -> Iterator[None]:
    """Point fds 1 and 2 at a scratch file: some exporters print from C++."""
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real fds (an embedded interpreter)
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
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_attr(obj: object, dotted: str) -> str | None:
    """The first missing attribute on ``dotted`` under ``obj``, or None."""
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return part
        obj = getattr(obj, part)
    return None


def torchscript_unavailable(call: str) -> str | None:
    """Why ``torch.jit.<call>`` (``trace`` or ``script``) cannot be used here, or None.

    TorchScript is deprecated (torch 2.14 warns on every call); a torch may remove it or make it
    raise, so this probes a tiny round trip instead of checking the version.
    """
    missing = missing_attr(torch, f"jit.{call}") or missing_attr(torch, "jit.save") or missing_attr(torch, "jit.load")
    if missing:
        return f"torch {torch.__version__} has no torch.jit.{missing}: TorchScript was removed"
    jit = torch.jit
    return _torchscript_probe(call, getattr(jit, call), jit.save, jit.load)


@lru_cache(maxsize=8)
def _torchscript_probe(
    call: str, compile_fn: Callable[..., object], save: Callable[..., object], load: Callable[..., object]
) -> str | None:
    stage = f"torch.jit.{call}"
    try:
        with quiet_torch(), torch.no_grad():
            example = torch.zeros(1)
            # No check_trace: its comparison imports the slow torch.distributed.tensor.
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
    # No comment on the def line: TorchScript would parse it as a type comment.
    return x + 1


#: torch's TorchScript deprecation message, the same on torch 2.13.0, 2.14.1 and 2.15.0.
_JIT_DEPRECATED = re.compile(r"`torch\.jit\.\w+` is deprecated")


def torchscript_deprecation(caught: Iterable[warnings.WarningMessage]) -> str | None:
    """torch's TorchScript deprecation among recorded warnings, with torch's version, or None."""
    for w in caught:
        text = str(w.message).strip()
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and _JIT_DEPRECATED.search(text):
            return f"torch {torch.__version__}: {text.splitlines()[0]}"
    return None


#: The variables hypothesis reads to tell a CI run (``hypothesis._settings._CI_VARS``, hypothesis
#: 6.170.17): a name, and the value it must have (None: any). Read here without importing hypothesis,
#: which a check the verdict cache reuses never needs; tests/test_compat.py holds the two to one answer.
_CI_VARS = {
    "CI": None,
    "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI": None,
    "TF_BUILD": "true",
    "bamboo.buildKey": None,
    "BUILDKITE": "true",
    "CIRCLECI": "true",
    "CIRRUS_CI": "true",
    "CODEBUILD_BUILD_ID": None,
    "GITHUB_ACTIONS": "true",
    "GITLAB_CI": None,
    "HEROKU_TEST_RUN_ID": None,
    "TEAMCITY_VERSION": None,
}


def is_in_ci() -> bool:
    """hypothesis's own CI detection, which derandomizes the search there."""
    return any(key in os.environ and (value is None or os.environ[key] == value) for key, value in _CI_VARS.items())


def cuda_closed_in_forked_child() -> bool:
    """In a forked child of a parent that touched CUDA, make CUDA look absent, since
    torch.export would initialise it and fail. Private ``_is_in_bad_fork`` (torch 2.11-2.14.1)."""
    in_bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
    if in_bad_fork is None or not in_bad_fork():
        return False
    torch.cuda.is_available = lambda: False  # this process only: it exits after the check
    torch.cuda.device_count = lambda: 0
    return True


# Private APIs. Every private name of another library the plugin uses goes through this module,
# one function or constant each; tests/test_compat.py checks each one. Checked on: torch 2.13.0
# and 2.14.1, pytest 9.2.0, hypothesis 6.170.17, executorch 1.5.1.


def tree_flatten_with_path(
    tree: object, is_leaf: Callable[[object], bool] | None = None
) -> tuple[list[tuple[tuple[Any, ...], Any]], Any]:
    """``pytree.tree_flatten_with_path`` that also reads nodes without ``flatten_with_keys_fn``,
    on which torch's raises (transformers 4.x and early 5.x register ``ModelOutput`` so)."""
    _, spec = pytree.tree_flatten(tree, is_leaf=is_leaf)
    return list(_key_paths((), tree, is_leaf)), spec


def _key_paths(
    path: tuple[Any, ...], tree: object, is_leaf: Callable[[object], bool] | None
) -> Iterator[tuple[tuple[Any, ...], Any]]:
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


def graph_module_flat_inputs(graph_module: torch.fx.GraphModule, call: object) -> list[Any]:
    """``call``'s flat inputs in a ``GraphModule``'s order (torch 2.13.0-2.14.1)."""
    import torch.fx._pytree as fx_pytree

    return fx_pytree.tree_flatten_spec(call, graph_module._in_spec)


def program_guards(module: torch.fx.GraphModule) -> Callable[[tuple[Any, ...], dict[str, Any]], None] | None:
    """The input guards of ``ExportedProgram.module()``, checked without running its graph; None where
    the graph asserts more than its inputs' guards, so only running it tells (torch 2.13.0-2.14.1)."""
    guards = getattr(module, "_guards_fn", None)
    if guards is None or not hasattr(module, "_in_spec"):
        return None
    for node in module.graph.nodes:
        name = str(node.target) if node.op == "call_function" else ""
        # A dtype assertion only fails on another dtype, which the drawn inputs never have.
        if ("assert" in name and "_assert_tensor_metadata" not in name) or "constrain_range" in name:
            return None

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        guards(*graph_module_flat_inputs(module, (args, kwargs)))  # the placeholders' order

    return check


def reorder_kwargs(kwargs: dict[str, Any], in_spec: pytree.TreeSpec) -> dict[str, Any]:
    """Keywords in a program's order (torch 2.13.0-2.14.1)."""
    from torch.export._tree_utils import reorder_kwargs as reorder

    return reorder(kwargs, in_spec)


def onnx_registry_class() -> type | None:
    """The dynamo ONNX exporter's ``ONNXRegistry`` class, or None (torch 2.13.0-2.14.1)."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    return _registration.ONNXRegistry


def torch_cxx11_abi() -> bool:
    """Whether torch's C++ libraries use the C++11 ABI, which the C++ runner must match
    (torch 2.13.0 to 2.15.0; True on every wheel since 2.6)."""
    return bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))


#: What AOTInductor needs of ``torch._inductor``.
AOTI_FUNCTIONS = ("aoti_compile_and_package", "aoti_load_package")


@contextlib.contextmanager
def onnx_capture_strategies(seconds: list[float], *, skip_non_strict: bool) -> Iterator[None]:
    """[Shared Capture] Time the dynamo ONNX export's capture strategies, optionally skipping
    the non-strict one (torch 2.13.0)."""
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

    def timed(self: object, *args: object, **kwargs: object) -> object:
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
    """Why AOTInductor cannot be used here, or None (torch 2.13.0-2.14.1)."""
    try:
        import torch._inductor as inductor
    except ImportError as exc:  # pragma: no cover - a torch built without inductor
        return f"torch._inductor does not import: {exc}"
    missing = next((attr for attr in AOTI_FUNCTIONS if not hasattr(inductor, attr)), None)
    return f"torch {torch.__version__} has no torch._inductor.{missing}" if missing else None


def aoti_compile_and_package(program: torch.export.ExportedProgram, package_path: str) -> str:
    import torch._inductor  # torch 2.13.0-2.14.1, as all of AOTI_FUNCTIONS

    return torch._inductor.aoti_compile_and_package(program, package_path=package_path)


def export_load(path: str) -> torch.export.ExportedProgram:
    """``torch.export.load``, raising the error that stopped it (torch 2.13.0-2.14.1).

    torch logs its reader's error, tries an older format, then raises only "check the warnings
    above" (logging is off around the plugin's torch calls): the file is read again with that
    reader, on the error path only, so the row quotes what it refused.
    """
    try:
        return torch.export.load(path)
    except RuntimeError as exc:
        if "error when deserializing" not in str(exc):
            raise
        from torch.export.pt2_archive._package import load_pt2

        try:
            load_pt2(path)
        except Exception as inner:  # noqa: BLE001 - whatever the reader raised is the reason
            raise RuntimeError(f"torch.export.load cannot read the file: {type(inner).__name__}: {inner}") from inner
        raise


def aoti_load_package(path: str) -> AOTICompiledModel:
    import torch._inductor

    return torch._inductor.aoti_load_package(path)


def conv_module_types() -> tuple[type, ...]:
    """The base of every convolution layer type (torch 2.13.0-2.14.1)."""
    return (torch.nn.modules.conv._ConvNd,)


# nn.Module's private dicts (torch 2.13.0-2.14.1), which unlike the public accessors keep None
# entries, repeated children and non-persistent buffers.
def own_parameters(module: torch.nn.Module) -> dict[str, Any]:
    return module._parameters


def own_buffers(module: torch.nn.Module) -> dict[str, Any]:
    return module._buffers


def own_children(module: torch.nn.Module) -> dict[str, Any]:
    return module._modules


def non_persistent_buffers(module: torch.nn.Module) -> set[str]:
    return module._non_persistent_buffers_set


def script_has_method(scripted: torch.jit.ScriptModule, name: str) -> bool:
    """Whether ``scripted`` has the compiled method ``name`` (torch 2.13.0-2.14.1)."""
    return bool(scripted._c._has_method(name))


def compiled_original(module: object) -> torch.nn.Module | None:
    """The module inside an ``OptimizedModule``, else None (torch 2.13.0-2.14.1)."""
    if type(module).__name__ != "OptimizedModule":
        return None
    return getattr(module, "_orig_mod", None)


def compiled_in_place(module: object) -> bool:
    """Whether ``module.compile()`` compiled it in place (torch 2.13.0-2.14.1)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def deserialize_pte(data: bytes) -> PTEFile:
    """A ``.pte`` file's program (executorch 1.5.1)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(data)


def unittest_item_class() -> type:
    from _pytest.unittest import TestCaseFunction  # a unittest.TestCase method's item (pytest 9.2.0)

    return TestCaseFunction


def unittest_excinfo(item: pytest.Item) -> list[Any] | None:
    """The errors a unittest body reported (pytest 9.2.0)."""
    return getattr(item, "_excinfo", None)


def item_aware_fixtures(item: pytest.Item) -> list[str]:
    """[Fixtures Once] ``item``'s function-scoped fixtures, other than pytest's, that take
    ``request`` and so may differ per item (pytest 8.0 to 9.2)."""
    info = getattr(item, "_fixtureinfo", None)  # only function items have one
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
    """[Fixtures Once] Make ``item``'s setup set up no fixture by shadowing ``Function.setup``
    (pytest 8.0 to 9.2); False for an item whose class overrides ``setup``."""
    import pytest

    if getattr(type(item), "setup", None) is not pytest.Function.setup:
        return False
    item.setup = lambda: None
    return True


def xdist_queued(config: pytest.Config) -> list[int] | None:
    """[Side By Side] Indices of ``session.items`` this xdist worker has queued, in run order, or
    None (pytest-xdist 3.5 to 3.8). Under ``--dist worksteal`` they may still be taken back."""
    for plugin in config.pluginmanager.get_plugins():
        torun = getattr(plugin, "torun", None)
        if type(plugin).__name__ != "WorkerInteractor" or torun is None or not hasattr(torun, "lock"):
            continue
        with torun.lock() as queued:
            rest = list(queued)
        following = [getattr(plugin, "nextitem_index", None), *rest]
        return [index for index in following if isinstance(index, int)]
    return None


def fixtureinfo(item: pytest.Function) -> FuncFixtureInfo:
    """``item._fixtureinfo``, to copy an item (pytest 9.2.0)."""
    return item._fixtureinfo


#: Private ``pytest.Function`` methods the per-backend item copy overrides (pytest 9.2.0).
FUNCTION_OVERRIDES = ("_getobj", "_getinstance")


def terminal_width(terminalreporter: pytest.TerminalReporter) -> int:
    """The terminal width pytest measured (pytest 9.2.0)."""
    return int(terminalreporter._tw.fullwidth)


def add_database_digest(test: Any, digest: bytes) -> None:
    """Give each (test, backend) its own hypothesis database key (hypothesis 6.170.17)."""
    test.hypothesis.inner_test._hypothesis_internal_add_digest = digest


def hypothesis_home_directory(stored: object) -> Path:
    """The home folder in what hypothesis's ``configuration.storage_directory()`` returned: the folder
    itself on hypothesis 6.100, an object holding it (``home_directory``) on 6.170."""
    return Path(str(getattr(stored, "home_directory", stored)))


def scan_local_constants() -> bool:
    """Have hypothesis scan local modules for constants now (hypothesis 6.170.17)."""
    try:
        from hypothesis.internal.conjecture.providers import _get_local_constants
    except ImportError:
        return False
    _get_local_constants()
    return True


#: The plugin's package folder, with a trailing separator.
PLUGIN_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _NotPluginFile:
    """hypothesis's ``is_local_module_file``, False for the plugin's files."""

    def __init__(self, local: Callable[[str], object]) -> None:
        self.local = local

    def __call__(self, path: str) -> bool:
        return not os.path.abspath(path).startswith(PLUGIN_FOLDER) and bool(self.local(path))


def plugin_modules_not_local() -> bool:
    """[Own Constants] Never treat the plugin's files as "local" modules for hypothesis.

    hypothesis draws values from literals in local modules, and an editable install makes the
    plugin local, so the same test would draw differently than from a wheel (hypothesis 6.170.17).
    """
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
