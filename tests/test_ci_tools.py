"""The CI tools people already run, each run for real with the plugin: pytest-xdist, pytest-split,
pytest-rerunfailures, pytest-timeout, pytest-randomly and pytest-html (all in the `test` extra).

pytest-randomly is off in this suite (``-p no:randomly`` in pyproject's addopts): its test
turns it on with ``-p randomly``.
"""

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import report_rows
from models import mlp_and_gate_source

MODELS = mlp_and_gate_source()
# Inner sessions load every installed plugin, pytest-randomly too: fix their order where it matters.
IN_ORDER = ("-p", "no:randomly")

# Six items, one failing (the trace of Gate freezes its branch), over two files.
ONE = (
    MODELS
    + """
@pytest.mark.xdist_group("models")
@pytest.mark.torchexport(backends=["trace", "script"])
def test_gate():
    Gate()(torch.ones(3, 4))

@pytest.mark.xdist_group("models")
@pytest.mark.torchexport(backends=["trace"])
def test_mlp():
    MLP().eval()(torch.randn(2, 8))
"""
)
TWO = """
import pytest, torch

@pytest.mark.xdist_group("linear")
@pytest.mark.torchexport(backends=["trace", "script"])
def test_linear():
    torch.nn.Linear(4, 2).eval()(torch.randn(3, 4))

@pytest.mark.torchexport(backends=["trace"])
def test_square():
    torch.nn.Linear(3, 3).eval()(torch.randn(2, 3))
"""
ALL = {
    "test_one.py::test_gate[torchexport-trace]": "mismatch",
    "test_one.py::test_gate[torchexport-script]": "pass",
    "test_one.py::test_mlp[torchexport-trace]": "pass",
    "test_two.py::test_linear[torchexport-trace]": "pass",
    "test_two.py::test_linear[torchexport-script]": "pass",
    "test_two.py::test_square[torchexport-trace]": "pass",
}


def verdicts(tester, name: str) -> dict[str, tuple]:
    """Each item's verdict in the report `name`: status, examples tried, failing input (what must not flip)."""
    out = {}
    for r in report_rows(tester, name, key=None):
        assert r["nodeid"] not in out, f"two rows for {r['nodeid']}"
        out[r["nodeid"]] = (r["status"], r["examples"], json.dumps((r["failing_example"] or {}).get("inputs")))
    return out


@pytest.mark.parametrize("dist", ["loadfile", "loadgroup"])
def test_xdist_dist_modes_write_one_merged_report(tester, dist):
    tester.makepyfile(test_one=ONE, test_two=TWO)
    result = tester.runpytest_subprocess(*IN_ORDER, "-n", "2", "--dist", dist, "--torchexport-report=r.json")
    result.assert_outcomes(passed=5, failed=1)
    report = report_rows(tester, "r.json", key=None)
    assert {r["nodeid"]: r["status"] for r in report} == ALL
    assert len(report) == len(ALL)
    assert {r["test"] for r in report} == {
        "test_one.py::test_gate",
        "test_one.py::test_mlp",
        "test_two.py::test_linear",
        "test_two.py::test_square",
    }
    assert result.stdout.str().count("torchexport summary") == 1


# What pytest-xdist's worker does under --dist loadgroup (xdist/remote.py): it appends the group
# to the node id to schedule by it. xdist 3.8 on pytest 9.2 no longer manages to (pytest-xdist
# issue 1386: no suffix, no grouping), so the suffix is made here as it is on pytest 8.
LOADGROUP_WORKER = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    config.option.loadgroup = True
    for item in items:
        names = sorted({str(m.args[0]) for m in item.iter_markers("xdist_group")})
        if names:
            suffixed = f"{item.nodeid}@{'_'.join(names)}"
            if hasattr(item, "_id"):
                from _pytest.nodeid import coerce_node_id

                item._id = coerce_node_id(suffixed)
            else:
                item._nodeid = suffixed
"""


def test_xdist_loadgroup_suffix_stays_out_of_the_rows(tester):
    tester.makeconftest(LOADGROUP_WORKER)
    tester.makepyfile(test_one=ONE, test_two=TWO)
    result = tester.runpytest(*IN_ORDER, "-v", "--torchexport-report=r.json")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.re_match_lines([r".*test_one.py::test_gate\[torchexport-trace\]@models FAILED.*"])
    report = report_rows(tester, "r.json", key=None)
    assert {r["nodeid"]: r["status"] for r in report} == ALL  # a baseline or a serial run matches them
    assert {r["nodeid"]: r["test"] for r in report}["test_two.py::test_linear[torchexport-script]"] == (
        "test_two.py::test_linear"
    )


def test_pytest_split_groups_together_equal_the_one_run(tester, monkeypatch):
    monkeypatch.setenv("CI", "true")  # derandomized search: the same verdicts in every run
    tester.makepyfile(test_one=ONE, test_two=TWO)
    tester.runpytest(*IN_ORDER, "--store-durations", "--torchexport-report=all.json").assert_outcomes(
        passed=5, failed=1
    )
    assert (tester.path / ".test_durations").exists()
    one_run = verdicts(tester, "all.json")
    assert {n: v[0] for n, v in one_run.items()} == ALL
    for durations in (".test_durations", "missing.json"):
        merged: dict[str, tuple] = {}
        for group in (1, 2, 3):
            name = f"g{group}.json"
            out = tester.path / name
            out.unlink(missing_ok=True)
            split = ("--splits", "3", "--group", str(group), f"--durations-path={durations}")
            result = tester.runpytest(*IN_ORDER, *split, f"--torchexport-report={name}")
            result.stdout.re_match_lines([rf"\[pytest-split\] Running group {group}/3.*"])
            if out.exists():  # a group the split left without a marked test writes no report
                shard = verdicts(tester, name)
                assert not set(shard) & set(merged), "an item ran in two groups"
                merged.update(shard)
        assert merged == one_run, durations


FLAKY = (
    MODELS
    + """
from pathlib import Path

def attempt(name):
    counter = Path(name)
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return n

@pytest.mark.torchexport(backends=["trace", "script"])
def test_flaky_model():
    # First attempt: a model whose trace freezes a branch; the rerun: one that exports.
    if attempt("model.count") == 0:
        Gate()(torch.ones(3, 4))
    else:
        MLP().eval()(torch.randn(2, 8))

@pytest.mark.torchexport(backends=["trace", "script"])
def test_flaky_body():
    MLP().eval()(torch.randn(2, 8))
    assert attempt("body.count") > 0, "flaky on the first attempt"
"""
)


def test_rerunfailures_leaves_one_row_per_item_the_last(tester):
    tester.makepyfile(test_f=FLAKY)
    result = tester.runpytest(*IN_ORDER, "--reruns", "1", "--torchexport-report=r.json", "--junitxml=junit.xml")
    # Each test's first item fails once and passes on its rerun, where the body runs again.
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("failed")) == (4, 2, None), outcomes
    assert (tester.path / "model.count").read_text() == "2"
    assert (tester.path / "body.count").read_text() == "2"
    report = report_rows(tester, "r.json", key=None)
    assert [(r["nodeid"], r["status"]) for r in report] == [
        ("test_f.py::test_flaky_model[torchexport-trace]", "pass"),
        ("test_f.py::test_flaky_model[torchexport-script]", "pass"),
        ("test_f.py::test_flaky_body[torchexport-trace]", "pass"),
        ("test_f.py::test_flaky_body[torchexport-script]", "pass"),
    ]
    assert report[0]["module"] == "MLP"
    # JUnit gets a testcase per attempt (rerunfailures' doing), each with that attempt's properties only.
    cases = ET.parse(tester.path / "junit.xml").getroot().iter("testcase")
    statuses = [
        (case.get("name"), [p.get("value") for p in case.iter("property") if p.get("name") == "torchexport.status"])
        for case in cases
    ]
    assert statuses == [
        ("test_flaky_model[torchexport-trace]", ["mismatch"]),
        ("test_flaky_model[torchexport-trace]", ["pass"]),
        ("test_flaky_model[torchexport-script]", ["pass"]),
        ("test_flaky_body[torchexport-trace]", ["usage_error"]),
        ("test_flaky_body[torchexport-trace]", ["pass"]),
        ("test_flaky_body[torchexport-script]", ["pass"]),
    ]


HANGING = """
import os, time
import pytest, torch


class Hangs(torch.nn.Module):
    '''Fine in eager; hangs while trace captures it, after leaving its pid in a file.'''

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if torch.jit.is_tracing():
            with open("child.pid", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        return self.lin(x)


@pytest.mark.torchexport(backends=["trace"], timeout=120)
def test_hangs():
    Hangs().eval()(torch.randn(2, 4))


@pytest.mark.torchexport(backends=["trace"])
def test_after_it():
    torch.nn.Linear(4, 4).eval()(torch.randn(2, 4))
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find stray processes")
def test_pytest_timeout_shorter_than_the_check_leaves_a_row_and_no_child(tester):
    tester.makepyfile(test_h=HANGING)
    result = tester.runpytest_subprocess(*IN_ORDER, "--timeout=12", "--torchexport-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r".*Failed: Timeout \(>12.0s\) from pytest-timeout.*"])
    pid = int((tester.path / "child.pid").read_text())
    assert not _alive(pid), "the check's child outlived pytest-timeout's alarm"
    by_id = {r["nodeid"]: r for r in report_rows(tester, "r.json", key=None)}
    hung = by_id["test_h.py::test_hangs[torchexport-trace]"]
    assert hung["status"] == "timeout", hung["message"]
    assert hung["message"].startswith("trace was interrupted from outside the check after"), hung["message"]
    assert "during export" in hung["message"] and "pytest-timeout" in hung["message"]
    assert [f["kind"] for f in hung["findings"]] == ["timeout"]
    assert by_id["test_h.py::test_after_it[torchexport-trace]"]["status"] == "pass"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find stray processes")
def test_pytest_timeout_thread_method_ending_pytest_takes_the_child_along(tester):
    # The thread method ends pytest with os._exit: no report, but no orphan either.
    tester.makepyfile(test_h=HANGING)
    result = tester.runpytest_subprocess(*IN_ORDER, "--timeout=12", "--timeout-method=thread", "-k", "test_hangs")
    assert result.ret != 0
    result.stdout.re_match_lines([r".*Timeout.*"])
    pid = int((tester.path / "child.pid").read_text())
    assert _gone(pid), "the check's child outlived the pytest process pytest-timeout ended"


def test_pytest_randomly_reseeding_keeps_ci_verdicts(tester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    tester.makepyfile(test_one=ONE, test_two=TWO)
    seen = []
    for seed in (1, 2):
        result = tester.runpytest("-p", "randomly", f"--randomly-seed={seed}", f"--torchexport-report=r{seed}.json")
        result.stdout.re_match_lines([rf"Using --randomly-seed={seed}"])
        result.assert_outcomes(passed=5, failed=1)
        seen.append(verdicts(tester, f"r{seed}.json"))
    assert seen[0] == seen[1]
    assert {n: v[0] for n, v in seen[0].items()} == ALL
    assert seen[0]["test_one.py::test_gate[torchexport-trace]"][2] != "null"  # a failing input, the same one


NESTED = """
import pytest, torch
from torch import nn


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return -self.lin(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.gate = Gated()

    def forward(self, x):
        return self.gate(self.pre(x))


@pytest.mark.torchexport(backends=["trace", "script"])
def test_net():
    Net().eval()(torch.randn(3, 4))
"""


def _html_logs(page: str) -> dict[str, str]:
    """Each test id's log text in a pytest-html report, as its page shows it."""
    blob = re.search(r'data-jsonblob="([^"]*)"', page).group(1)
    tests = json.loads(html.unescape(blob))["tests"]
    return {nodeid: html.unescape(entries[-1]["log"]) for nodeid, entries in tests.items()}


def test_pytest_html_item_sections_carry_the_parity_table(tester):
    tester.makepyfile(test_n=NESTED)
    result = tester.runpytest(*IN_ORDER, "--html=report.html", "--torchexport-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    row = {r["backend"]: r for r in report_rows(tester, "r.json", key=None)}["trace"]
    assert row["status"] == "mismatch" and row["diverges_at"]["module"] == "gate", row["message"]
    page = (tester.path / "report.html").read_text()
    logs = _html_logs(page)
    trace = logs["test_n.py::test_net[torchexport-trace]"]
    section = trace[trace.index(" torchexport ") :]
    assert re.search(r"backend +device +status +max abs err +max rel err +examples", section), section
    err = re.escape(f"{row['max_abs_err']:.2g}")
    assert re.search(rf"trace +cpu +mismatch +{err} +\S+ +{row['examples']}\n", section), section
    shape = row["failing_example"]["inputs"]["x"]["shape"]
    assert f"failing input (trace): x: float32{shape}" in section, section
    assert "diverges at (trace): gate (Gated), max abs err" in section, section
    script = logs["test_n.py::test_net[torchexport-script]"]
    assert re.search(r"script +cpu +pass +", script) and "failing input" not in script
    # What the plugin adds is text: no markup of its own in the page.
    assert "<table" not in section and "<td" not in section
