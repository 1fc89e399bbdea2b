"""[Own Constants] A test draws the same inputs whether the plugin is installed editable (its
modules "local" to hypothesis, as in CI and for a contributor) or from a wheel (in site-packages,
as for a user). hypothesis draws some values from the literals of local modules; before the
plugin's own were kept out of that scan, the 60 inputs below differed between the two."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_torchexport

TEST = """
import os

import pytest
import torch


class Logged(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        if not torch.jit.is_tracing():  # eager's calls, in every process: each input it ran
            with open(os.environ["DRAWS_LOG"], "a") as f:
                f.write(f"{tuple(x.shape)} {float(x.double().sum()):.6g}\\n")
        return self.lin(x)


@pytest.mark.torchexport(backends=["trace"], examples=60)
def test_draws():
    Logged().eval()(torch.randn(4, 3))
"""


def _eager_inputs(tmp_path: Path, folder: Path, label: str) -> set[str]:
    log = tmp_path / f"{label}.log"
    env = dict(os.environ, CI="", DRAWS_LOG=str(log), PYTHONPATH=str(folder))  # CI: derandomized draws
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_draws.py"],
        cwd=tmp_path / "run",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    where = subprocess.run(
        [sys.executable, "-c", "import pytest_torchexport as p; print(p.__file__)"],
        cwd=tmp_path / "run",
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(folder)), where.stdout  # this copy of the plugin ran, not the checkout's
    return set(log.read_text().splitlines())


@pytest.mark.slow
def test_the_same_draws_installed_editable_or_from_a_wheel(tmp_path):
    package = Path(pytest_torchexport.__file__).parent
    local = tmp_path / "src"  # where an editable install leaves the source: neither stdlib nor site-packages
    wheel = tmp_path / "venv" / "lib" / "site-packages"  # where a wheel puts it
    for folder in (local, wheel):
        shutil.copytree(package, folder / "pytest_torchexport", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_draws.py").write_text(TEST)
    editable, installed = _eager_inputs(tmp_path, local, "editable"), _eager_inputs(tmp_path, wheel, "wheel")
    assert len(editable) > 20  # the search drew, and eager ran each input
    assert editable == installed
