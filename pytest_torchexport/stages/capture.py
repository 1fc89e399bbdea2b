"""[Shared Capture] torch.export's capture of a recorded call, made once for every backend that lowers it.

``export``, ``onnx`` (the dynamo exporter's first strategy), ``aoti`` and ``executorch`` all start
the same way: ``torch.export.export`` of the call, non-strict, with the plan's dynamic shapes, at
the export example (dims of size 0 or 1 grown to 2). That capture costs as much as a small
model's whole lowering (``benchmarks/bench_phases.py``), and before sharing each backend's child
paid it again. Here it is made once per recorded call and device, in a forked child of the test's
process (``share``) after eager's shared prelude and before the first of those
backends' check children is forked; the test's process loads the program the capture child saved,
each check's child inherits it by fork, its own copy-on-write, and starts from it
(``ExportContext.exported_program``; ``torch.onnx.export`` given the program skips its capture).

A capture that fails is shared too, as its error (a failed capture is not repeated
with the same arguments): the child writes down the error's class, text and traceback frames
(``described`` below; a pickled one loses them, and torch's guard errors their message) and each
sharing check raises it again, so its row names the same cause and source line with
``capture: "shared"``. The fallbacks that capture otherwise still run (the ONNX exporter's strict
one), and where the error is a constraint violation the capture with the violated dims left to
torch (what ``exporting.build`` retries with) is made and shared as well. What
still captures on its own (``capture: "own"`` on the row): a check whose export asks for other
arguments (the recorded size 0 or 1, ``assumptions.py``), the ONNX exporter's fallbacks, inline
checks (they share no prelude either), a CUDA check, a test with only one such backend (nothing
to share: its capture stays in its child), and a recurrent module's onnx check
(``DynamoOnnxBackend.captures_otherwise``).

The time limit: the capture child runs under the check's ``timeout``, and each sharing check's
child counts the capture's seconds as spent (``runner.Child(spent=...)``). Memory: the program
holds a copy of the module's weights in the test's process while the test's checks start.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._compat import quiet_torch
from ..backends.base import Captured, capture_program, keywords_bound, load_backend
from ..cache import sources
from ..isolation import runner
from ..isolation.runner import THIS
from ..reference.eager import copy_module
from .exporting import export_inputs, violated_dims
from .prelude import Prelude


@dataclass
class SharedCapture:
    """The captures of one recorded call on one device, by the dims left to torch, and the files read."""

    captures: dict[frozenset[str], Captured] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.captures.values())


def shares(spec: Any, module: torch.nn.Module | None = None) -> bool:
    """Whether the backend ``spec`` (as registered) starts from the shared capture (of ``module``'s call:
    a backend whose entry point captures that module otherwise does not, ``Backend.captures_otherwise``)."""
    try:
        backend = load_backend(spec)
        if not (getattr(backend, "shares_capture", False) and getattr(backend, "dynamic", True)):
            return False
        otherwise = getattr(backend, "captures_otherwise", None)
        return not (module is not None and callable(otherwise) and otherwise(module))
    except Exception:  # noqa: BLE001 - the check itself reports an unloadable backend
        return False


def worth_sharing(registered: Mapping[str, Any], names: Iterable[str], module: torch.nn.Module) -> bool:
    """Two or more of the call's backends start from the capture of ``module``'s call (one alone
    captures in its child). A recurrent module's onnx check captures on its own (torch.onnx decomposes
    LSTM and GRU otherwise: ``DynamoOnnxBackend.captures_otherwise``), so it does not count; the
    others (export, aoti, executorch) still share theirs. The capture is made in a child of its own,
    so the test's process never captures: a failed plain capture of a GRU, which made the next ONNX
    export in the same process static (tests/test_isolation_crashes.py), happens in no check's process."""
    return sum(1 for name in names if name in registered and shares(registered[name], module)) >= 2


def share(
    store: dict[Hashable, SharedCapture], key: Hashable, prelude: Prelude, device: str, timeout: float
) -> SharedCapture:
    """The shared capture of ``key``'s call (made now, the first time), for the test's process.

    Made in a forked child with ``timeout``, never in this process: a model that
    crashes, exits or hangs while it is captured must end its checks' rows, not the session
    (tests/test_isolation_crashes.py). The child saves each program (``torch.export.save``) and
    this process loads it (``torch.export.load`` runs none of the model's code), so the checks'
    children inherit it by fork. A child that dies, runs past ``timeout`` or cannot save what it
    captured shares nothing: each check captures on its own, in its own child, as before."""
    if key not in store:
        # [Spare Copy] The copy every check's child exports, made here before the capture child is
        # forked: the capture child and every check's child after it inherit it instead of copying
        # the module each (the test's process waits for the capture child anyway).
        prelude.eager.keep_spare()
        store[key] = _in_child(prelude, device, timeout)
    return store[key]


def _in_child(prelude: Prelude, device: str, timeout: float) -> SharedCapture:
    folder = Path(tempfile.mkdtemp(prefix="torchexport-capture-"))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the child only captures
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: never returns
            code = 1
            try:
                os.setpgid(0, 0)  # its own group, so a kill reaches what it started
                gc.freeze()  # never collects what it inherited (runner.py says why)
                for fd in [*THIS.children, *THIS.gates]:  # the check children's pipes are not its to hold
                    os.close(fd)
                torch.set_num_threads(1)
                _write(_capture(prelude, device), folder)
                code = 0
            finally:
                os._exit(code)
        t0 = time.monotonic()
        status = None
        while time.monotonic() - t0 < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            runner.pump(0.02)
        else:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return SharedCapture()
        if status != 0:
            return SharedCapture()
        return _read(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write(shared: SharedCapture, folder: Path) -> None:
    entries = []
    for i, (relaxed, captured) in enumerate(shared.captures.items()):
        entry: dict[str, Any] = {"relaxed": sorted(relaxed), "seconds": captured.seconds}
        try:
            if captured.program is None:
                # Its error, as the row reads it (class, text, frames): a pickled one loses them.
                entry["error"] = described(captured.error or RuntimeError("the capture returned nothing"))
                entries.append(entry)
                continue
            with quiet_torch(fds=True):
                torch.export.save(captured.program, str(folder / f"{i}.pt2"))
                entry["program"] = f"{i}.pt2"
        except Exception:  # noqa: BLE001 - what cannot be saved is not shared: each check captures its own
            continue
        entries.append(entry)
    (folder / "captures.json").write_text(json.dumps({"entries": entries, "sources": shared.sources}))


def _read(folder: Path) -> SharedCapture:
    manifest = json.loads((folder / "captures.json").read_text())
    shared = SharedCapture(sources=list(manifest["sources"]))
    for entry in manifest["entries"]:
        try:
            if "error" in entry:
                captured = Captured(error=revived(entry["error"]), seconds=entry["seconds"])
            else:
                with quiet_torch(fds=True):
                    captured = Captured(
                        program=torch.export.load(str(folder / entry["program"])), seconds=entry["seconds"]
                    )
        except Exception:  # noqa: BLE001 - what this process cannot load or make again is not shared
            continue
        shared.captures[frozenset(entry["relaxed"])] = captured
    return shared


class _Files:
    sources: list[str] | None = None


def _capture(prelude: Prelude, device: str) -> SharedCapture:
    """The captures, made in this process (the capture child's)."""
    plan = prelude.plan
    args, kwargs, _, _ = export_inputs(plan, load_backend("pytest_torchexport.backends.export:ExportBackend"), device)
    files = _Files()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a check's child: OpenMP's pool must not be started before a fork (runner.py)
    try:
        with sources.collecting(files):
            spare = prelude.eager.take_spare()  # this child's own by fork (share made it)
            module = keywords_bound(spare if spare is not None else copy_module(prelude.eager.module), kwargs)
            shared = SharedCapture()
            first = _timed(module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=frozenset()))
            shared.captures[frozenset()] = first
            relaxed = violated_dims(first.error, plan) if first.error is not None else frozenset()
            if relaxed:  # what exporting.build exports with next: made here too
                shared.captures[relaxed] = _timed(
                    module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=relaxed)
                )
    finally:
        torch.set_num_threads(threads)
    shared.sources = list(files.sources or ())
    return shared


def _timed(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic: Any) -> Captured:
    t0 = time.perf_counter()
    # As exporting.export_once exports: under no_grad, torch's noise kept quiet, the files it reads collected.
    with quiet_torch(fds=True), torch.no_grad(), sources.reading():
        try:
            program = capture_program(module, args, kwargs, dynamic)
        except Exception as exc:  # noqa: BLE001 - a failed capture is every sharing backend's export_error
            return Captured(error=exc, seconds=time.perf_counter() - t0)
    return Captured(program=program, seconds=time.perf_counter() - t0)


__all__ = ["SharedCapture", "share", "shares", "worth_sharing"]


# --- a failed capture, carried from the capture child to the test's process -----------------
#
# A pickled exception loses its traceback, and torch's guard errors their message (their
# ``__init__`` takes other arguments than ``args`` holds): what the row reads of an export error is
# its class's name, its text and the source lines of its traceback and of the errors it chains
# (``explain.user_frames``). Those are written down in the child (``described``) and an exception
# with the same class, text and traceback frames is made again here (``revived``), so every backend
# that would repeat the capture fails with it, and its row names the same cause and line.

#: the errors a chain holds at most (torch's are one or two deep)
_CHAIN = 8


def described(exc: BaseException) -> list[dict[str, Any]]:
    """``exc`` and the errors it chains (``__cause__``, else ``__context__``), outermost first, as JSON."""
    chain: list[dict[str, Any]] = []
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < _CHAIN:
        seen.append(e)
        try:
            text = str(e)
        except Exception:  # noqa: BLE001 - an error whose __str__ raises is told by its class alone
            text = ""
        chain.append(
            {
                "module": type(e).__module__,
                "qualname": type(e).__qualname__,
                "text": text,
                "cause": e.__cause__ is not None,
                "suppress_context": e.__suppress_context__,
                "frames": [
                    [fs.filename, fs.lineno, fs.name] for fs in traceback.extract_tb(e.__traceback__) if fs.lineno
                ],
            }
        )
        e = e.__cause__ or e.__context__
    return chain


def revived(chain: list[dict[str, Any]]) -> BaseException:
    """The error ``described`` wrote down: of its class where that imports (else one of the same
    name), with its text, its traceback's frames and its chain."""
    errors = [_error(entry) for entry in chain]
    for outer, inner, entry in zip(errors, errors[1:], chain):
        if entry["cause"]:
            outer.__cause__ = inner
        else:
            outer.__context__ = inner
        outer.__suppress_context__ = entry["suppress_context"]
    return errors[0]


def _error(entry: dict[str, Any]) -> BaseException:
    cls = _class(entry["module"], entry["qualname"])
    text = entry["text"]
    error = _made(cls, text)
    return error.with_traceback(_traceback(error, entry["frames"]))


def _class(module: str, qualname: str) -> type[BaseException]:
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - a class that is not reachable here: one of its name stands in
        found = None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return type(qualname.rsplit(".", 1)[-1], (Exception,), {"__module__": module, "__qualname__": qualname})


def _made(cls: type[BaseException], text: str) -> BaseException:
    """An instance of ``cls`` whose ``str`` is ``text``, its own ``__init__`` not run (torch's errors
    take other arguments than their message); where its ``__str__`` reads what that ``__init__`` would
    have set, a subclass of the same name that says ``text``."""
    try:
        error = cls.__new__(cls)
        BaseException.__init__(error, text)
        if str(error) == text:
            return error
    except Exception:  # noqa: BLE001 - a class that cannot be made so: the subclass below
        pass
    try:
        told: type[BaseException] = type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__str__": lambda self: text,
            },
        )
        error = told.__new__(told)
        BaseException.__init__(error, text)
        return error
    except Exception:  # noqa: BLE001 - a class that cannot be subclassed (final)
        plain = type(cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        return plain(text)


def _traceback(error: BaseException, frames: list[list[Any]]) -> types.TracebackType | None:
    """A traceback through ``frames`` (file, line, function), innermost last, as ``jinja2`` makes its
    templates' tracebacks: a ``raise`` compiled at that file and line, run and caught."""
    tb: types.TracebackType | None = None
    for filename, lineno, name in reversed(frames):
        try:
            code = compile("\n" * (int(lineno) - 1) + "raise __error__", str(filename), "exec")
            code = code.replace(co_name=str(name))
            exec(code, {"__error__": error})  # noqa: S102 - a raise and nothing else
        except BaseException as raised:  # noqa: BLE001 - the raise above, caught for its frame
            frame = raised.__traceback__.tb_next if raised.__traceback__ is not None else None
            error.__traceback__ = None
            if frame is None:
                continue
            tb = types.TracebackType(tb, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return tb
