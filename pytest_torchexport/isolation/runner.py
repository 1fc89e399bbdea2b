"""Where a check runs: in the test's process, or in a forked child with a time limit.

A child inherits the module by fork and reports each stage as a JSON line over a pipe, so if it
hangs or crashes the parent still knows its stage and findings. It runs one intra-op thread,
since GNU OpenMP's pool does not survive fork, so checks run side by side instead. ``THIS``
holds what belongs to the OS process rather than a session. See docs/howto-isolation.md.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import faulthandler
import gc
import json
import os
import pickle
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._compat import cuda_closed_in_forked_child, torch
from ..options import environment
from ..results.outcome import STAGE_STATUS, Outcome, exception_words, settle
from ..results.report import Finding, Result
from .warmup import Warmup


@dataclass
class Process:
    """The facts of one OS process; a forked child gets its own copy."""

    warmup: Warmup = field(default_factory=Warmup)
    #: read end -> ``Child`` not yet waited for
    children: dict[int, Any] = field(default_factory=dict)
    #: [Held] the write ends of the pipes held children wait on
    gates: set[int] = field(default_factory=set)
    #: in a forked child: the write end of the pipe to its parent
    channel: int | None = None
    #: the standalone loader (``loader.Loader``), possibly inherited
    loader: Any = None
    #: temporary folders this process made, with its pid: removed at its exit (``scratch_folder``)
    temporary: dict[Any, int] = field(default_factory=dict)
    #: whether this process has started the C++ runner's detached build (``cpp.start_build``)
    cpp_build_started: bool = False
    #: [Held] called when a child ends while this process reads its children (a wait, or
    #: ``pump(0)`` where it works a while between waits), so that a held check takes the place
    #: it left at once, not when this process next waits
    on_free: Callable[[], None] | None = None

    def forked(self, channel: int | None) -> None:
        """In a child just forked: close the siblings' pipes and report on ``channel``, if any."""
        for fd in [*self.children, *self.gates]:
            os.close(fd)
        self.children.clear()
        self.gates.clear()
        self.temporary.clear()  # the parent's folders are the parent's to remove
        self.channel = channel
        self.on_free = None  # the held checks are the parent's to let go


#: The one process-wide record; never rebound.
THIS = Process()


def scratch_folder(prefix: str) -> Path:
    """A new private temporary folder for a check or a capture, removed by ``remove_folder`` or, if
    a Ctrl-C lands before that (a check started ahead, or the removal itself), when this process
    exits. A forked child never removes its parent's folders (``Process.forked``)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    THIS.temporary[folder] = os.getpid()
    return folder


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    THIS.temporary.pop(folder, None)


@atexit.register
def _remove_left_behind() -> None:
    pid = os.getpid()
    for folder, owner in list(THIS.temporary.items()):
        if owner == pid:
            remove_folder(folder)


def stage(result: Result, name: str) -> None:
    """Tell the parent which stage starts, with the findings so far (no-op inline)."""
    if THIS.channel is not None:
        _send({"stage": name, "result": result.to_dict()})


def choose(isolation: str | None, device: str) -> tuple[str, str | None]:
    """``(mode, why)``: ``process`` where the OS can fork and CUDA is not yet initialised."""
    if isolation == "inline":
        return "inline", None
    if not hasattr(os, "fork"):
        return "inline", "this OS cannot fork"

    if torch.cuda.is_initialized() or (device.startswith("cuda") and isolation is None):
        # A forked child cannot use its parent's CUDA context.
        return "inline", "CUDA is initialised in this process, and a forked child cannot use it"
    return "process", None


def fork(body: Callable[[], object], *, channel: int | None = None) -> int:
    """Fork a child of this process that runs ``body()`` and exits, 0 if it returned, 1 if it raised;
    its pid. Every child of the plugin is forked here: a check's (``Child``) and the shared capture's.

    The child leads its own process group, so a kill reaches what it started (compilers, workers);
    on Linux the kernel kills it if this process dies first; it closes the pipes of its siblings and
    reports on ``channel`` (``Process.forked``).

    Forking with threads: this process has threads (torch's, onnxruntime's, pytest's), and a forked
    child has only the thread that forked: a lock another thread held stays locked there. Python
    3.12+ warns of it with a DeprecationWarning, silenced below (it must not fail ``-W error``),
    since a child relies on no other thread: it runs one intra-op thread (GNU OpenMP's pool does not
    survive fork; ``body`` sets ``torch.set_num_threads(1)``), never collects what it inherited
    (freeing an onnxruntime session there can hang on threads fork did not copy), and leaves by
    ``os._exit``, without the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: never returns
        code = 1
        try:
            gc.freeze()
            THIS.forked(channel)
            os.setpgid(0, 0)
            _die_with_parent(parent)
            body()
            code = 0
        finally:
            os._exit(code)
    try:  # also here, so a kill right after fork reaches the child's group
        os.setpgid(pid, pid)
    except OSError:  # already done, or already exited
        pass
    return pid


@dataclass(frozen=True)
class Ending:
    """How a child ended: its ``os.waitpid`` status, or None where it ran past its time limit and was killed."""

    status: int | None

    @property
    def timed_out(self) -> bool:
        return self.status is None

    @property
    def finished(self) -> bool:
        """It returned: exit code 0."""
        return self.status == 0

    @property
    def killed_by(self) -> int | None:
        """The signal that killed it, if one did (not the kill at its time limit)."""
        return os.WTERMSIG(self.status) if self.status is not None and os.WIFSIGNALED(self.status) else None

    def __str__(self) -> str:
        if self.status is None:
            return "timed out"
        if self.killed_by is not None:
            return f"killed by signal {signal.Signals(self.killed_by).name}"
        return "finished" if self.finished else f"exited with code {os.WEXITSTATUS(self.status)}"


def run_in_child(body: Callable[[], object], timeout: float) -> Ending:
    """Run ``body()`` in a forked child (``fork``) and wait for it to end, reading the open checks'
    pipes meanwhile (``pump``); past ``timeout`` seconds, or if the wait is interrupted (Ctrl-C, an
    outer time limit), its process group is killed. Its result goes where ``body`` writes it."""
    pid = fork(body)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return Ending(status)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pump(min(0.02, remaining))
    except BaseException:
        _kill(pid)
        raise
    _kill(pid)
    return Ending(None)


class Child:
    """One check running in a forked child; ``wait()`` gives its ``Result``.

    [Held] With ``held=True`` it is forked now, to inherit the current process state, but waits
    until ``release()``."""

    def __init__(
        self,
        body: Callable[[Result], None],
        result: Result,
        timeout: float,
        scratch: Path,
        header: str,
        *,
        held: bool = False,
        spent: float = 0.0,
    ) -> None:
        """``spent``: seconds spent before the fork, counted against the time limit."""
        self.result, self.timeout, self.scratch, self.header = result, timeout, scratch, header
        self.spent = spent
        tmp = scratch / "tmp"
        tmp.mkdir(exist_ok=True)
        read_end, write_end = os.pipe()
        gate_read, gate_write = os.pipe() if held else (None, None)

        def in_child() -> None:
            os.close(read_end)
            if gate_write is not None:
                os.close(gate_write)
            cuda_closed_in_forked_child()
            _child(body, result, tmp, gate=gate_read)

        pid = fork(in_child, channel=write_end)
        os.close(write_end)
        if gate_read is not None and gate_write is not None:
            os.close(gate_read)
            THIS.gates.add(gate_write)  # so later children close it (Process.forked)
        #: [Held] the write end of the pipe the child waits on; None once it runs
        self.gate: int | None = gate_write
        self.pid, self.fd = pid, read_end
        self.started = time.monotonic()
        self.current, self.partial, self.done, self.raised = "start", None, None, None
        self.closed = False
        self.ended: float | None = None
        self._buffer = b""
        self._result: Result | None = None
        THIS.children[read_end] = self

    def release(self) -> None:
        """[Held] Let a held child run its check; its time limit counts from now."""
        if self.gate is None:
            return
        try:
            os.write(self.gate, b"1")
        except OSError:  # it died while held; wait() will see its closed pipe
            pass
        self._close_gate()
        self.started = time.monotonic()

    def _close_gate(self) -> None:
        if self.gate is not None:
            THIS.gates.discard(self.gate)
            os.close(self.gate)
            self.gate = None

    @property
    def finished(self) -> bool:
        return self.closed or self.done is not None or self.raised is not None

    @property
    def deadline(self) -> float:
        """When its time limit runs out (``time.monotonic``)."""
        return self.started + self.timeout - self.spent

    def wait(self) -> Result:
        """Its result: finished, timed out or crashed; raises what the pipeline raised."""
        if self._result is not None:
            return self._result
        self.release()
        deadline = self.deadline
        timed_out = False
        try:
            while not self.finished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                _pump(remaining)
        except BaseException as exc:  # KeyboardInterrupt, an outer time limit: kill the child too
            self._close()
            _kill(self.pid)
            found = Result.from_dict(self.partial) if self.partial is not None else self.result
            _attach_row(exc, found, self.current, self.started, self.header)
            raise
        self._close()
        if timed_out:
            _kill(self.pid)
            ending = Ending(None)
        else:
            ending = Ending(os.waitpid(self.pid, 0)[1])
        elapsed = time.monotonic() - self.started + self.spent
        if self.raised is not None:
            _reraise(self.raised)
        if self.done is not None:
            self._result = Result.from_dict(self.done)
            return self._result
        found = Result.from_dict(self.partial) if self.partial is not None else self.result
        if timed_out:
            self._result = _timed_out(found, self.current, self.timeout, elapsed, self.header)
        else:
            self._result = _crashed(found, self.current, ending, self.header, self.scratch / "fatal.txt")
        return self._result

    def cancel(self) -> None:
        """Kill it without waiting for its result."""
        if self._result is None and not self.closed:
            self._close()
            _kill(self.pid)
        self._close_gate()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ended = self.ended or time.monotonic()
            THIS.children.pop(self.fd, None)
            os.close(self.fd)

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            self._close()
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip() or self.done is not None or self.raised is not None:
                continue
            message = json.loads(line)
            if "stage" in message:
                self.current, self.partial = message["stage"], message["result"]
            elif "done" in message:
                self.done, self.ended = message["done"], time.monotonic()
            elif "raised" in message:
                self.raised, self.ended = message, time.monotonic()


def wait_any(children: list[Child]) -> list[Child]:
    """Read messages until a child finishes (returns ``[]``) or some pass their time limit."""
    while not any(child.finished for child in children):
        now = time.monotonic()
        overdue = [child for child in children if child.deadline <= now]
        if overdue:
            return overdue
        _pump(min(child.deadline for child in children) - now)
    return []


def pump(timeout: float) -> None:
    """Read the open children's messages for up to ``timeout`` seconds."""
    if THIS.children:
        _pump(timeout)
    else:
        time.sleep(timeout)


def _pump(timeout: float) -> None:
    """Read what any open child has written."""
    # Read every open child, not only the awaited one, so none blocks on a full pipe.
    if not THIS.children:
        return
    ready, _, _ = select.select(list(THIS.children), [], [], timeout)
    ended = False
    for fd in ready:
        child = THIS.children.get(fd)
        if child is not None:
            running = not child.finished
            child._feed(os.read(fd, 1 << 16))
            ended = ended or (running and child.finished)
    if ended and THIS.on_free is not None:
        THIS.on_free()


def _child(body: Callable[[Result], None], result: Result, tmp: Path, *, gate: int | None = None) -> None:
    """A check's child (``fork`` made it its group's leader): it reports on ``THIS.channel``."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

        # disable() first, or an already enabled faulthandler (pytest's) keeps its old handlers.
        faulthandler.disable()
        faulthandler.enable(open(tmp.parent / "fatal.txt", "w"), all_threads=False)  # noqa: SIM115 - lives until _exit
        torch.set_num_threads(1)  # OpenMP's thread pool does not survive fork
        tempfile.tempdir = str(tmp)
        os.environ["TMPDIR"] = str(tmp)
        if gate is not None:  # [Held] wait for the parent; an empty read means cancelled
            go = os.read(gate, 1)
            os.close(gate)
            if not go:
                os._exit(0)
        stage(result, "eager")
        body(result)
        _send({"done": result.to_dict()})
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        code = 1
        try:
            blob = base64.b64encode(pickle.dumps(exc)).decode()
        except Exception:  # noqa: BLE001 - an unpicklable exception still reports its text
            blob = None
        try:
            _send({"raised": blob, "type": type(exc).__name__, "text": "".join(traceback.format_exception(exc))})
        except BaseException:  # noqa: BLE001 - the pipe to the parent is gone
            pass
    finally:
        os._exit(code)


def _send(message: dict[str, Any]) -> None:
    data = (json.dumps(message, default=str) + "\n").encode()
    channel = THIS.channel
    assert channel is not None
    view = memoryview(data)
    while view:
        view = view[os.write(channel, view) :]


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this child if its parent dies first."""
    if not sys.platform.startswith("linux"):
        return

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


#: The attribute an exception carries a check's row on, for the plugin to report. Set on
#: [Interrupted] an exception that interrupted the wait for a child, and on one a check raised.
CARRIED_ROW = "torchexport_result"


def _attach_row(exc: BaseException, found: Result, current: str, started: float, header: str) -> None:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return  # the session ends; no report is written
    elapsed = time.monotonic() - started
    what = exception_words(exc)
    why = f"{what}; the check's process was killed and the findings so far are kept"
    settle(
        found,
        Outcome(
            "timeout",
            f"{found.backend} was interrupted from outside the check after {elapsed:.1f} s during {current} {header}\n"
            f"{why}\n"
            "An outer time limit (pytest-timeout's --timeout or its marker) shorter than the check's own stops it "
            "before it can report which stage hangs: give the test longer than --torchexport-timeout, or set "
            "--torchexport-timeout (or the marker's timeout=) below the outer limit",
            why,
            "timeout",
        ),
    )
    found.findings.append(Finding("timeout", f"interrupted after {elapsed:.1f} s during {current} ({what})"))
    try:
        setattr(exc, CARRIED_ROW, found)
    except AttributeError:  # an exception type with __slots__
        pass


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
            break
        except (ProcessLookupError, PermissionError):
            continue
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _reraise(message: dict[str, Any]) -> None:
    __tracebackhide__ = True
    exc: BaseException | None = None
    if message.get("raised"):
        try:
            exc = pickle.loads(base64.b64decode(message["raised"]))
        except Exception:  # noqa: BLE001 - not rebuildable here; its text is used below
            exc = None
    if exc is None:
        exc = RuntimeError(f"the check's child process raised {message.get('type')}:\n{message.get('text', '')}")
    elif message.get("text") and hasattr(exc, "add_note"):  # Python 3.11+
        # The rebuilt exception lacks the child's frames.
        exc.add_note(f"Raised in the check's child process:\n{message['text'].rstrip()}")
    raise exc


def _timed_out(result: Result, current: str, timeout: float, elapsed: float, header: str) -> Result:
    why = (
        f"stopped after {elapsed:.1f} s during {current} (export, load and search share the limit); "
        "the findings so far are kept"
    )
    settle(
        result,
        Outcome(
            "timeout",
            f"{result.backend} ran past the time limit of {timeout:g} s during {current} {header}\n{why}\n"
            f"Give it longer with timeout=SECONDS in the marker or --torchexport-timeout, or mark it known with "
            f'xfail={{"{result.backend}": "reason"}}',
            why,
            "timeout",
        ),
    )
    result.findings.append(Finding("timeout", f"stopped after {elapsed:.1f} s (limit {timeout:g} s) during {current}"))
    return result


def _crashed(result: Result, current: str, ending: Ending, header: str, fatal: Path) -> Result:
    short = str(ending)
    how = f"was {short} ({signal.strsignal(ending.killed_by)})" if ending.killed_by is not None else short
    why = (
        f"{short} during {current}: something it called (an exporter, a runtime, a native "
        "extension) ended the process; the session went on"
    )
    message = (
        f"the {result.backend} check's process {how} during {current} {header}\n{why}\n"
        "Reproduce it in-process with --torchexport-isolation=inline (it will take that session down)"
    )
    stack = _fatal_stack(fatal)
    if stack:
        message += "\nPython stack at the crash (innermost first):\n" + stack
    # The status a crash in each stage gets (docs/statuses.md).
    settle(result, Outcome(STAGE_STATUS.get(current, "run_error"), message, why, "crash"))
    return result


def _fatal_stack(path: Path, frames: int = 8) -> str:
    """The innermost frames faulthandler wrote."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept = [line for line in lines if line.strip().startswith("File ")][:frames]
    return "\n".join(kept)


def parallel_checks() -> int:
    """[Side By Side] How many checks run at once: ``TORCHEXPORT_JOBS``, else this process's
    cores shared among xdist workers, at most one per 2 GiB of available memory."""
    given = environment("TORCHEXPORT_JOBS").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    jobs = max(1, cores // workers)
    available = available_memory()
    if available is not None:
        jobs = min(jobs, max(1, int(available // (2 * 2**30))))
    return jobs


def available_memory() -> int | None:
    """MemAvailable in bytes, or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
