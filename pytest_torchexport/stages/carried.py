"""[Shared Capture] A failed capture's error, carried from the capture child to the test's process.

A pickled exception loses its traceback, and torch's guard errors their message (their
``__init__`` takes other arguments than ``args`` holds): what the row reads of an export error is
its class's name, its text and the source lines of its traceback and of the errors it chains
(``explain.user_frames``). Those are written down in the child (``described``) and an exception
with the same class, text and traceback frames is made again here (``revived``), so every backend
that would repeat the capture fails with it, and its row names the same cause and line.
"""

from __future__ import annotations

import importlib
import traceback
import types
from typing import Any

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
