"""[Shared Capture] torch.export's capture of a recorded call, made once for every backend that lowers it.

``export``, ``onnx``, ``aoti`` and ``executorch`` all start from the same costly capture. It is
made in a forked child of the test's process, and each check's child inherits the loaded program
by fork. A failed capture is shared as its error, so every row names the same cause.
See docs/architecture.md.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
import types
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._compat import quiet_torch
from ..backends.base import Captured, capture_program, keywords_bound, load_backend
from ..cache import sources
from ..isolation import runner
from ..reference.eager import copy_module
from .exporting import export_inputs, violated_dims
from .prelude import Prelude


@dataclass
class SharedCapture:
    """The captures of one recorded call on one device, by relaxed dims, and the files read."""

    captures: dict[frozenset[str], Captured] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.captures.values())


def shares(spec: Any, module: torch.nn.Module | None = None) -> bool:
    """Whether the backend ``spec`` starts from the shared capture (see ``Backend.captures_otherwise``)."""
    try:
        backend = load_backend(spec)
        if not (getattr(backend, "shares_capture", False) and getattr(backend, "dynamic", True)):
            return False
        otherwise = getattr(backend, "captures_otherwise", None)
        return not (module is not None and callable(otherwise) and otherwise(module))
    except Exception:  # noqa: BLE001 - the check itself reports an unloadable backend
        return False


def worth_sharing(registered: Mapping[str, Any], names: Iterable[str], module: torch.nn.Module) -> bool:
    """Whether two or more of the call's backends start from the capture of ``module``'s call."""
    return sum(1 for name in names if name in registered and shares(registered[name], module)) >= 2


def share(
    store: dict[Hashable, SharedCapture], key: Hashable, prelude: Prelude, device: str, timeout: float
) -> SharedCapture:
    """The shared capture of ``key``'s call, made the first time in a forked child.

    A model that crashes or hangs while captured then ends its checks' rows, not the session;
    if the child fails, each check captures on its own."""
    if key not in store:
        # [Spare Copy] Made before the fork, so every child inherits one copy of the module.
        prelude.eager.keep_spare()
        store[key] = _in_child(prelude, device, timeout)
    return store[key]


def _in_child(prelude: Prelude, device: str, timeout: float) -> SharedCapture:
    """The captures, made in a child (``runner.run_in_child``) that writes them to a scratch folder;
    none if it ran past ``timeout`` or died."""
    folder = runner.scratch_folder("torchexport-capture-")
    try:

        def body() -> None:
            torch.set_num_threads(1)
            _write(_capture(prelude, device), folder)

        if not runner.run_in_child(body, timeout).finished:
            return SharedCapture()
        return _read(folder)
    finally:
        runner.remove_folder(folder)


def _write(shared: SharedCapture, folder: Path) -> None:
    entries = []
    for i, (relaxed, captured) in enumerate(shared.captures.items()):
        entry: dict[str, Any] = {"relaxed": sorted(relaxed), "seconds": captured.seconds}
        try:
            if captured.program is None:
                entry["error"] = described(captured.error or RuntimeError("the capture returned nothing"))
                entries.append(entry)
                continue
            with quiet_torch(fds=True):
                torch.export.save(captured.program, str(folder / f"{i}.pt2"))
                entry["program"] = f"{i}.pt2"
        except Exception:  # noqa: BLE001 - not shared: each check captures its own
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
        except Exception:  # noqa: BLE001 - not shared
            continue
        shared.captures[frozenset(entry["relaxed"])] = captured
    return shared


class _Files:
    sources: list[str] | None = None


def _capture(prelude: Prelude, device: str) -> SharedCapture:
    """The captures, made in the capture child."""
    plan = prelude.plan
    args, kwargs, _, _ = export_inputs(plan, load_backend("pytest_torchexport.backends.export:ExportBackend"), device)
    files = _Files()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP's pool must not be started before a fork (see runner.py)
    try:
        with sources.collecting(files):
            spare = prelude.eager.take_spare()  # inherited by fork from share()
            module = keywords_bound(spare if spare is not None else copy_module(prelude.eager.module), kwargs)
            shared = SharedCapture()
            first = _timed(module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=frozenset()))
            shared.captures[frozenset()] = first
            relaxed = violated_dims(first.error, plan) if first.error is not None else frozenset()
            if relaxed:  # exporting.build retries with these dims relaxed
                shared.captures[relaxed] = _timed(
                    module, args, kwargs, plan.export_dynamic_shapes(module, relaxed=relaxed)
                )
    finally:
        torch.set_num_threads(threads)
    shared.sources = list(files.sources or ())
    return shared


def _timed(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic: Any) -> Captured:
    t0 = time.perf_counter()
    # The same context as exporting.export_once.
    with quiet_torch(fds=True), torch.no_grad(), sources.reading():
        try:
            program = capture_program(module, args, kwargs, dynamic)
        except Exception as exc:  # noqa: BLE001 - becomes every sharing backend's export_error
            return Captured(error=exc, seconds=time.perf_counter() - t0)
    return Captured(program=program, seconds=time.perf_counter() - t0)


__all__ = ["SharedCapture", "share", "shares", "worth_sharing"]


# A pickled exception loses its traceback, and torch's guard errors their message, so the child
# writes down class, text and frames (``described``) and the parent rebuilds it (``revived``).

#: The most errors of a chain that are carried.
_CHAIN = 8


def described(exc: BaseException) -> list[dict[str, Any]]:
    """``exc`` and the errors it chains, outermost first, as JSON."""
    chain: list[dict[str, Any]] = []
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < _CHAIN:
        seen.append(e)
        try:
            text = str(e)
        except Exception:  # noqa: BLE001 - a __str__ that raises
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
    """The error ``described`` wrote down, rebuilt."""
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
    except Exception:  # noqa: BLE001 - a stand-in of the same name
        found = None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return type(qualname.rsplit(".", 1)[-1], (Exception,), {"__module__": module, "__qualname__": qualname})


def _made(cls: type[BaseException], text: str) -> BaseException:
    """An instance of ``cls`` whose ``str`` is ``text``, made without its ``__init__``."""
    try:
        error = cls.__new__(cls)
        BaseException.__init__(error, text)
        if str(error) == text:
            return error
    except Exception:  # noqa: BLE001 - fall back to the subclass below
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
    """A traceback through ``frames``, built as jinja2 does: a ``raise`` compiled at each line, run and caught."""
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
