"""Eager forwards of one marked test, counted inside the model: one backend against three.

A marked test's checks are worth what they prove; what they cost on a real model is its
forwards. This script writes a small marked test whose model counts its own forward calls
(a forward hook writing one byte per call to a file, so the calls made in forked children
count too), runs it through pytest with ``--torchexport-backends=onnx`` and with
``trace,onnx,export``, and prints the counts and their ratio for this checkout and for each
``--rev`` (a copy of that git revision's package), side by side in one run:

    python benchmarks/bench_forwards.py                    # this checkout against d6c4383
    python benchmarks/bench_forwards.py --rev HEAD~5 --examples 10

The count includes every call of the model's ``forward`` (eager's, the exporters' tracing of
it, latency's timed calls), so it is what a model whose forward takes seconds pays. The runs
set ``CI=1``: the draws are derandomized, so a count is the same on every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from revisions import install_revision  # a sibling module: python benchmarks/bench_forwards.py

HERE = Path(__file__).resolve().parent
BASELINE = "d6c4383"
BACKEND_SETS = ("onnx", "trace,onnx,export")

TEST_FILE = textwrap.dedent("""
    import os

    import pytest
    import torch


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 8)

        def forward(self, x):
            return torch.relu(self.fc(x))


    def _count(module, args, output):
        # One byte per call, appended: forked children write to the same file.
        fd = os.open(os.environ["FORWARD_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"x")
        os.close(fd)


    @pytest.mark.torchexport(dims={"batch": (1, 16)})
    def test_net():
        torch.manual_seed(0)
        model = Net().eval()
        model.register_forward_hook(_count)
        assert model(torch.randn(4, 16)).shape == (4, 8)
""")


def count(package_dir: str, backends: str, examples: int, workdir: Path) -> int:
    """The forwards of the marked test with ``backends``, plugin imported from ``package_dir``."""
    counter = workdir / f"count-{os.getpid()}-{abs(hash((package_dir, backends)))}"
    counter.write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": package_dir, "FORWARD_COUNT_FILE": str(counter), "CI": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "test_forwards.py",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        f"--torchexport-backends={backends}",
        f"--torchexport-examples={examples}",
        "--torchexport-cache=off",
    ]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"pytest failed ({package_dir}, {backends}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return len(counter.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", action="append", default=None, help=f"a git revision to compare (default {BASELINE})")
    parser.add_argument("--examples", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forwards-") as tmp:
        work = Path(tmp)
        (work / "test_forwards.py").write_text(TEST_FILE)
        ways = {"checkout": str(HERE.parent)}
        for rev in args.rev or [BASELINE]:
            ways[rev] = install_revision(rev, work / f"rev-{rev.replace('/', '_')}")
        print(f"eager forwards of one marked test (Linear 16->8, batch 1-16, examples={args.examples}, CI=1)")
        print(f"{'plugin':<12} " + " ".join(f"{b:>18}" for b in BACKEND_SETS) + f" {'ratio':>7}")
        for way, package in ways.items():
            counts = [count(package, b, args.examples, work) for b in BACKEND_SETS]
            ratio = counts[-1] / counts[0] if counts[0] else float("nan")
            print(f"{way:<12} " + " ".join(f"{c:>18}" for c in counts) + f" {ratio:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
