"""The C++ runner: built once per torch installation from the installed wheel, then run per check.

``cpp_runner.cpp`` loads a ``.pt`` or ``.pt2`` file without Python and runs it on a plain tensor
file (format in its header). It is compiled against the wheel's headers and cached; concurrent
checks share one build through a file lock. See docs/howto-verify.md.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .._compat import torch_cxx11_abi
from ..options import environment
from . import loader
from .runner import THIS

SOURCE = Path(__file__).with_name("cpp_runner.cpp")
MAGIC = b"TXCPP001"
#: How long a build may take; generous because a loaded machine builds slowly.
BUILD_TIMEOUT_S = 600.0
#: How long one run (load and one call) may take.
RUN_TIMEOUT_S = 300.0

#: The runner's exit statuses, by stage.
STAGES = {2: "load", 3: "run", 4: "inputs"}

# torch's c10::ScalarType codes (c10/core/ScalarType.h), stable since torch 1.x.
_SCALAR_TYPES = {
    "uint8": 0,
    "int8": 1,
    "int16": 2,
    "int32": 3,
    "int64": 4,
    "float16": 5,
    "float32": 6,
    "float64": 7,
    "complex64": 9,
    "complex128": 10,
    "bool": 11,
    "bfloat16": 15,
}
_DTYPES = {code: name for name, code in _SCALAR_TYPES.items()}


class UnsupportedArgument(Exception):
    """A value the tensor file cannot carry: the stage does not apply."""


# -- the tensor file --


def write_values(path: Path, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
    """Positional values, then keyword ones by name: tensors, ints, floats, bools, None."""
    entries = [("", v) for v in args] + [(k, v) for k, v in (kwargs or {}).items()]
    with open(path, "wb") as out:
        out.write(MAGIC + struct.pack("<I", len(entries)))
        for name, value in entries:
            encoded = name.encode()
            head = struct.pack("<I", len(encoded)) + encoded
            if isinstance(value, torch.Tensor):
                dtype = str(value.dtype).removeprefix("torch.")
                if dtype not in _SCALAR_TYPES:
                    raise UnsupportedArgument(f"a {value.dtype} tensor")
                tensor = value.detach().to("cpu").contiguous()
                data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
                out.write(b"\0" + head + struct.pack("<iI", _SCALAR_TYPES[dtype], tensor.dim()))
                out.write(struct.pack(f"<{tensor.dim()}q", *tensor.shape) + struct.pack("<Q", len(data)) + data)
            elif isinstance(value, bool):
                out.write(b"\3" + head + struct.pack("<B", value))
            elif isinstance(value, int):
                out.write(b"\1" + head + struct.pack("<q", value))
            elif isinstance(value, float):
                out.write(b"\2" + head + struct.pack("<d", value))
            elif value is None:
                out.write(b"\4" + head)
            else:
                raise UnsupportedArgument(f"a {type(value).__name__} argument{f' ({name})' if name else ''}")


def read_values(path: Path) -> list[Any]:
    """The values of a tensor file, in order."""
    data = Path(path).read_bytes()
    if data[:8] != MAGIC:
        raise ValueError(f"{path} is not a {MAGIC.decode()} tensor file")
    (count,), at = struct.unpack_from("<I", data, 8), 12
    values: list[Any] = []
    for _ in range(count):
        kind = data[at]
        (length,) = struct.unpack_from("<I", data, at + 1)
        at += 5 + length
        if kind == 0:
            code, ndim = struct.unpack_from("<iI", data, at)
            shape = struct.unpack_from(f"<{ndim}q", data, at + 8)
            (nbytes,) = struct.unpack_from("<Q", data, at + 8 + 8 * ndim)
            at += 16 + 8 * ndim
            raw = bytearray(data[at : at + nbytes])  # a copy: the tensor owns its memory
            at += nbytes
            dtype = getattr(torch, _DTYPES[code])
            flat = torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            values.append(flat.reshape(shape))
        elif kind == 1:
            values.append(struct.unpack_from("<q", data, at)[0])
            at += 8
        elif kind == 2:
            values.append(struct.unpack_from("<d", data, at)[0])
            at += 8
        elif kind == 3:
            values.append(bool(data[at]))
            at += 1
        else:
            values.append(None)
    return values


# -- the toolchain and the build --


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """A compiler and the installed torch's headers and libraries."""

    compiler: str
    torch_dir: Path
    version: str
    cxx11_abi: bool

    @property
    def key(self) -> str:
        """One runner per torch installation, compiler and runner source."""
        digest = hashlib.sha256()
        for part in (self.version, str(self.torch_dir), self.compiler, str(self.cxx11_abi), SOURCE.read_text()):
            digest.update(part.encode() + b"\0")
        return f"torch-{self.version.replace('+', '-')}-{digest.hexdigest()[:12]}"


def find_compiler() -> str | None:
    """``$CXX`` if set, else ``c++``, ``g++`` or ``clang++`` on ``PATH``."""
    given = environment("CXX") or None
    if given is not None:
        return shutil.which(given)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def toolchain() -> Toolchain | str:
    """The toolchain, or why there is none here."""
    torch_dir = Path(torch.__file__).resolve().parent
    for needed in ("include/torch/script.h", "lib", "share/cmake/Torch"):
        if not (torch_dir / needed).exists():
            return f"this torch installation has no C++ headers and libraries ({torch_dir / needed} is missing)"
    compiler = find_compiler()
    if compiler is None:
        given = environment("CXX") or None
        where = f"CXX={given} is not an executable" if given is not None else "no c++, g++ or clang++ on PATH"
        return f"no C++ compiler ({where})"
    return Toolchain(compiler, torch_dir, torch.__version__, torch_cxx11_abi())


def cache_root() -> Path:
    given = environment("TORCHEXPORT_CPP_CACHE")
    if given:
        return Path(given)
    base = environment("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-torchexport" / "cpp"


@dataclasses.dataclass
class Runner:
    """A built runner and what its build cost."""

    path: Path
    build_s: float
    waited_s: float  # 0 when already built


class BuildFailed(Exception):
    """The compiler refused the runner; the stage is skipped."""


def compile_command(chain: Toolchain, output: Path) -> list[str]:
    include, lib = chain.torch_dir / "include", chain.torch_dir / "lib"
    return [
        chain.compiler,
        "-std=c++20",
        "-O1",
        "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(chain.cxx11_abi)}",
        f"-I{include}",
        f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}",
        str(SOURCE),
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",
        "-Wl,--no-as-needed",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        "-Wl,--as-needed",
        "-o",
        str(output),
    ]


def ensure(chain: Toolchain, *, timeout: float = BUILD_TIMEOUT_S) -> Runner:
    """The runner for ``chain``, built here unless already built."""
    home = cache_root() / chain.key
    home.mkdir(parents=True, exist_ok=True)
    binary, info = home / "runner", home / "build.json"
    t0 = time.monotonic()
    if binary.exists() and info.exists():
        return Runner(binary, json.loads(info.read_text())["build_s"], 0.0)
    # lockf, not flock: a POSIX lock belongs to the process, so a child forked while its parent
    # builds waits instead of sharing the lock through an inherited descriptor.
    with open(home / "lock", "w") as lock:
        while True:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() - t0 > timeout:
                    raise BuildFailed(
                        f"another process has held the runner's build lock for {timeout:g} s ({home})"
                    ) from None
                time.sleep(0.2)
        if binary.exists() and info.exists():  # built while we waited
            return Runner(binary, json.loads(info.read_text())["build_s"], time.monotonic() - t0)
        if (home / "failed.txt").exists():  # do not retry a failed build on every check
            raise BuildFailed((home / "failed.txt").read_text())
        partial = home / f"runner.{os.getpid()}"
        started = time.monotonic()
        try:
            done = subprocess.run(compile_command(chain, partial), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"the C++ runner's build ran past {timeout:g} s") from None
        build_s = time.monotonic() - started
        if done.returncode != 0:
            words = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in words if "error" in line] or words[-3:]
            message = f"the C++ runner did not compile with {chain.compiler}: " + " | ".join(errors[:3])[:600]
            (home / "failed.txt").write_text(message)
            raise BuildFailed(message)
        partial.replace(binary)
        info.write_text(json.dumps({"build_s": round(build_s, 2), "torch": chain.version, "compiler": chain.compiler}))
        return Runner(binary, build_s, time.monotonic() - t0)


def start_build() -> None:
    """Start building the runner in a detached process, unless already built or this process has
    started one already: each item's setup and each check ask, and every extra builder would import
    torch only to wait on the build's lock."""
    if THIS.cpp_build_started:
        return
    chain = toolchain()
    if isinstance(chain, str) or (cache_root() / chain.key / "build.json").exists():
        return
    THIS.cpp_build_started = True
    # Detached through a shell that exits at once, so nothing here must reap it.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" -m pytest_torchexport.isolation.cpp </dev/null >/dev/null 2>&1 &', sys.executable],
        env=env,
        check=False,
    )


# -- what a failed load reached for --

_REACHED = (
    (re.compile(r"error while loading shared libraries: ([^\s:]+)"), "the library {0}"),
    (re.compile(r"([^\s:]+\.so[.\d]*): cannot open shared object file"), "the library {0}"),
)


def reached_for(text: str) -> str | None:
    """What the C++ load could not resolve (a library, an op, a class), or None."""
    return loader.reached_for(text, first=_REACHED)


# -- one run --


@dataclasses.dataclass
class Ran:
    """One run's outputs, or the stage it failed in and the error."""

    outputs: list[Any] | None
    stage: str | None = None
    error: str = ""
    seconds: float = 0.0
    served: bool = False  # by the session's served runner, not a process of its own


class Running:
    """The runner on one artifact, in a process of its own, running beside the check's search."""

    def __init__(
        self, runner: Runner, kind: str, model: Path, inputs: Path, *, device: str = "cpu", threads: int = 1
    ) -> None:
        self.outputs, self.errors = _files(inputs)
        self.t0 = time.perf_counter()
        with open(self.errors, "wb") as err:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [str(runner.path), kind, str(model), str(inputs), str(self.outputs), device, str(threads)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.ended: float | None = None  # when the runner exited, so its time excludes the check's
        self.waited_s = 0.0
        threading.Thread(target=self._reap, args=(self.proc,), name="torchexport-cpp", daemon=True).start()

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.ended = time.perf_counter()

    def result(self, timeout: float = RUN_TIMEOUT_S) -> Ran:
        """Wait up to ``timeout`` seconds and read what it wrote."""
        proc, self.proc = self.proc, None
        assert proc is not None, "read once"
        waited = time.perf_counter()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return Ran(None, "run", _timed_out(timeout), time.perf_counter() - self.t0)
        self.waited_s = time.perf_counter() - waited
        return _ran(code, self.outputs, self.errors, (self.ended or time.perf_counter()) - self.t0)

    def stop(self) -> None:
        """Kill the runner if the check ended before reading its answer."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __del__(self) -> None:
        self.stop()


class Served:
    """The runner on one artifact, served by the session's loader process (``loader.CppRelay``):
    one libtorch start for the session instead of one per artifact. Where the loader dies or does
    not answer, the artifact runs in a process of its own (``Running``), so the verdict is the same."""

    def __init__(
        self, handle: loader.Loader, runner: Runner, kind: str, model: Path, inputs: Path, *, device: str, threads: int
    ) -> None:
        self.outputs, self.errors = _files(inputs)
        self.alone = (runner, kind, model, inputs, device, threads)
        fields = [str(runner.path), kind, str(model), str(inputs), str(self.outputs), str(self.errors), device]
        self.t0 = time.perf_counter()
        self.ended: float | None = None
        self.waited_s = 0.0
        self._answer: dict[str, Any] | None = None
        # A daemon, so a check that ends without reading the answer does not wait for it.
        self._thread = threading.Thread(
            target=self._ask, args=(handle, [*fields, str(threads)]), name="torchexport-cpp", daemon=True
        )
        self._thread.start()

    def _ask(self, handle: loader.Loader, fields: list[str]) -> None:
        try:
            self._answer = handle.request({"cpp": fields, "timeout": RUN_TIMEOUT_S}, timeout=RUN_TIMEOUT_S + 30)
        except Exception:  # noqa: BLE001 - the loader died or did not answer: result() runs it alone
            pass
        finally:
            self.ended = time.perf_counter()

    def result(self, timeout: float = RUN_TIMEOUT_S) -> Ran:
        """Wait for the served run's answer and read what it wrote."""
        waited = time.perf_counter()
        self._thread.join(timeout + 60)
        self.waited_s = time.perf_counter() - waited
        answer = self._answer
        if answer is None:
            runner, kind, model, inputs, device, threads = self.alone
            alone = Running(runner, kind, model, inputs, device=device, threads=threads)
            ran = alone.result(timeout)
            self.waited_s += alone.waited_s
            return ran
        seconds = (self.ended or time.perf_counter()) - self.t0
        if answer.get("timeout"):
            return Ran(None, "run", _timed_out(RUN_TIMEOUT_S), seconds, served=True)
        ran = _ran(answer["code"], self.outputs, self.errors, seconds, log=answer.get("log", ""))
        ran.served = True
        return ran

    def stop(self) -> None:
        """Nothing to kill: the served run ends on its own and its answer goes unread."""


def start(
    runner: Runner, kind: str, model: Path, inputs: Path, *, device: str = "cpu", threads: int = 1
) -> Served | Running:
    """The run of ``model`` beside the search: served by the session's loader where the parent
    started one (``loader.start``), else in a process of its own. Either has ``result()``."""
    handle = loader.current()
    plain = not any(c in str(p) for p in (model, inputs) for c in "\t\n")  # one request is one tab-separated line
    if handle is not None and handle.proc is not None and plain:
        return Served(handle, runner, kind, model, inputs, device=device, threads=threads)
    return Running(runner, kind, model, inputs, device=device, threads=threads)


def run(runner: Runner, kind: str, model: Path, inputs: Path, *, device: str = "cpu", threads: int = 1) -> Ran:
    """Run the artifact at ``model`` (``jit`` or ``aoti``) in a process of its own and wait."""
    return Running(runner, kind, model, inputs, device=device, threads=threads).result()


def _files(inputs: Path) -> tuple[Path, Path]:
    """Where a run on ``inputs`` writes its outputs and its error's text."""
    return inputs.with_name(inputs.stem + "-outputs.bin"), inputs.with_name(inputs.stem + "-errors.txt")


def _timed_out(timeout: float) -> str:
    return f"the C++ runner did not finish within {timeout:g} s"


def _ran(code: int, outputs: Path, errors: Path, seconds: float, *, log: str = "") -> Ran:
    """A run's ``Ran`` from its exit status (negative: the signal that killed it) and its files."""
    if code == 0:
        return Ran(read_values(outputs), seconds=seconds)
    try:
        error = errors.read_text(errors="replace").strip()
    except OSError:  # a served runner killed before it opened the file
        error = ""
    error = error or log.strip()
    if code < 0:
        error = f"the C++ runner died of {signal.Signals(-code).name}: {error[-600:]}"
    stage = STAGES.get(code, "load")
    return Ran(None, stage, error.removeprefix(f"{stage}: "), seconds)


if __name__ == "__main__":  # start_build's detached build
    found = toolchain()
    if not isinstance(found, str):
        try:
            ensure(found)
        except BuildFailed:
            sys.exit(1)
