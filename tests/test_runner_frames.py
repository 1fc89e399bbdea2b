"""The test runner's frames are never the model's code, found by where their module comes from.

A finding once pointed at ``xdist/remote.py:227``: pytest-xdist was missing from a hand-kept
list of the runner's packages. The runner is now read from the installed metadata: pytest's
distribution, every distribution with a ``pytest11`` entry point and what each requires to
run, and the scripts folder its entry points are installed in (results/explain.py).
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from pytest_torchexport.results import explain


def _raise_from(filename: str) -> BaseException:
    """An error raised in the model's code (this file), called from a frame of ``filename``,
    as a worker of the runner calls the test."""
    code = compile("def run(f):\n    return f()\n", filename, "exec")
    space: dict = {}
    exec(code, space)

    def model():
        raise RuntimeError("the model raised")

    try:
        space["run"](model)
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_a_frame_of_xdists_worker_is_the_runners_not_the_models():
    remote = pytest.importorskip("xdist.remote")
    execnet = pytest.importorskip("execnet")
    assert not explain.is_model_file(remote.__file__)
    assert not explain.is_model_file(execnet.__file__)  # what xdist requires to run
    assert not explain.is_model_file(os.path.join(os.path.dirname(sys.executable), "pytest"))  # an entry point
    exc = _raise_from(remote.__file__)
    frames = explain.user_frames(exc)
    assert frames and all(f == __file__ for f, _ in frames), frames  # this file's lines, never remote.py's
    assert explain.innermost_user_frame(exc) == (__file__, exc.__traceback__.tb_next.tb_next.tb_lineno)


def test_a_new_plugin_is_known_by_its_entry_point_without_a_list(tmp_path, monkeypatch):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    (site / "nextrunner").mkdir(parents=True)
    (site / "nextrunner" / "__init__.py").write_text("")
    (site / "teammodels").mkdir()
    info = site / "pytest_nextrunner-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pytest-nextrunner\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest11]\nnextrunner = nextrunner\n")
    (info / "RECORD").write_text(
        textwrap.dedent("""\
        nextrunner/__init__.py,,
        pytest_nextrunner-1.0.dist-info/METADATA,,
    """)
    )
    worker = str(site / "nextrunner" / "worker.py")
    assert explain.is_model_file(worker)  # before it is installed: any package may hold the model
    monkeypatch.syspath_prepend(str(site))
    explain._runner_modules.cache_clear()
    explain._model_path.cache_clear()
    try:
        assert not explain.is_model_file(worker)
        assert explain.is_model_file(str(site / "teammodels" / "nets.py"))  # a model library stays the model's
    finally:
        monkeypatch.undo()
        explain._runner_modules.cache_clear()
        explain._model_path.cache_clear()
