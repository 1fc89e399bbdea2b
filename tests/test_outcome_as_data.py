"""Outcomes stay data until they are written: the likely cause and its kind are report keys,
read back as keys; a row goes JSON -> Result -> JSON unchanged; nothing is parsed from a message."""

import json

import pytest
from models import Gate, Noisy, source

from pytest_torchexport.results.outcome import Outcome, row, settle, xfail
from pytest_torchexport.results.report import CAUSE_KIND_DOCS, CAUSE_KINDS, FOUND_CAUSES, Report, Result

SESSION = (
    source(Gate, Noisy)
    + """

@pytest.mark.torchexport(backends=["trace", "export"])
def test_gate():
    Gate().eval()(torch.ones(3, 4))


@pytest.mark.torchexport(backends=["trace"], xfail={"trace": "frozen branch, known"})
def test_gate_known():
    Gate().eval()(torch.ones(3, 4))


@pytest.mark.torchexport(backends=["trace"])
def test_noisy():
    Noisy().eval()(torch.ones(3, 4))


@pytest.mark.torchexport(backends=["trace"])
def test_calls_nothing():
    torch.ones(3)


@pytest.mark.torchexport(backends=["script"])
def test_passes():
    torch.nn.Linear(4, 2).eval()(torch.ones(3, 4))
"""
)


def _session_report(tester):
    tester.makepyfile(test_outcomes=SESSION)
    result = tester.runpytest("--torchexport-report=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=3, passed=1, xfailed=1, skipped=1)
    return json.loads((tester.path / "out.json").read_text())


def test_a_report_round_trips_row_for_row_with_cause_and_findings(tester):
    data = _session_report(tester)
    rows = data["results"]
    again = Report.from_dict(data).to_dict(data["environment"])
    assert json.loads(json.dumps(again, default=str)) == data  # every row, every key, in order
    assert [list(r) for r in again["results"]] == [list(r) for r in rows]

    by = {(r["test"].rsplit("::", 1)[-1], r["backend"]): r for r in rows}
    # Found by the engine: the message's "Likely cause:" line is written from the field.
    frozen = by[("test_gate", "trace")]
    assert frozen["status"] == "mismatch" and frozen["cause_kind"] == "frozen_branch"
    assert f"Likely cause: {frozen['likely_cause']}" in frozen["message"].splitlines()
    # The exporter's refusal at the user's line; the xfail keeps its cause.
    assert by[("test_gate", "export")]["cause_kind"] == "data_dependent_branch"  # the name the summary cell gives
    known = by[("test_gate_known", "trace")]
    assert known["status"] == "xfail" and known["cause_kind"] == "frozen_branch"
    assert known["likely_cause"] == frozen["likely_cause"]
    # Stated by the check itself: no "Likely cause:" line, the reason in the message's own words.
    noisy = by[("test_noisy", "trace")]
    assert noisy["status"] == "nondeterministic" and noisy["cause_kind"] == "nondeterministic"
    assert noisy["likely_cause"].startswith("Eager output depends on the RNG: ")
    assert "[backend=trace" not in noisy["likely_cause"] and "Likely cause:" not in noisy["message"]
    nothing = by[("test_calls_nothing", "trace")]
    assert nothing["status"] == "usage_error" and nothing["cause_kind"] == "usage"
    passed = by[("test_passes", "script")]
    assert passed["status"] == "pass" and passed["likely_cause"] is None and passed["cause_kind"] is None
    for r in rows:
        assert r["cause_kind"] is None or r["cause_kind"] in CAUSE_KINDS
        found = r["cause_kind"] in FOUND_CAUSES
        assert found == (f"Likely cause: {r['likely_cause']}" in r["message"]), r["nodeid"]


def test_the_cause_is_never_read_back_from_the_message():
    # A reworded message cannot change the cause: it is a field.
    r = Result("trace", "cpu", "mismatch", message="Exported outputs differ\nLikely cause: the wrong words")
    settle(
        r, Outcome("mismatch", "Exported outputs differ\nLikely cause: the wrong words", "the right words", "numeric")
    )
    r.message = r.message.replace("wrong", "other")  # what a later rewording would do
    back = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert (back.likely_cause, back.cause_kind, back.cause) == ("the right words", "numeric", "the right words")


def test_an_older_row_without_the_keys_loads_and_is_not_parsed():
    old = {
        "nodeid": "t.py::test_g[torchexport-trace]",
        "test": "t.py::test_g",
        "module": "Gate",
        "backend": "trace",
        "device": "cpu",
        "status": "mismatch",
        "examples": 3,
        "max_abs_err": 1.0,
        "max_rel_err": 1.0,
        "atol": 1e-5,
        "rtol": 1e-6,
        "failing_example": None,
        "message": "Exported outputs differ [backend=trace, device=cpu] (Gate)\nLikely cause: trace froze the branch",
        "findings": [],
        "timings": {},
        "usage": "replay",
    }
    r = Result.from_dict(old)
    assert r.likely_cause is None and r.cause_kind is None  # an older report: not recovered from the message
    assert r.cause == ""
    assert r.extra == {"usage": "replay"}  # an old key stays an extra key, read by no stage
    written = r.to_dict()
    assert written["likely_cause"] is None and written["cause_kind"] is None
    assert {k: v for k, v in written.items() if k not in ("likely_cause", "cause_kind")} == old


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="unknown status 'broken'"):
        Result.from_dict({"backend": "trace", "device": "cpu", "status": "broken"})


def test_rows_made_before_a_check_are_settled_with_their_cause():
    r = row(
        Outcome("usage_error", "Nothing to check\nwhy", "why", "usage"),
        backend="trace",
        device="cpu",
        nodeid="t.py::test[torchexport-trace]",
        test="t.py::test",
    )
    assert (r.status, r.likely_cause, r.cause_kind, r.cause) == ("usage_error", "why", "usage", "why")
    xfail(r, "known")
    assert (r.status, r.cause_kind, r.cause) == ("xfail", "usage", "why")
    fixed = Result("script", "cpu", "pass")
    xfail(fixed, "flaky?")
    assert fixed.status == "xpass" and fixed.cause_kind == "xpass"
    assert fixed.cause == "the defect may be fixed: remove 'script' from xfail="


def test_every_cause_kind_is_documented():
    assert set(CAUSE_KIND_DOCS) == set(CAUSE_KINDS)


def test_report_page_lists_every_cause_kind():
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "report.md").read_text()
    for kind in CAUSE_KINDS:
        assert f"| `{kind}` | {CAUSE_KIND_DOCS[kind]} |" in page, kind


def test_the_verdict_is_exactly_what_settle_writes_and_facts_are_the_rest():
    """[One Writer] ``report.VERDICT`` and ``outcome.settle`` name the same fields: what a stage
    keeps, puts back or hands on (``Result.facts``) is every other field, never the verdict."""
    import dataclasses

    from pytest_torchexport.results.report import VERDICT, Finding

    r = Result(backend="trace", device="cpu", status="pass", module="Gate")
    r.findings.append(Finding("mutates_input", "in place"))
    before, verdict = r.facts(), {name: getattr(r, name) for name in VERDICT}
    settle(r, Outcome("mismatch", "differs", "why", "numeric"))
    assert r.facts() == before  # settle wrote no fact
    assert all(getattr(r, name) != verdict[name] for name in VERDICT)  # and every verdict field
    assert set(before) == {f.name for f in dataclasses.fields(Result)} - VERDICT


def test_facts_written_since_are_handed_on_and_put_back_without_the_verdict():
    from pytest_torchexport.results.report import Finding

    r = Result(backend="trace", device="cpu", status="pass", module="Gate", extra={"eager_mode": "eval"})
    before = r.facts()
    r.findings.append(Finding("size_budget", "capped"))
    r.extra["eager_s"] = 0.5
    r.timings["shared_reference_s"] = 0.1
    settle(r, Outcome("nondeterministic", "[backend=trace] differs", "why", "nondeterministic"))
    written = r.written_since(before)
    # of extra only the new key; the verdict is none of it
    assert written == {
        "findings": [Finding("size_budget", "capped")],
        "extra": {"eager_s": 0.5},
        "timings": {"shared_reference_s": 0.1},
    }

    other = Result(backend="export", device="cpu", status="pass", module="Gate", extra={"eager_mode": "eval"})
    other.take(written)
    assert (other.backend, other.status, other.extra) == ("export", "pass", {"eager_mode": "eval", "eager_s": 0.5})
    other.findings[0].detail = "changed"  # a copy: the source is not touched
    assert r.findings[0].detail == "capped"

    r.restore(before)
    assert (r.findings, r.extra, r.timings) == ([], {"eager_mode": "eval"}, {})
    assert (r.status, r.message) == ("nondeterministic", "[backend=trace] differs")  # the verdict stays
