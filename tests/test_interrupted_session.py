"""Ctrl-C in the middle of a session: the rows so far are printed and no temporary folder is left.

A real session in a subprocess (its own TMPDIR), interrupted with SIGINT once its first check
has passed, while later checks are exporting, held ahead or being cleaned up.
"""

import glob
import os
import signal
import subprocess
import sys
import time

TEST = """
import time

import pytest
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.a(x))


@pytest.mark.torchexport(backends=["trace", "onnx", "export"], examples=30)
def test_a():
    Net().eval()(torch.randn(4, 16))


@pytest.mark.torchexport(backends=["trace", "onnx", "export"], examples=30)
def test_b():
    Net().eval()(torch.randn(4, 16))


def test_c():
    # Keeps the session alive until the interrupt: on a loaded machine the reader of this output
    # can fall behind a session that has already ended, and a signal to an ended process is lost.
    # In short sleeps: the kernel may hand SIGINT to one of torch's threads, and then Python
    # raises KeyboardInterrupt only when the main thread next runs, which one long sleep delays
    # by up to 120 s.
    for _ in range(1200):
        time.sleep(0.1)
"""


# Where the inner session's Ctrl-C landed, written down before it is raised as Python's own handler
# raises it: a session that goes on after Ctrl-C then shows what swallowed the interrupt.
LANDED = """
import os, signal, traceback


def _landed(signum, frame):
    with open(os.environ["LANDED"], "a") as f:
        f.write("".join(traceback.format_stack(frame)) + "\\n")
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _landed)
"""


def _signal_state(pid: int) -> str:
    """How the process and each of its threads take SIGINT (/proc), for a session that ignored it."""
    bit = 1 << (signal.SIGINT - 1)
    lines = []
    for status in [f"/proc/{pid}/status", *sorted(glob.glob(f"/proc/{pid}/task/*/status"))]:
        try:
            with open(status) as f:
                fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:
            continue
        masks = {k: bool(int(fields[k], 16) & bit) for k in ("SigBlk", "SigIgn", "SigCgt") if k in fields}
        lines.append(f"{status}: {fields.get('Name', '?').strip()} SIGINT {masks}")
    return "\n".join(lines)


def test_ctrl_c_prints_the_rows_so_far_and_leaves_no_temporary_folder(tmp_path):
    (tmp_path / "test_i.py").write_text(TEST)
    (tmp_path / "conftest.py").write_text(LANDED)
    landed = tmp_path / "landed.txt"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "LANDED": str(landed)}
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "test_i.py"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    # test_b's first item has passed: its other checks were started ahead, forked and held.
    while "test_i.py ...." not in seen and time.monotonic() < deadline:
        seen += proc.stdout.read(1)
    state = _signal_state(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hung: what it printed, then what it left
        where = landed.read_text() if landed.exists() else "never: the handler did not run\n"
        # pytest's faulthandler prints every thread's stack on SIGABRT: where the session waits.
        proc.send_signal(signal.SIGABRT)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        left = sorted(p.name for p in tmp.iterdir())
        raise AssertionError(
            f"the session did not end within 120 s of Ctrl-C; left {left}\nSIGINT at sending: {state}\n"
            f"it landed at: {where}\n{seen}{rest}"
        ) from None
    out = seen + out
    assert "KeyboardInterrupt" in out, out
    assert "torchexport summary" in out and "test_a  Net     trace    pass" in out, out
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("torchexport"))
    assert not left, (left, out)


SCRIPT = """
import os, sys
from pytest_torchexport.isolation.runner import scratch_folder

folder = scratch_folder("torchexport-trace-")
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a child that runs atexit: the parent's folder is not its to remove
os.waitpid(pid, 0)
print(folder, os.path.isdir(folder), flush=True)
raise KeyboardInterrupt  # interrupted before the check that made it was waited for
"""


def test_a_folder_an_interrupt_left_is_removed_by_its_own_process_only(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    folder, alive = done.stdout.split()
    assert alive == "True", done.stderr  # still there after the child exited
    assert "KeyboardInterrupt" in done.stderr
    assert not os.path.exists(folder) and not list(tmp_path.iterdir())


def test_a_deep_temporary_directory_still_gets_a_loader_socket(tmp_path, monkeypatch):
    """A Unix socket's path is limited to about 100 bytes: a deep TMPDIR (pytest's own tmp_path under
    xdist, a macOS user's) gave "OSError: AF_UNIX path too long" as the plugin's own error."""
    import tempfile

    from pytest_torchexport.isolation import loader

    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert loader._short_temp() == "/tmp"
    handle = loader.Loader()
    try:
        handle.ensure()
        assert len(handle.address) <= 100
        assert handle.request({"ping": True}, timeout=60) is not None
    finally:
        handle.close()
