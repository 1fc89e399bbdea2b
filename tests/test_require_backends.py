"""--torchexport-require: a backend a team relies on fails when it is missing, never a quiet skip."""

from helpers import hide_packages, linear_test, skipped_then_required

CONFTEST = """
from pytest_torchexport import Backend


class Missing(Backend):
    name = "acme"

    def unavailable_reason(self):
        return "acme is not installed"


def pytest_torchexport_backends(config):
    return {"acme": Missing}
"""

TEST = linear_test(backends=["trace", "acme"], examples=2)


def test_an_unavailable_backend_is_skipped_unless_required(tester):
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_r=TEST)
    skipped, row = skipped_then_required(tester, "acme")
    assert skipped["status"] == "skipped" and "acme is not installed" in skipped["message"]
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


def test_a_required_builtin_backend_not_installed_fails_as_unavailable_with_the_install_line_once(tester):
    hide_packages(tester, "executorch")
    tester.makepyfile(test_r=linear_test(examples=2))
    result = tester.runpytest("--torchexport-backends=trace,executorch", "--torchexport-require=executorch")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r".*executorch is required \(--torchexport-require\) but unavailable here.*"])
    # pytest's own short summary repeats the whole failure message where CI is set; the
    # plugin's part of the output is what ends before it.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count('pip install "pytest-torchexport[executorch]"') == 1, out
    assert "the exporter refused" not in out
