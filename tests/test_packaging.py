"""The wheel as users install it: what the package needs at run time is in it.

Built once from a copy of the files git tracks (as a clean clone has them), so a file that
exists only in this working tree, or a template left out of the package data, fails here
rather than on a user's machine. .ci/run goes further: it installs the wheel in a fresh venv
and runs examples/ from it.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pytest_torchexport

ROOT = Path(__file__).resolve().parents[1]


def _tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (the wheel is built from the tracked files)")
    src = tmp_path_factory.mktemp("clone")
    for name in _tracked("pyproject.toml", "README.md", "LICENSE", "pytest_torchexport"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    # build isolation fetches the setuptools pyproject asks for (a fresh venv's is too old)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_the_package_and_says_what_it_is(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    # every tracked file of the package is in the wheel: modules, templates, py.typed
    missing = [name for name in _tracked("pytest_torchexport") if name not in names]
    assert missing == [], f"tracked package files missing from the wheel (package data?): {missing}"
    assert "pytest_torchexport/py.typed" in names
    assert any(n.startswith("pytest_torchexport/results/templates/") and n.endswith(".j2") for n in names)
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    # one version: the wheel's is __init__'s
    assert meta["Version"] == pytest_torchexport.__version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = set(meta.get_all("Classifier"))
    for wanted in ("Framework :: Pytest", "Typing :: Typed", "Programming Language :: Python :: 3.11"):
        assert wanted in classifiers
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
    entry_points = wheel.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert "torchexport = pytest_torchexport.plugin" in entry_points
