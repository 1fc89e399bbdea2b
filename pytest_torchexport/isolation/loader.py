"""The standalone loader: a fresh Python that loads and runs saved artifacts, and its client.

The loader is a fresh interpreter (not a fork) run from an empty directory, so it proves an
artifact loads without the test's code. It serves a Unix socket, so forked children can use it
too, and is restarted when it stops answering. It also relays the C++ load's requests to one
served C++ runner (``CppRelay``), so a session starts libtorch's C++ side once, not per
artifact. See docs/howto-standalone.md.
"""

from __future__ import annotations

import atexit
import faulthandler
import gc
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import freed
from ..backends.base import ExportContext, load_backend
from ..reference.compare import flatten
from .runner import THIS

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

#: How long one request may take, start-up included.
TIMEOUT_S = 120.0

#: Logged as each request stage begins, so a crash can be attributed to load or run.
STAGE_MARK = "torchexport-loader stage: "

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the package's parent, for PYTHONPATH


#: The longest path a Unix socket may have, less a margin (108 bytes on Linux, 104 on macOS).
_SOCKET_PATH_MAX = 100


def _short_temp() -> str | None:
    """Where the loader's folder goes: the temporary directory, unless its path is too long for a
    Unix socket (a deep TMPDIR, as pytest's own tmp_path gives), then ``/tmp``."""
    default = tempfile.gettempdir()
    if len(os.path.join(default, "torchexport-loader-xxxxxxxx", "socket")) <= _SOCKET_PATH_MAX:
        return None
    return "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None


class LoaderUnavailable(Exception):
    """The loader did not answer in time or died: not a verdict on the artifact."""

    def __init__(self, message: str, *, signal: str | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        self.signal, self.stage = signal, stage


class Loader:
    """The handle on one spawned loader process, shared with forked children."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.home: str | None = None
        self.address: str | None = None
        self.started = 0.0
        self.starts = 0
        self.killed = False  # killed by us; it may not have exited yet

    def ensure(self) -> None:
        """Start the loader unless it is running (in the owning process)."""
        if self.proc is not None and not self.killed and self.proc.poll() is None:
            return
        self.close()
        self.home = tempfile.mkdtemp(prefix="torchexport-loader-", dir=_short_temp())
        os.chmod(self.home, 0o700)
        self.address = os.path.join(self.home, "socket")
        env = dict(os.environ)
        paths = [PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["TORCHEXPORT_LOADER_PARENT"] = str(os.getpid())
        with open(os.path.join(self.home, "log.txt"), "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest_torchexport.isolation.loader", self.address],
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # out of reach of a check child's process-group kill
            )
        self.started = time.monotonic()
        self.starts += 1
        self.killed = False

    def request(self, message: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        if self.address is None or self.proc is None:
            raise LoaderUnavailable("the standalone loader was not started")
        deadline = time.monotonic() + timeout
        conn = None
        while conn is None:
            try:
                conn = Client(self.address, family="AF_UNIX")
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or not _alive(self.proc.pid):
                    self.kill()
                    raise LoaderUnavailable(
                        f"the standalone loader did not start listening ({self._log_tail()})"
                    ) from None
                time.sleep(0.02)
        try:
            conn.send(message)
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.kill()
                raise LoaderUnavailable(f"the standalone loader did not answer within {timeout:g} s; it was restarted")
            return conn.recv()
        except (EOFError, OSError) as exc:
            died = self._died_by()
            self.kill()
            raise LoaderUnavailable(
                f"the standalone loader died ({type(exc).__name__}; {self._log_tail()})",
                signal=died,
                stage=self._stage() if died else None,
            ) from None
        finally:
            conn.close()

    def kill(self) -> None:
        """Stop it; the owner's next ``ensure`` starts another."""
        if self.proc is not None:
            self.killed = True
            try:
                os.kill(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        if self.proc is not None:
            self.kill()
            try:
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
            self.proc = None
        if self.home:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def _died_by(self) -> str | None:
        """The signal that ended the loader, or None."""
        if self.proc is None:
            return None
        try:
            code = self.proc.wait(timeout=2.0)
        except (subprocess.TimeoutExpired, ChildProcessError):
            return None
        if code is None or code >= 0:
            return None
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"

    def _stage(self) -> str | None:
        """The last stage the loader's log says it began."""
        found = re.findall(rf"^{STAGE_MARK}(\w+)$", self._log_text() or "", flags=re.MULTILINE)
        return found[-1] if found else None

    def _log_text(self) -> str | None:
        """The loader's log, or None."""
        try:
            return Path(self.home or "", "log.txt").read_text(errors="replace")
        except OSError:
            return None

    def _log_tail(self) -> str:
        text = self._log_text()
        if text is None:
            return "no log"
        return text.strip()[-400:] or "no output"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie also answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def start() -> Loader:
    """This process's loader, started if needed (call before forking)."""
    if THIS.loader is None:
        THIS.loader = Loader()
        atexit.register(shutdown)
    THIS.loader.ensure()
    return THIS.loader


def current() -> Loader | None:
    """The loader this process or its parent started, if any."""
    return THIS.loader


def shutdown() -> None:
    if THIS.loader is not None:
        THIS.loader.close()
        THIS.loader = None


# -- what a failed load reached for --

_REACHED = (
    (re.compile(r"Unknown builtin op: (\w+::\w+)"), "the custom op {0}"),
    (re.compile(r"failed to resolve torch\.ops\.(\w+)\.(\w+)"), "the custom op {0}::{1}"),
    (re.compile(r"No such operator (\w+::\w+)"), "the custom op {0}"),
    (re.compile(r"'_OpNamespace' '(\w+)' object has no attribute '(\w+)'"), "the custom op {0}::{1}"),
    # "is not registered": torch 2.13 and 2.14.1; "failed because ...": torch 2.15.0
    (
        re.compile(r"Deserializing ([\w.<>]+) in pytree (?:is|failed because the serialized type is) not registered"),
        "the registered pytree type {0}",
    ),
    (re.compile(r"Unknown type name '(__torch__\.[\w.]+)'"), "the Python class {0}"),
    (re.compile(r"Can't get attribute '(\w+)' on <module '([\w.]+)'"), "the Python class {1}.{0}"),
    (re.compile(r"No module named '([\w.]+)'"), "the Python module {0}"),
)


def reached_for(text: str, first: tuple[tuple[re.Pattern[str], str], ...] = ()) -> str | None:
    """What a failed standalone load was missing (an op, a class, a pytree type), or None."""
    for pattern, template in first + _REACHED:
        match = pattern.search(text)
        if match:
            return template.format(*match.groups())
    return None


# -- the loader process --


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            records.append(text)

    def failed(stage: str, exc: BaseException) -> dict[str, Any]:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        full = "\n".join([*records, "".join(traceback.format_exception(exc))])
        return {"ok": False, "stage": stage, "error": text[-2000:], "reached": reached_for(full)}

    # torch.export.load logs the real error and raises "check the warnings above".
    handler = Keep(level=logging.WARNING)
    torch_log = logging.getLogger("torch")
    torch_log.addHandler(handler)
    export_log = logging.getLogger("torch.export")
    export_log.addHandler(handler)
    t0 = time.perf_counter()
    try:
        try:
            backend = load_backend(request["backend"])
            args, kwargs = torch.load(request["inputs"], weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a third-party backend may fail in any way
            return failed("inputs", exc)
        plan = types.SimpleNamespace(**request["plan"])
        ctx = ExportContext(device=request["device"], plan=plan, scratch=Path(request["scratch"]))
        _begin("load")
        try:
            loaded = backend.load(Path(request["directory"]), ctx)
        except Exception as exc:  # noqa: BLE001 - a runtime may refuse a file in any way
            return failed("load", exc)
        load_s = time.perf_counter() - t0
        _begin("run")
        try:
            with torch.no_grad():
                outputs = backend.run(loaded, args, kwargs)
            leaves = [v for _, v in flatten(outputs)[0] if v is not None]
        except Exception as exc:  # noqa: BLE001 - a runtime may raise anything
            return failed("run", exc)
        torch.save(leaves, request["outputs"])
        return {"ok": True, "load_s": load_s, "run_s": time.perf_counter() - t0 - load_s}
    finally:
        torch_log.removeHandler(handler)
        export_log.removeHandler(handler)


class CppRelay:
    """In the loader: the C++ runner of ``isolation/cpp.py`` served from one process
    (``runner --serve``), started at the first request and again after it dies.

    It answers ``{"code": STATUS}`` as the runner's exit status would be (negative: killed by that
    signal, with the tail of its log), or ``{"timeout": True}`` after killing it.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.path: str | None = None
        self.lock = threading.Lock()  # one request at a time: the runner reads them in turn

    def answer(self, conn: Connection, request: dict[str, Any]) -> None:
        """Run one request and send its answer on ``conn`` (in a thread of its own)."""
        try:
            with self.lock:
                answer = self.run(request)
            conn.send(answer)
        except (EOFError, OSError):
            pass  # the client went away (its check timed out)
        finally:
            conn.close()

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        path, fields, timeout = request["cpp"][0], request["cpp"][1:], request["timeout"]
        proc = self._send(path, "\t".join(fields) + "\n")
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], timeout)[0]:
            self.stop()
            return {"timeout": True}
        line = proc.stdout.readline()
        if line.strip():
            return {"code": int(line)}
        code = proc.wait()  # no answer: it died on this artifact
        self.stop()
        return {"code": code, "log": Path("cpp-log.txt").read_text(errors="replace")[-600:]}

    def _send(self, path: str, line: str) -> subprocess.Popen[str]:
        """Write one request line, to a fresh runner if it is not running (or died since)."""
        if self.proc is None or self.proc.poll() is not None or self.path != path:
            self._start(path)
        try:
            return self._write(line)
        except OSError:  # it died between requests: once more, on a fresh one
            self._start(path)
            return self._write(line)

    def _write(self, line: str) -> subprocess.Popen[str]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()
        return proc

    def _start(self, path: str) -> None:
        self.stop()
        with open("cpp-log.txt", "w") as log:  # the loader's own empty folder
            self.proc = subprocess.Popen(
                [path, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        self.path = path

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:  # a request line it never read
                        pass
            self.proc = None


def _begin(stage: str) -> None:
    """Log which stage starts, so a crash can be attributed to it."""
    print(f"{STAGE_MARK}{stage}", file=sys.stderr, flush=True)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent and not _alive(parent):
            os._exit(0)
        time.sleep(1.0)


def main(address: str) -> None:
    parent = int(os.environ.pop("TORCHEXPORT_LOADER_PARENT", os.getppid()))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # Keep the test's directory off sys.path (python -m puts the cwd first).
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    listener = Listener(address, family="AF_UNIX")  # before importing torch, so clients can connect
    faulthandler.enable()  # a crash's Python stack goes to the log

    torch.set_num_threads(1)  # the check runs beside it; one core each
    relay = CppRelay()
    # Each request ends with a full collection ([Freed Memory]), which would otherwise walk
    # every object torch and the exporters made at import, about 0.1 to 0.2 s a time. Frozen
    # right after a collection, what survives it (imports, this loop's state, a C++ answer
    # still running in its thread) is not walked again; each collection walks a request's own.
    gc.freeze()
    while True:
        conn = listener.accept()
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the client went away (its check timed out)
            conn.close()
            continue
        if request == "stop":
            conn.close()
            break
        if "cpp" in request:
            # In a thread: it waits on the C++ runner's process, and a standalone load need not wait for it.
            threading.Thread(target=relay.answer, args=(conn, request), name="torchexport-cpp", daemon=True).start()
            continue
        try:
            conn.send(_serve(request))
        except (EOFError, OSError):
            pass  # the client went away (its check timed out)
        finally:
            conn.close()
            freed.release()  # [Freed Memory] hand what it loaded back to the OS
            gc.freeze()  # what this request imported (an exporter's modules) is not walked again


if __name__ == "__main__":
    main(sys.argv[1])
