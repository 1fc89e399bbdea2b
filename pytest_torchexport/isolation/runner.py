"""Where a check runs: in the test's process, or in a forked child with a time limit.

``process`` isolation forks one child per (backend, device) check. The child inherits the
module by fork (nothing is pickled, test-local classes work), runs the pipeline and sends
the ``Result`` back as JSON over a pipe, one line per message:

    {"stage": "export", "result": {...}}     each time a stage starts, with what it found so far
    {"done": {...}}                          the finished result
    {"raised": "<base64 pickle>", ...}       the pipeline raised (a usage error, an engine bug)

So when the child runs past its time limit or dies (a segfault in an exporter, an
``os._exit`` in a runtime), the parent still knows the stage it was in and its findings,
and the session goes on. The child's temporary files live under the check's scratch
directory, which the parent removes whatever the child did.

Why the child runs with one intra-op thread: torch's CPU kernels use GNU OpenMP, whose
thread pool does not survive ``fork``; a child that opens a parallel region after the
parent used the pool waits forever on threads that do not exist (measured: a 512x512
matmul in the child hangs; so does one that asks for two threads). One thread in the child
is what DataLoader workers do too.

[Side By Side] So that a check's one thread does not leave the other cores idle, several
checks run at once, each in its own child (``Child``: started at once, waited for later):
the backends of one ``check()`` call, and the plugin's next items of one test. How many:
``parallel_checks()``, the process's share of the cores (``TORCHEXPORT_JOBS`` overrides): how many
checks fit here is a question about the machine (its cores, its memory, pytest-xdist's workers),
asked by the scheduler and by the size budget, and answered the same whether the checks then run
in forked children or inline.

What the parent pays before a fork so that its children need not (the exporters' and
hypothesis's first use) is ``warmup.py``'s; the children open and the child's channel are
facts of the process (``THIS``), since a new child must close every sibling's pipe,
whoever started it.

[This Process] What belongs to the operating-system process, not to a session or a check.

Session state is never a module global (``glue/state.py``): two pytest sessions in one
process (pytester) must not share it, so the session owns it and hands it down. A few facts
are about the process itself and outlive every session in it:

- what its interpreter has paid of the first uses a check's child would pay (``Warmup``):
  what is imported stays imported whichever session imported it;
- the pipes of the children it forked and has not yet reaped (``Child``), which a new
  child must close and a wait must read, whoever started them (and the pipes held children
  wait on, which only this process may write);
- in a forked child, the write end of the pipe it reports its stages on (``stage``,
  called from any stage without a handle: the child is the process);
- the standalone loader it spawned (``loader.start``), which its forked children reach too.

A forked child inherits them by fork, which is what each needs (``Process.forked``): the
record of what its parent paid, its own channel, no sibling's pipe, the parent's loader.

``THIS`` is the package's one module-level mutable object, documented as the exception to
"no module globals outside constants" (``tests/test_module_state.py`` holds the rule).
"""

from __future__ import annotations

import base64
import gc
import json
import os
import pickle
import select
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._compat import cuda_closed_in_forked_child
from ..options import environment
from ..results.outcome import STAGE_STATUS, Outcome, exception_words, settle
from ..results.report import Finding, Result
from .warmup import Warmup

# -- [This Process]: what belongs to the OS process, not to a session or a check ------------------


@dataclass
class Process:
    """The facts of one OS process (module doc); a forked child's copy is its own."""

    warmup: Warmup = field(default_factory=Warmup)
    #: read end -> ``Child`` started here and not yet waited for
    children: dict[int, Any] = field(default_factory=dict)
    #: [Held] the write ends of the pipes held children wait on (``Child``)
    gates: set[int] = field(default_factory=set)
    #: in a forked check child: the write end of the pipe to its parent; None elsewhere
    channel: int | None = None
    #: the standalone loader (``loader.Loader``) this process, or the parent it was forked from, started
    loader: Any = None

    def forked(self, channel: int) -> None:
        """In a child just forked: its siblings' pipes are not its to hold open, and it reports
        on ``channel``. What the parent paid (``warmup``) and its loader stay: the child has them."""
        for fd in [*self.children, *self.gates]:
            os.close(fd)
        self.children.clear()
        self.gates.clear()
        self.channel = channel


#: [This Process] The one process-wide record (module doc); never rebound.
THIS = Process()


def stage(result: Result, name: str) -> None:
    """Tell the parent which stage starts, with what the check found so far (no-op inline)."""
    if THIS.channel is not None:
        _send({"stage": name, "result": result.to_dict()})


def choose(isolation: str | None, device: str) -> tuple[str, str | None]:
    """``(mode, why)``: ``process`` where the OS can fork and CUDA is not yet initialised."""
    if isolation == "inline":
        return "inline", None
    if not hasattr(os, "fork"):
        return "inline", "this OS cannot fork"
    import torch

    if torch.cuda.is_initialized() or (device.startswith("cuda") and isolation is None):
        # A forked child cannot use a CUDA context its parent created (CUDA is not fork-safe).
        return "inline", "CUDA is initialised in this process, and a forked child cannot use it"
    return "process", None


class Child:
    """One check running in a forked child: started at construction, its ``Result`` from ``wait()``.

    Its time limit counts from its start, whether or not anyone waits for it yet.

    [Held] ``held=True``: forked now, so that it inherits this process as it is now (the state
    the test's recorded call ran in: its fixtures, its default dtype, eager's shared prelude),
    and run later: the child waits on a pipe before its first stage until ``release()`` (or
    ``wait()``) lets it go, and its time limit counts from then. A held child holds no place
    of the scheduler's and costs what fork costs: its pages are the parent's until written."""

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
        """``spent``: seconds of the check already spent in this process before the fork (its share of
        the shared capture, stages/capture.py), counted against its time limit."""
        self.result, self.timeout, self.scratch, self.header = result, timeout, scratch, header
        self.spent = spent
        tmp = scratch / "tmp"
        tmp.mkdir(exist_ok=True)
        read_end, write_end = os.pipe()
        gate_read, gate_write = os.pipe() if held else (None, None)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() once the process has threads (torch's own, a
            # runtime's); the child runs only this check and exits. A -W error suite goes on.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            # The child never collects the garbage it inherited (a traceback holding an
            # onnxruntime session, say): freeing it there waited forever in the session's
            # pthread_cond_destroy on threads fork did not copy (seen under xdist, in
            # torch.export's own gc.collect() in the child). The parent frees it, where those
            # threads exist. (A gc.collect() before each fork would cost ~80 ms a check.)
            gc.freeze()
            os.close(read_end)
            if gate_write is not None:
                os.close(gate_write)
            cuda_closed_in_forked_child()  # a CPU check; the parent may have touched CUDA
            _child(body, result, write_end, tmp, parent, gate=gate_read)
        os.close(write_end)
        if gate_read is not None and gate_write is not None:  # made together
            os.close(gate_read)
            THIS.gates.add(gate_write)  # a later child closes it (Process.forked): the gate is this process's
        #: [Held] the write end of the pipe the child waits on before its first stage; None once it runs
        self.gate: int | None = gate_write
        try:  # the child does this too; here as well, so a kill right after fork reaches its group
            os.setpgid(pid, pid)
        except OSError:  # it already did (or already exited)
            pass
        self.pid, self.fd = pid, read_end
        self.started = time.monotonic()
        self.current, self.partial, self.done, self.raised = "start", None, None, None
        self.closed = False
        self.ended: float | None = None  # when its result (or its end) arrived
        self._buffer = b""
        self._result: Result | None = None
        THIS.children[read_end] = self

    def release(self) -> None:
        """[Held] Let a held child run its check; its time limit counts from now."""
        if self.gate is None:
            return
        try:
            os.write(self.gate, b"1")
        except OSError:  # it died while held (a kill from outside): its closed pipe says so when waited for
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
        """Its result: finished, timed out (killed) or crashed. Raises what the pipeline raised."""
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
        except BaseException as exc:  # KeyboardInterrupt, an outer time limit: take the child down with us
            self._close()
            _kill(self.pid)
            found = Result.from_dict(self.partial) if self.partial is not None else self.result
            _attach_row(exc, found, self.current, self.started, self.header)
            raise
        self._close()
        status = 0
        if timed_out:
            _kill(self.pid)
        else:
            _, status = os.waitpid(self.pid, 0)
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
            self._result = _crashed(found, self.current, status, self.header, self.scratch / "fatal.txt")
        return self._result

    def cancel(self) -> None:
        """Kill it unwaited (a session that ends before its item runs)."""
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
    """Read the children's messages until one of them has finished; returns those past their
    time limit instead (their ``wait()`` ends them), or ``[]``."""
    while not any(child.finished for child in children):
        now = time.monotonic()
        overdue = [child for child in children if child.deadline <= now]
        if overdue:
            return overdue
        _pump(min(child.deadline for child in children) - now)
    return []


def pump(timeout: float) -> None:
    """Read what the open children have written, for at most ``timeout`` seconds: while this process
    waits on something else (the shared capture's child), their stages stay current."""
    if THIS.children:
        _pump(timeout)
    else:
        time.sleep(timeout)


def _pump(timeout: float) -> None:
    """Read what any open child has written, waiting at most ``timeout`` seconds for some."""
    # Every open child's messages, not only the waited one's: a child side by side never
    # blocks on a full pipe while another is waited for.
    if not THIS.children:
        return
    ready, _, _ = select.select(list(THIS.children), [], [], timeout)
    for fd in ready:
        child = THIS.children.get(fd)
        if child is not None:
            child._feed(os.read(fd, 1 << 16))


def _child(
    body: Callable[[Result], None], result: Result, write_end: int, tmp: Path, parent: int, *, gate: int | None = None
) -> None:
    code = 0
    try:
        THIS.forked(write_end)  # [This Process] its siblings' pipes closed; it reports on write_end
        os.setpgid(0, 0)  # its own group, so a kill reaches the compilers and workers it started
        _die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        import faulthandler
        import tempfile

        import torch

        # The Python stack at a fatal signal goes to a file the parent reads (quoted in the
        # message), not to the terminal of a session that goes on.
        # disable() first: enable() on an already enabled faulthandler (pytest's) only changes its file and
        # leaves the signal handlers as they are, whatever replaced them since; enabled anew, it owns them.
        faulthandler.disable()
        faulthandler.enable(open(tmp.parent / "fatal.txt", "w"), all_threads=False)  # noqa: SIM115 - lives until _exit
        torch.set_num_threads(1)  # see the module docstring: OpenMP's pool does not survive fork
        tempfile.tempdir = str(tmp)
        os.environ["TMPDIR"] = str(tmp)
        if gate is not None:  # [Held] until the parent lets it go; nothing read: it was cancelled, or is gone
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
        except BaseException:  # noqa: BLE001 - the pipe to the parent is gone: nothing is left to tell it
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
    """Linux: the kernel kills this child when the process that forked it dies without
    killing it first (pytest-timeout's ``thread`` method ends pytest with ``os._exit``, CI
    cancels a job with SIGKILL). Elsewhere a best effort: the parent's own kill still works."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl: nobody is waiting for this check
        os._exit(1)


#: The attribute an exception carries a check's row on; the plugin puts that row on the test
#: report (glue/summary.py). Set on two kinds: [Interrupted] an exception that interrupted the
#: wait for a child (pytest-timeout's alarm, a signal handler that raises): the row as far as the
#: check got, its status ``timeout``; [Raised, Not Judged] an exception a check raised instead of
#: ending with a verdict (engine/pipeline.py): the row, failing, saying why. Either way the
#: exception still propagates.
CARRIED_ROW = "torchexport_result"


def _attach_row(exc: BaseException, found: Result, current: str, started: float, header: str) -> None:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return  # the session ends: no report is written for this item
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
    except AttributeError:  # an exception type with __slots__: the test fails without the row
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
        except Exception:  # noqa: BLE001 - a class that will not rebuild here: its text, traceback included, below
            exc = None
    if exc is None:
        exc = RuntimeError(f"the check's child process raised {message.get('type')}:\n{message.get('text', '')}")
    elif message.get("text") and hasattr(exc, "add_note"):  # Python 3.11+
        # Rebuilt here, it has only this process's frames: where in the check it was raised is the child's.
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


def _crashed(result: Result, current: str, status: int, header: str, fatal: Path) -> Result:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name
        how, short = f"was killed by signal {name} ({signal.strsignal(number)})", f"killed by signal {name}"
    else:
        how = short = f"exited with code {os.WEXITSTATUS(status)}"
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
    # What a crash in each stage means (docs/statuses.md); any other stage is ``run_error``.
    settle(result, Outcome(STAGE_STATUS.get(current, "run_error"), message, why, "crash"))
    return result


def _fatal_stack(path: Path, frames: int = 8) -> str:
    """The innermost frames faulthandler wrote when the child died by a signal."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept = [line for line in lines if line.strip().startswith("File ")][:frames]
    return "\n".join(kept)


# -- [Side By Side]: how many checks this process runs at once, and the memory it may count on -----


def parallel_checks() -> int:
    """[Side By Side] How many checks this process runs at once: its share of the cores.

    A child runs one intra-op thread (the module's docstring), so a check uses one core;
    several checks of one test (its backends) in children side by side use the cores the
    process is given. ``TORCHEXPORT_JOBS`` sets it; else the cores this process may use,
    divided among pytest-xdist's workers (so workers x checks <= cores), and at most one
    check per 2 GiB of available memory."""
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
    """MemAvailable (Linux), in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
