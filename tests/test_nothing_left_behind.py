"""A run writes only where the docs say (docs/howto-xdist.md): pytest's cache folder and the paths
the user names. With ``-p no:cacheprovider`` that is nothing at all in the user's folder."""

from __future__ import annotations

TWO_TESTS = """
import pytest, torch

class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2 + 1

@pytest.mark.torchexport(backends=["trace", "export"])
def test_marked():
    Double()(torch.randn(2, 3))

@pytest.mark.torchexport(backends=["trace"])
def test_second():
    Double()(torch.randn(2, 3))

def test_fixture(torchexport):
    torchexport(Double(), (torch.randn(2, 3),), backends=["trace"])
"""


def test_a_run_without_pytests_cache_leaves_no_folder_behind(tester):
    # Two marked tests: the second test's checks are forked after the parent scanned the local
    # modules for hypothesis's constants (isolation/warmup.py), which hypothesis caches on disk.
    tester.makepyfile(test_models=TWO_TESTS)
    before = {p.name for p in tester.path.iterdir()}
    # A subprocess: in this process hypothesis already holds the scan, and would write nothing.
    result = tester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    pytesters = {"__pycache__", "stdout", "stderr", "runpytest-0", "runpytest-current"}  # pytester's own files
    left = sorted({p.name for p in tester.path.iterdir()} - before - pytesters)
    assert left == [], f"left in the user's folder: {left}"
