"""A backend the ``pytest_torchexport_backends`` hook returns under a built-in's name replaces it:
allowed (a subclass with other settings), never silent."""

from helpers import linear_test, run_with_report

CONFTEST = """
from pytest_torchexport.backends.trace import TraceBackend


class NotedTrace(TraceBackend):
    def load(self, directory, ctx):
        ctx.notes.append("the conftest's trace")
        return super().load(directory, ctx)


def pytest_torchexport_backends(config):
    return {"trace": NotedTrace, "noted": NotedTrace}
"""

WARNING = (
    "pytest_torchexport_backends returned 'trace', a built-in backend's name: it replaces the built-in 'trace' backend"
)


def test_a_built_in_name_taken_over_is_a_config_warning(tester):
    tester.makeconftest(CONFTEST)
    tester.makepyfile(test_t=linear_test(backends=["trace"], examples=2))
    # warnings as errors (the tester's ini): the session refuses to start
    refused = tester.runpytest()
    assert refused.ret != 0
    refused.stderr.re_match_lines([".*PytestConfigWarning: " + WARNING.replace("(", r"\(").replace(")", r"\)") + ".*"])
    # shown as a warning: the run goes on with the conftest's backend, and names only the built-in
    result, rows = run_with_report(tester, "-W", "default::pytest.PytestConfigWarning")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines([".*PytestConfigWarning: " + WARNING + ".*"])
    assert "'noted'" not in result.stdout.str()
    assert "the conftest's trace" in [f["detail"] for f in rows["trace"]["findings"]]
