"""The first uses of hypothesis and of torch.export: what the test's process pays once before its
checks fork, so that each child does not pay it again, and that it changes no verdict."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_torchexport.isolation.warmup import Warmup

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pytest_torchexport import ExportMismatch, check
    from pytest_torchexport.isolation import warmup
    from pytest_torchexport.isolation.runner import THIS

    if sys.argv[1] == "in-each-child":
        THIS.warmup.hypothesis = True  # the old way: hypothesis's first run happens in every child,
        warmup.scan_local_modules = lambda: None  # and its scan of the modules imported since

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
    print(json.dumps({"rows": rows, "paid_here": THIS.warmup.hypothesis}))
    """
)


def _rows(tmp_path, mode):
    env = {**os.environ, "CI": "true"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hypothesis_first_run_in_the_parent_changes_no_verdict_and_no_failing_example(tmp_path):
    before = _rows(tmp_path, "in-each-child")
    after = _rows(tmp_path, "in-the-parent")
    assert after["paid_here"] is True
    statuses = {row["backend"]: row["status"] for row in after["rows"]}
    assert statuses == {"trace": "mismatch", "export": "export_error"}, (
        after
    )  # trace froze the branch; export refuses it
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
    paid = Warmup()
    monkeypatch.setattr(paid, "warm_up", lambda backend, spec, now=False: calls.append((backend, spec, now)))
    paid.share_first_use(name, backends)
    expected = [("export", "pytest_torchexport.backends.export:ExportBackend", True)]
    assert calls == (expected if warms else [])


def _parsed_in_a_child(scan_first: bool) -> int:
    """How many local modules a forked child's hypothesis parses for constants before its search."""
    from hypothesis.internal.conjecture import providers

    from pytest_torchexport import _compat

    if scan_first:
        Warmup().before_fork("trace", "pytest_torchexport.backends.trace:TraceBackend", ["trace"], repeats=False)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count what its first draw's scan parses, report it, leave
        try:
            parsed = []
            real = providers.constants_from_module
            providers.constants_from_module = lambda module, **kw: parsed.append(module.__name__) or real(module, **kw)
            _compat.scan_local_constants()
            os.write(write, str(len(parsed)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        return int(pipe.read() or -1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_child_forked_after_before_fork_parses_no_module_the_parent_had(tmp_path, monkeypatch):
    """hypothesis parses each new local module for constants once per
    process; a module imported after the parent's last scan was parsed again in every child."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("zoo_model_a", "zoo_model_b"):
        (tmp_path / f"{name}.py").write_text("WIDTH = 37\nSCALE = 0.125\n")
    # hypothesis notices new modules by the length of sys.modules alone: scanned now, so the import
    # below lengthens it from a known count (an earlier test that dropped modules could leave it
    # at exactly the length last scanned, and the child would see nothing new: seen in a full run).
    from pytest_torchexport import _compat

    _compat.scan_local_constants()
    import zoo_model_a  # noqa: F401 - a model library module imported after the first scan

    assert _parsed_in_a_child(scan_first=False) >= 1  # the premise: the child parses it
    import zoo_model_b  # noqa: F401

    assert _parsed_in_a_child(scan_first=True) == 0
