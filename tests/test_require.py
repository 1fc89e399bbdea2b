"""--torchexport-require: a backend a team relies on fails when it is missing, never a quiet skip."""

import json

CONFTEST = """
from pytest_torchexport import Backend


class Missing(Backend):
    name = "acme"

    def unavailable_reason(self):
        return "acme is not installed"


def pytest_torchexport_backends(config):
    return {"acme": Missing}
"""

TEST = """
import pytest
import torch


@pytest.mark.torchexport(backends=["trace", "acme"], examples=2)
def test_linear():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))
"""


def test_an_unavailable_backend_is_skipped_unless_required(tester):
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_r=TEST)
    tester.runpytest("--torchexport-report=out.json").assert_outcomes(passed=1, skipped=1)
    rows = {r["backend"]: r for r in json.loads((tester.path / "out.json").read_text())["results"]}
    assert rows["acme"]["status"] == "skipped" and "acme is not installed" in rows["acme"]["message"]

    result = tester.runpytest("--torchexport-report=out.json", "--torchexport-require=acme")
    result.assert_outcomes(passed=1, failed=1)
    row = {r["backend"]: r for r in json.loads((tester.path / "out.json").read_text())["results"]}["acme"]
    assert row["status"] == "export_error"
    assert row["message"].startswith("acme is required (--torchexport-require) but unavailable here [backend=acme")
    assert "acme is not installed" in row["message"]
    assert "Install: the package that provides the acme backend" in row["message"]


def test_require_takes_the_ini_and_names_the_install_line(tester):
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_r=TEST)
    tester.makeini("[pytest]\ntorchexport_require = acme\ntorchexport_examples = 2\n")
    result = tester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r".*acme is required \(--torchexport-require\) but unavailable here.*"])


def test_require_rejects_an_unknown_backend(tester):
    tester.makepyfile(test_r="def test_nothing():\n    pass\n")
    result = tester.runpytest("--torchexport-require=acmee")
    assert result.ret == 4
    result.stderr.re_match_lines([r".*unknown torchexport backend\(s\) 'acmee'; valid backends: trace, .*"])
