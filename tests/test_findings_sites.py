"""Findings worth reading: each names the model's own line, wherever the model lives.

A frozen branch raised in torch's own input checks (``torch/nn/functional.py``) is named at
the model's line that called into torch; trace's refusal of a ``None`` output is not a
frozen branch; a model from an installed package (``site-packages``) is named there; a
TorchScript error keeps the line it points at; the summary names a ``unittest`` test by
its class. Only torch's own files (and the exporters' and test runner's) are passed over.
"""

import json

import pytest
import torch
from helpers import by_test, report_rows

from pytest_torchexport.results import explain

# TracerWarnings and TorchScript errors, read at the model's line: torch's words on each version.
pytestmark = pytest.mark.torch_compat

MODELS = """
import unittest

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.norm(x) * 2  # GroupNorm's own batch check reads a tensor as a bool under trace


class WithNone(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.norm(x), None


class TestHeads(unittest.TestCase):
    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_script(self):
        Normed().eval()(torch.randn(3, 4, 5))


class TestOther(unittest.TestCase):
    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_script(self):
        WithNone().eval()(torch.randn(3, 4, 5))
"""


def line_of(source, text):
    """The line of ``text`` in the file pytester writes from ``source`` (its first newline dropped)."""
    return next(i for i, line in enumerate(source.lstrip("\n").splitlines(), start=1) if text in line)


WITH_NONE = line_of(MODELS, "return self.norm(x), None") - 1  # its forward's def line


def in_torch(where):
    return where is not None and ("torch/" in where or where.startswith("torch"))


def test_findings_name_the_models_line_and_the_summary_names_the_class(tester):
    tester.makepyfile(test_sites=MODELS)
    result = tester.runpytest("--torchexport-report=out.json")
    result.assert_outcomes(passed=1, failed=1)
    rows = report_rows(tester, key=by_test)
    normed, with_none = rows["TestHeads::test_script"], rows["TestOther::test_script"]
    # GroupNorm's batch check (torch/nn/functional.py: `if size_prods == 1: raise ValueError`)
    # is torch's input validation: every input eager accepts takes the frozen path, so it is
    # no finding at all (it was one on every GroupNorm/InstanceNorm model's passing trace row).
    assert normed["status"] == "pass"
    assert not [f for f in normed["findings"] if f["kind"] in ("frozen_branch", "tracer_warning")], normed["findings"]
    # trace's refusal of a None output is its own cause, at the model's forward.
    assert with_none["status"] == "export_error"
    assert with_none["findings"][0]["kind"] == "unsupported_output"
    assert with_none["findings"][0]["where"] == f"test_sites.py:{WITH_NONE}"
    # No finding of either row points into torch's own files.
    assert not [f for r in rows.values() for f in r["findings"] if in_torch(f["where"])]
    # The summary tells the two test_script methods apart by their classes, and summarises the
    # None output as what it is, not as GroupNorm's frozen branch.
    result.stdout.re_match_lines(
        [
            r"TestHeads::test_script +Normed +trace +pass .*",
            r"TestOther::test_script +WithNone +trace +export_error .*",
            rf" *unsupported_output test_sites.py:{WITH_NONE}",
        ]
    )


PACKAGED = """
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return -x


class Unscriptable(nn.Module):
    def forward(self, x):
        options = {"dim": -1}
        return torch.softmax(x, **options)
"""


def test_a_model_from_an_installed_package_is_named_at_its_own_line(tester):
    # A team's model library, installed like any dependency: in a site-packages folder.
    package = tester.path / "venv" / "lib" / "site-packages" / "teammodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(PACKAGED.lstrip("\n"))
    tester.syspathinsert(package.parent)
    tester.makepyfile(
        test_pkg="""
import pytest
import torch

from teammodels.nets import Gate, Unscriptable

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.torchexport(backends=["trace"], examples=6)
def test_gate():
    Gate().eval()(torch.randn(3, 4))


@pytest.mark.torchexport(backends=["script"], examples=3)
def test_unscriptable():
    Unscriptable().eval()(torch.randn(3, 4))
"""
    )
    result = tester.runpytest("--torchexport-report=out.json")
    result.assert_outcomes(failed=2)
    rows = report_rows(tester, key=by_test)
    gate, script = rows["test_gate"], rows["test_unscriptable"]
    assert gate["status"] == "mismatch"
    assert f"site-packages/teammodels/nets.py:{line_of(PACKAGED, 'if x.sum()')} (`if x.sum() > 0:`)" in gate["message"]
    assert script["status"] == "export_error"
    assert (
        f"Likely cause: script cannot compile this Python construct at venv/lib/site-packages/teammodels/nets.py:{line_of(PACKAGED, '**options')}"
        in script["message"]
    )


def test_only_the_toolchains_files_are_passed_over(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    assert explain.is_model_file(str(site / "teammodels" / "nets.py"))
    assert explain.is_model_file(str(site / "e3nn" / "o3" / "_linear.py"))
    assert not explain.is_model_file(str(site / "torch" / "nn" / "functional.py"))
    assert not explain.is_model_file(torch.nn.functional.__file__)
    assert not explain.is_model_file(str(site / "onnxscript" / "ir.py"))
    assert not explain.is_model_file(explain.__file__)
    assert not explain.is_model_file(json.__file__)  # the stdlib


BAD = """
import torch


def bad(x):
    y = x * 2
    return torch.softmax(y, "a")
"""


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated")  # 2.13: Deprecation-, 2.14: FutureWarning
def test_a_torchscript_error_keeps_the_line_it_points_at(tester):
    tester.makepyfile(bad_script=BAD)
    tester.syspathinsert()
    import bad_script

    try:
        torch.jit.script(bad_script.bad)
    except RuntimeError as exc:
        error = exc
    # TorchScript lists the overloads first, then blank lines, then where: the trim keeps it.
    text = explain.trim_error(error, limit=8)
    assert text.startswith("RuntimeError: Arguments for call are not valid.")
    assert text.splitlines()[-2:] == ['    return torch.softmax(y, "a")', "           ~~~~~~~~~~~~~ <--- HERE"]
    assert f'bad_script.py", line {line_of(BAD, "softmax")}' in text


def test_torchs_own_input_validation_is_told_from_its_branches():
    # an `if` of torch's whose body only raises or warns (through nested ifs) is
    # input validation; one that computes is a branch the trace may freeze for the model.
    import inspect

    import torch.nn.functional as F
    from torch.nn.modules import instancenorm

    def ifs(fn):
        lines, start = inspect.getsourcelines(fn)
        return {line.strip(): start + i for i, line in enumerate(lines) if line.strip().startswith("if ")}

    batch = ifs(F._verify_batch_size)
    assert explain.guards_a_raise(F.__file__, batch["if size_prods == 1:"])
    norm = ifs(instancenorm._InstanceNorm.forward)
    assert explain.guards_a_raise(instancenorm.__file__, norm["if input.size(feature_dim) != self.num_features:"])
    assert not explain.guards_a_raise(instancenorm.__file__, norm["if input.dim() == self._get_no_batch_dim():"])
