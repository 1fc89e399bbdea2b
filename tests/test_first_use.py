"""[Search First Use] and [Shared First Use]: what the test's process pays once before its
checks fork, so that each child does not pay it again, and that it changes no verdict."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_torchexport.isolation import runner

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pytest_torchexport import ExportMismatch, check
    from pytest_torchexport.search import search

    if sys.argv[1] == "in-each-child":
        search._first_use_paid = True  # as before: hypothesis's first run happens in every child

    class Gate(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x - 1

    try:
        report = check(Gate().eval(), (torch.ones(3, 4),), backends=["trace", "export"], examples=6, seed=0)
    except ExportMismatch as exc:
        report = exc.report
    rows = [
        {"backend": r.backend, "status": r.status, "examples": r.examples,
         "failing": {k: v for k, v in (r.failing_example or {}).items() if k != "repro"}}
        for r in report.results
    ]
    print(json.dumps({"rows": rows, "paid_here": search._first_use_paid}))
    """
)


def _rows(tmp_path, mode):
    env = {**os.environ, "CI": "true"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hypothesis_first_run_in_the_parent_changes_no_verdict_and_no_failing_example(tmp_path):
    before = _rows(tmp_path, "in-each-child")
    after = _rows(tmp_path, "in-the-parent")
    assert after["paid_here"] is True
    statuses = {row["backend"]: row["status"] for row in after["rows"]}
    assert statuses == {"trace": "mismatch", "export": "export_error"}, after  # trace froze the branch; export refuses it
    assert after["rows"][0]["failing"], after
    assert after["rows"] == before["rows"]  # the same inputs drawn, the same shrunk failure


@pytest.mark.parametrize(
    ("name", "backends", "warms"),
    [
        ("onnx", ["trace", "onnx", "export"], True),  # two of them run torch.export inside
        ("export", ["export", "aoti"], True),
        ("trace", ["trace", "onnx", "export"], False),  # trace's child does not use it
        ("onnx", ["trace", "script", "onnx"], False),  # one child pays it, beside the others
    ],
)
def test_torch_export_is_warmed_here_when_two_children_would_each_pay_for_it(monkeypatch, name, backends, warms):
    calls = []
    monkeypatch.setattr(runner, "_warmed", set())
    monkeypatch.setattr(runner, "warm_up", lambda backend, spec, now=False: calls.append((backend, spec, now)))
    runner.share_first_use(name, backends)
    expected = [("export", "pytest_torchexport.backends.export:ExportBackend", True)]
    assert calls == (expected if warms else [])
