"""Scaffolding the test files share, written once.

- `Pickled`: a third-party backend (by object to check(), or through the hook in a conftest);
- test files for pytester runs: `mlp_test`, `linear_test` (and `models.source` for others);
- a run and its report: `run_with_report`, `report_rows`, keyed `by_backend`, `by_test`, ...;
- the opt-in backends' common scenarios: a package hidden, a backend required, selected on
  the command line, an artifact reloaded from its files alone.

Used with the `tester` fixture (tests/conftest.py), which gives the ini every run shares.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from collections.abc import Callable

import pytest
import torch
from models import Nested, mlp_and_gate_source

from pytest_torchexport import Backend
from pytest_torchexport._compat import quiet_torch
from pytest_torchexport.backends.base import ExportContext
from pytest_torchexport.inputs.specs import plan_inputs

#: transformers is installed (the tests marked ``transformers`` need it; CI requires them).
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def transformers_release() -> tuple[int, int]:
    """The installed transformers' (major, minor): CI runs the transformers tests on several."""
    from importlib.metadata import version

    major, minor = version("transformers").split(".")[:2]
    return int(major), int(minor)


def trace_refuses_transformers_masks() -> bool:
    """transformers 5.5's mask code indexes ``q_length[0]`` of what torch.jit.trace makes a 0-d tensor:
    every text and audio model's trace raises IndexError there (plain torch.jit.trace too), the true
    verdict on that release."""
    return (5, 5) <= transformers_release() < (5, 6)


class Pickled(Backend):
    """A third-party backend as small as one gets: the module itself, saved with torch.save."""

    name = "pickled"

    def export(self, module, args, kwargs, ctx):
        return module

    def save(self, artifact, directory):
        torch.save(artifact, directory / "m.pt")
        return [directory / "m.pt"]

    def load(self, directory, ctx):
        return torch.load(directory / "m.pt", weights_only=False)


def mlp_test(*backends: str) -> str:
    """A test file with MLP and Gate (tests/models.py) and one test, `test_mlp`, that calls
    MLP on a (2, 8) input under `@pytest.mark.torchexport(backends=[...])`."""
    return mlp_and_gate_source() + textwrap.dedent(
        f"""
        @pytest.mark.torchexport(backends={list(backends)!r})
        def test_mlp():
            MLP().eval()(torch.randn(2, 8))
        """
    )


def run_with_models(
    tester: pytest.Pytester, tests: str, *args: str, name: str = "test_m", subprocess: bool = False, **outcomes: int
):
    """``tests`` written as ``name``.py after MLP and Gate (tests/models.py), run with ``args`` (in
    process, or in a subprocess); the result, asserted to end with ``outcomes`` where some are given."""
    tester.makepyfile(**{name: mlp_and_gate_source() + tests})
    result = (tester.runpytest_subprocess if subprocess else tester.runpytest)(*args)
    if outcomes:
        result.assert_outcomes(**outcomes)
    return result


def linear_test(**marker) -> str:
    """A test file whose one test, `test_linear`, calls nn.Linear(4, 2) on a (3, 4) input
    under `@pytest.mark.torchexport(**marker)`."""
    options = ", ".join(f"{name}={value!r}" for name, value in marker.items())
    return textwrap.dedent(
        f"""
        import torch
        from torch import nn

        import pytest

        @pytest.mark.torchexport({options})
        def test_linear():
            nn.Linear(4, 2).eval()(torch.randn(3, 4))
        """
    )


def hide_packages(tester: pytest.Pytester, *names: str) -> None:
    """A conftest that makes `names` and their submodules unimportable for the written run
    (the real missing-import path; pytester restores sys.modules afterwards)."""
    tester.makeconftest(
        f"""
        import sys

        for name in [n for n in sys.modules if n.split(".")[0] in {names!r}] + {list(names)!r}:
            sys.modules[name] = None
        """
    )


def by_backend(row: dict) -> str:
    return row["backend"]


def by_test(row: dict) -> str:
    """The test's name without its file: `test_gate`, `TestX::test_gate`, `test_p[8]`."""
    return row["test"].split("::", 1)[1]


def by_item(row: dict) -> str:
    """The item's name without its file: `test_gate[torchexport-trace]`."""
    return row["nodeid"].split("::", 1)[1]


def by_nodeid(row: dict) -> str:
    return row["nodeid"]


def by_test_and_backend(row: dict) -> tuple[str, str]:
    return by_test(row), row["backend"]


def report_rows(tester: pytest.Pytester, name: str = "out.json", key: Callable[[dict], object] | None = by_backend):
    """The rows of the JSON report `name` the last run wrote: a dict by `key`, or the list with key=None."""
    rows = json.loads((tester.path / name).read_text())["results"]
    return rows if key is None else {key(r): r for r in rows}


def run_with_report(
    tester: pytest.Pytester, *args: str, name: str = "out.json", key=by_backend, subprocess: bool = False
):
    """Run the written test files with `--torchexport-report=name` (in process, or in a subprocess for a
    run that imports a library an inline run must not leave half-imported: transformers, executorch's
    torchao); the result and its rows."""
    result = (tester.runpytest_subprocess if subprocess else tester.runpytest)(*args, f"--torchexport-report={name}")
    return result, report_rows(tester, name, key)


_SHARED_RUNS: dict[str, dict] = {}


def shared_run(tester: pytest.Pytester, source: str, *args: str, key=by_test_and_backend, **outcomes: int) -> dict:
    """The rows of one session of `source` (a test file), run on the first call in this
    process and asserted to end with `outcomes`; later calls with the same source share them,
    so a file's tests read one session of real exports instead of each paying for its own."""
    if source not in _SHARED_RUNS:
        tester.makepyfile(test_m=source)
        result, _SHARED_RUNS[source] = run_with_report(tester, *args, key=key)
        result.assert_outcomes(**outcomes)
    return _SHARED_RUNS[source]


def assert_required_but_unavailable(tester: pytest.Pytester, backend: str, *args: str, passed: int = 0) -> None:
    """`--torchexport-require=backend` turns the backend's skip into a failure that says so."""
    result = tester.runpytest(f"--torchexport-require={backend}", *args)
    result.assert_outcomes(passed=passed, failed=1)
    result.stdout.re_match_lines([rf".*{backend} is required \(--torchexport-require\) but unavailable here.*"])


def assert_selected_on_the_command_line(tester: pytest.Pytester, backend: str) -> None:
    """An opt-in backend named in --torchexport-backends gets its own item id and a passing row."""
    tester.makepyfile(test_o=linear_test(dims={"batch": (1, 8)}))
    result, rows = run_with_report(tester, "-v", f"--torchexport-backends=export,{backend}")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([rf".*test_o.py::test_linear\[torchexport-{backend}\] PASSED.*"])
    assert rows[backend]["status"] == "pass"


def run_without(tester: pytest.Pytester, packages: tuple[str, ...], backends: list[str], *args: str):
    """Run a one-Linear test on `backends` with `packages` unimportable (none hidden when
    `packages` is empty: they are missing here already): the result and the last backend's row."""
    if packages:
        hide_packages(tester, *packages)
    tester.makepyfile(test_m=linear_test(backends=backends))
    result, rows = run_with_report(tester, *args)
    return result, rows[backends[-1]]


def skipped_then_required(tester: pytest.Pytester, backend: str) -> tuple[dict, dict]:
    """Run the written one-pass test file twice: `backend` unavailable is a skipped row, then
    under --torchexport-require a failed one that says it is required; both rows."""
    result, rows = run_with_report(tester)
    result.assert_outcomes(passed=1, skipped=1)
    skipped = rows[backend]
    result, rows = run_with_report(tester, f"--torchexport-require={backend}")
    result.assert_outcomes(passed=1, failed=1)
    required = rows[backend]
    assert required["status"] == "export_error"
    assert required["message"].startswith(
        f"{backend} is required (--torchexport-require) but unavailable here [backend={backend}"
    )
    return skipped, required


def installed(backend: Backend, package: str) -> Backend:
    """The backend, or this test skipped where `package` is not installed."""
    why = backend.unavailable_reason()
    if why:
        pytest.skip(f"{package} is not installed: {why}")
    return backend


def nested_round_trip(backend: Backend, directory, batch: int):
    """Export tests/models.py's Nested at batch 3 with batch (1, 8) declared, save to
    `directory`, load from the files alone and run at `batch`, quiet as the engine calls
    exporters: the files, the loaded artifact, its output and eager's."""
    module, x, y = Nested().eval(), torch.randn(3, 4), torch.randn(batch, 4)
    ctx = ExportContext("cpu", plan_inputs(module, (x,), None, dims={"batch": (1, 8)}), module)
    with torch.no_grad(), quiet_torch():  # the exporters' warnings are not the test's
        files = backend.save(backend.export(module, (x,), {}, ctx), directory)
        loaded = backend.load(directory, ctx)
        return files, loaded, backend.run(loaded, (y,), {}), module(y)


def checked(module, args, backends, kwargs=None, *, eval_mode: bool = False, **options) -> dict:
    """The engine run on `module(*args, **kwargs)` as `check()` runs it, without raising:
    {backend: Result}. `backends` are names or `Backend` objects (registered for this run);
    `options` are the marker's plus `isolation`, `repro_dir`, ...; `eval_mode=True` puts the
    module in eval mode first (left as given, a training-mode module gets its finding)."""
    from pytest_torchexport.engine.pipeline import Session, run
    from pytest_torchexport.options import Options

    session = Session()
    session.backends = {**session.backends, **{b.name: b for b in backends if not isinstance(b, str)}}
    names = [b if isinstance(b, str) else b.name for b in backends]
    opts = Options.build(valid_backends=tuple(session.backends), backends=names, **options)
    return run(module.eval() if eval_mode else module, args, kwargs, opts, session).by_backend()


def checked_one(module, args, kwargs=None, *, backend: str, **options):
    """`checked` on one backend: its Result."""
    return checked(module, args, [backend], kwargs, **options)[backend]


def kinds(result) -> set[str]:
    """The kinds of a row's findings."""
    return {f.kind for f in result.findings}


def _gate_branch() -> str:
    import inspect

    from models import Gate

    lines, first = inspect.getsourcelines(Gate)
    return f"models.py:{first + next(i for i, line in enumerate(lines) if 'if x.sum() > 0:' in line)}"


#: Where Gate's data-dependent ``if`` stands in tests/models.py, as a finding's ``where`` ends.
GATE_BRANCH = _gate_branch()


def gate_branch_finding(result, kind: str):
    """``result``'s ``kind`` finding (Gate checked), asserted to point at Gate's branch line."""
    finding = next(f for f in result.findings if f.kind == kind)
    assert finding.where.endswith(GATE_BRANCH), finding
    return finding


def assert_draws_within(plan, dim: str, cap: int, examples: int = 100) -> None:
    """Every input hypothesis draws from ``plan`` (a capped one) has ``dim`` at most ``cap``."""
    from hypothesis import given, settings

    from pytest_torchexport.inputs.strategies import draws

    @given(draws(plan))
    @settings(max_examples=examples, database=None)
    def inner(draw):
        assert dict(draw.sizes)[dim] <= cap

    inner()
