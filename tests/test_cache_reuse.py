"""[Verdict Cache] A verdict is reused only while nothing it depends on changed.

Real pytest sessions, real exports, run twice: between the runs one line changes in a file
(or a data file the test body reads), and the second run's row says whether the check ran
again (no ``cached`` key) or was reused (``"cached": true``).
"""

import json
import os
import textwrap
from pathlib import Path

import pytest
from helpers import by_item, linear_test, report_rows
from models import Gate, source

# Each model lives in its own file, so an edit reaches one test's key and no other's. The test
# file itself holds only the bodies and markers: its code never runs during a check.
MODELS = {
    # (a) a helper the forward calls only for drawn inputs with batch > 3 (the recorded one has 2)
    "m_branch.py": """
        import torch
        from big_helper import big


        class Branch(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 4)

            def forward(self, x):
                y = self.lin(x)
                if x.shape[0] > 3:
                    y = big(y)
                return y
    """,
    "big_helper.py": """
        def big(y):
            return y * 1.0
    """,
    # (b) a function only TorchScript compiles
    "m_scripted.py": """
        import torch
        from script_only import scripted_path


        class Scripted(torch.nn.Module):
            def forward(self, x):
                if torch.jit.is_scripting():
                    return scripted_path(x)
                return x * 2.0
    """,
    "script_only.py": """
        import torch


        def scripted_path(x: torch.Tensor) -> torch.Tensor:
            return x * 2.0
    """,
    # (c) a weight and (d) a buffer, read by the test body from data files (no Python file changes)
    "m_state.py": """
        import json

        import torch


        class Scaled(torch.nn.Module):
            def __init__(self, weight, scale):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2, bias=False)
                with torch.no_grad():
                    self.lin.weight.copy_(torch.tensor(weight))
                self.register_buffer("scale", torch.tensor(scale))

            def forward(self, x):
                return self.lin(x) * self.scale


        def load(name):
            with open(name) as f:
                return json.load(f)
    """,
    # (f) an installed third-party library the forward calls (on sys.path outside the test dir)
    "m_third.py": """
        import torch
        import thirdlib


        class Third(torch.nn.Module):
            def forward(self, x):
                return thirdlib.shift(x)
    """,
    # unchanged: reused
    "m_same.py": """
        import torch


        class Same(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 3)

            def forward(self, x):
                return torch.relu(self.lin(x))
    """,
}

SUITE = """
    import pytest
    import torch

    from m_branch import Branch
    from m_same import Same
    from m_scripted import Scripted
    from m_state import Scaled, load
    from m_third import Third


    @pytest.mark.torchexport(backends=["trace"], dims={"batch": (1, 8)})
    def test_a_helper_for_some_inputs():
        Branch().eval()(torch.randn(2, 4))


    @pytest.mark.torchexport(backends=["script"])
    def test_b_script_only():
        Scripted()(torch.randn(2, 3))


    @pytest.mark.torchexport(backends=["trace"])
    def test_c_weight():
        Scaled(load("weight.json"), [1.0, 1.0])(torch.randn(2, 2))


    @pytest.mark.torchexport(backends=["trace"])
    def test_d_buffer():
        Scaled([[1.0, 0.0], [0.0, 1.0]], load("buffer.json"))(torch.randn(2, 2))


    @pytest.mark.torchexport(backends=["trace"], atol=1e-4)
    def test_e_tolerance():
        Same().eval()(torch.randn(2, 4))


    @pytest.mark.torchexport(backends=["trace"])
    def test_f_third_party():
        Third()(torch.randn(2, 3))


    @pytest.mark.torchexport(backends=["trace", "export"])
    def test_unchanged():
        Same().eval()(torch.randn(2, 4))
"""


def _write(base: Path, name: str, text: str) -> None:
    # A different size each time: Python's bytecode cache goes by mtime (seconds) and size.
    (base / name).write_text(textwrap.dedent(text).lstrip())


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@pytest.fixture
def suite(tester, tmp_path_factory):
    for name, text in MODELS.items():
        _write(tester.path, name, text)
    (tester.path / "weight.json").write_text("[[1.0, 0.0], [0.0, 1.0]]")
    (tester.path / "buffer.json").write_text("[1.0, 1.0]")
    site = tmp_path_factory.mktemp("site-packages")  # outside the test dir, like an installed library
    (site / "thirdlib").mkdir()
    _write(site / "thirdlib", "__init__.py", "def shift(x):\n    return x + 1.0\n")
    tester.syspathinsert(site)
    tester.makepyfile(test_suite=textwrap.dedent(SUITE))
    tester.site = site
    return tester


def test_each_edit_reruns_its_check_and_an_unchanged_one_is_reused(suite):
    first = suite.runpytest("--torchexport-report=first.json")
    first.assert_outcomes(passed=8)
    before = report_rows(suite, "first.json", key=by_item)
    assert all(r["status"] == "pass" and "cached" not in r for r in before.values()), before

    # One line each: (a) the helper only big batches reach, (b) the function only TorchScript
    # compiles, (c) a weight, (d) a buffer, (e) the marker's tolerance, (f) the library's file.
    _edit(suite.path / "big_helper.py", "return y * 1.0", "return y * 1.00")
    _edit(suite.path / "script_only.py", "return x * 2.0", "return x * 2.00")
    (suite.path / "weight.json").write_text("[[1.0, 0.0], [0.0, 2.0]]")
    (suite.path / "buffer.json").write_text("[1.0, 3.0]")
    _edit(suite.path / "test_suite.py", "atol=1e-4", "atol=2e-4")
    _edit(suite.site / "thirdlib" / "__init__.py", "return x + 1.0", "return x + 1.00")

    second = suite.runpytest("--torchexport-report=second.json")
    second.assert_outcomes(passed=8)
    after = report_rows(suite, "second.json", key=by_item)
    for test in ("a_helper_for_some_inputs", "b_script_only", "c_weight", "d_buffer", "e_tolerance", "f_third_party"):
        (nodeid,) = [n for n in after if test in n]
        assert "cached" not in after[nodeid], f"{nodeid} was reused after its edit"
    for nodeid in ("test_unchanged[torchexport-trace]", "test_unchanged[torchexport-export]"):
        assert after[nodeid]["cached"] is True and after[nodeid]["status"] == "pass"
        assert after[nodeid]["cached_at"][:4].isdigit()
    second.stdout.re_match_lines(
        [
            r"test_unchanged\s+Same\s+trace\s+pass \(cached\).*",
            r"torchexport cache: reused 2 passes of 8 checks \(nothing they depend on changed\)",
        ]
    )

    # Nothing changed since: every pass is reused, and the body still ran (its call recorded).
    third = suite.runpytest("--torchexport-report=third.md")
    third.assert_outcomes(passed=8)
    md = (suite.path / "third.md").read_text()
    assert md.count("✅ pass (cached 20") == 8, md


def test_an_edit_that_changes_the_verdict_is_never_hidden(suite):
    """The edit to a helper only drawn inputs reach makes trace wrong: the second run finds it."""
    suite.runpytest("-k", "helper").assert_outcomes(passed=1)
    _edit(suite.path / "big_helper.py", "return y * 1.0", "return y * 3.5")
    result = suite.runpytest("-k", "helper", "--torchexport-report=out.json")
    result.assert_outcomes(failed=1)
    (row,) = report_rows(suite, "out.json", key=by_item).values()
    assert row["status"] == "mismatch" and "cached" not in row


FAILING = source(Gate) + textwrap.dedent(
    """

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)


    @pytest.mark.torchexport(backends=["trace"])
    def test_gate():
        Gate()(torch.ones(3, 4))


    @pytest.mark.torchexport(backends=["trace"])
    def test_lin():
        with open("body-ran.txt", "a") as f:  # the body runs on every run, reused or not
            f.write("ran\\n")
        Lin().eval()(torch.randn(3, 4))
    """
)


def test_failures_rerun_and_off_no_cacheprovider_and_a_corrupt_entry_reuse_nothing(tester, not_in_ci):
    # A local run's search is random: another run may draw the input that fails, so only the pass is kept.
    tester.makepyfile(test_g=FAILING)
    tester.runpytest("--torchexport-report=1.json").assert_outcomes(passed=1, failed=1)
    entries = list((tester.path / ".pytest_cache").rglob("torchexport-verdicts/v1/*/*.json"))
    assert len(entries) == 1, entries  # the pass only

    def run(*args: str) -> dict[str, dict]:
        result = tester.runpytest("--torchexport-report=out.json", *args)
        result.assert_outcomes(passed=1, failed=1)
        return {k.split("[")[0]: v for k, v in report_rows(tester, "out.json", key=by_item).items()}

    found = run()
    assert found["test_lin"]["cached"] is True
    assert (tester.path / "body-ran.txt").read_text().count("ran") == 2  # the reused item's body ran too
    assert found["test_gate"]["status"] == "mismatch" and "cached" not in found["test_gate"]
    assert "Likely cause: trace froze the branch" in found["test_gate"]["message"]  # a fresh message

    for args in (("--torchexport-cache=off",), ("-p", "no:cacheprovider")):
        found = run(*args)
        assert not any("cached" in r for r in found.values()), args

    entries[0].write_text('{"version": 1, "key": ')  # a writer cut off (it cannot be: os.replace)
    result = tester.runpytest("--torchexport-report=out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines(
        [
            r"torchexport cache warning: test_g.py::test_lin\[torchexport-trace\]: "
            r"ignored the corrupt entry .*: checked again"
        ]
    )
    found = {k.split("[")[0]: v for k, v in report_rows(tester, "out.json", key=by_item).items()}
    assert "cached" not in found["test_lin"] and found["test_lin"]["status"] == "pass"
    assert json.loads(entries[0].read_text())["row"]["status"] == "pass"  # written again, whole
    assert run()["test_lin"]["cached"] is True


def test_a_failure_found_by_a_reproducible_search_is_reused_and_still_fails(tester, not_in_ci):
    tester.makepyfile(test_g=FAILING)
    seeded = ("--torchexport-seed=7", "--torchexport-report=out.json")
    tester.runpytest(*seeded).assert_outcomes(passed=1, failed=1)
    first = {k.split("[")[0]: v for k, v in report_rows(tester, "out.json", key=by_item).items()}
    assert first["test_gate"]["status"] == "mismatch" and "cached" not in first["test_gate"]

    result = tester.runpytest(*seeded, "--torchexport-report=out.html")
    result.assert_outcomes(passed=1, failed=1)  # it gates exactly as the run that found it
    assert "marks a verdict reused from the verdict cache" in (tester.path / "out.html").read_text()
    again = {k.split("[")[0]: v for k, v in report_rows(tester, "out.json", key=by_item).items()}
    gate = again["test_gate"]
    assert gate["cached"] is True and gate["cached_at"]
    for key in ("status", "message", "failing_example", "max_abs_err", "likely_cause", "cause_kind", "findings"):
        assert gate.get(key) == first["test_gate"].get(key), key
    result.stdout.re_match_lines([r".*\(reused: the verdict of the run of .*--cache-clear.*"])
    result.stdout.re_match_lines([r"torchexport cache: reused 2 verdicts \(1 pass, 1 failure\) of 2 checks .*"])

    # Another seed draws other inputs: nothing is reused; the same seed with the marker's xfail= applies it
    # to the reused verdict.
    tester.runpytest("--torchexport-seed=8", "--torchexport-report=out.json").assert_outcomes(passed=1, failed=1)
    rows = report_rows(tester, "out.json", key=by_item).values()
    assert not any("cached" in r for r in rows)
    tester.makepyfile(
        test_g=FAILING.replace(
            'backends=["trace"])\ndef test_gate', 'backends=["trace"], xfail={"trace": "frozen branch"})\ndef test_gate'
        )
    )
    tester.runpytest(*seeded).assert_outcomes(passed=1, xfailed=1)
    tester.runpytest(*seeded).assert_outcomes(passed=1, xfailed=1)
    gate = {k.split("[")[0]: v for k, v in report_rows(tester, "out.json", key=by_item).items()}["test_gate"]
    assert gate["status"] == "xfail" and gate["cached"] is True and gate["xfail_of"] == "mismatch"


def test_a_reused_failure_runs_again_once_the_model_is_fixed(tester, not_in_ci):
    # The failure is kept (a seeded search), then the frozen branch is fixed in the model's file: the
    # stored failure must not stand for the fixed model.
    tester.makepyfile(test_g=FAILING)
    seeded = ("--torchexport-seed=7", "--torchexport-report=out.json", "-k", "gate")
    tester.runpytest(*seeded).assert_outcomes(failed=1)
    tester.runpytest(*seeded).assert_outcomes(failed=1)
    (row,) = report_rows(tester, "out.json", key=by_item).values()
    assert row["status"] == "mismatch" and row["cached"] is True
    tester.makepyfile(test_g=FAILING.replace("if x.sum() > 0:", "if True:"))
    tester.runpytest(*seeded).assert_outcomes(passed=1)
    (row,) = report_rows(tester, "out.json", key=by_item).values()
    assert row["status"] == "pass" and "cached" not in row


def test_what_is_never_kept(not_in_ci):
    from pytest_torchexport.cache.reuse import unkept
    from pytest_torchexport.options import Options
    from pytest_torchexport.results.report import Result

    seeded, drawn = Options(seed=1), Options()
    assert unkept(Result("trace", "cpu", "pass"), drawn) is None
    assert unkept(Result("trace", "cpu", "mismatch"), seeded) is None
    assert "random search" in unkept(Result("trace", "cpu", "mismatch"), drawn)
    for status in ("timeout", "nondeterministic", "skipped"):
        assert "always runs again" in unkept(Result("trace", "cpu", status), seeded)
    crashed = Result("trace", "cpu", "export_error", cause_kind="crash")
    assert "crashed" in unkept(crashed, seeded)
    for key in ("budget", "budget_limit"):
        assert "budget" in unkept(Result("trace", "cpu", "mismatch", extra={key: {}}), seeded)


def test_a_cache_dir_given_on_the_command_line_and_cache_clear(tester):
    tester.makepyfile(test_g=FAILING)
    tester.runpytest("--torchexport-cache=ci-cache", "-k", "lin").assert_outcomes(passed=1)
    assert list((tester.path / "ci-cache" / "v1").rglob("*.json"))
    assert not list((tester.path / ".pytest_cache").rglob("torchexport-verdicts/v1/*/*.json"))
    tester.runpytest("--torchexport-cache=ci-cache", "-k", "lin", "--torchexport-report=out.json")
    assert next(iter(report_rows(tester, "out.json", key=by_item).values()))["cached"] is True
    # The default lives under pytest's cache dir: --cache-clear clears it.
    tester.runpytest("-k", "lin").assert_outcomes(passed=1)
    result = tester.runpytest("-k", "lin", "--cache-clear", "--torchexport-report=out.json")
    result.assert_outcomes(passed=1)
    assert "cached" not in next(iter(report_rows(tester, "out.json", key=by_item).values()))


ENGINE = ("pytest_torchexport.engine.pipeline", "pytest_torchexport.search.search", "pytest_torchexport.backends.trace")
PROBE = f"""
import json
import sys


def pytest_unconfigure(config):
    with open("imported.json", "w") as f:
        json.dump([name for name in {ENGINE!r} if name in sys.modules], f)
"""


def test_a_session_whose_every_check_is_reused_never_imports_the_engine(tester):
    """A fully reused session pays for its bodies, the keys and the rows: not for importing the
    exporters and the search (in a fresh interpreter, as a CI job starts)."""
    tester.makepyfile(test_g=FAILING)
    tester.makeconftest(PROBE)
    tester.runpytest_subprocess("--torchexport-cache=c", "-k", "lin").assert_outcomes(passed=1)
    assert json.loads((tester.path / "imported.json").read_text()) == list(ENGINE)
    warm = tester.runpytest_subprocess("--torchexport-cache=c", "-k", "lin", "--torchexport-report=out.json")
    warm.assert_outcomes(passed=1)
    assert next(iter(report_rows(tester, "out.json", key=by_item).values()))["cached"] is True
    assert json.loads((tester.path / "imported.json").read_text()) == []


def test_a_fixture_test_that_builds_a_random_model_is_reused(tester):
    """The fixture seeds the test's body as the marker does, so a model built with random
    weights is the same model on the next run, and its verdict is reused."""
    tester.makepyfile(
        test_f="""
        import torch


        def test_random_model(torchexport):
            model = torch.nn.Linear(4, 2).eval()  # random weights, as most tests build them
            torchexport(model, (torch.randn(3, 4),), backends=["trace"])
        """
    )
    tester.runpytest("--torchexport-cache=c").assert_outcomes(passed=1)
    tester.runpytest("--torchexport-cache=c", "--torchexport-report=out.json").assert_outcomes(passed=1)
    (row,) = report_rows(tester, "out.json", key=by_item).values()
    assert row["cached"] is True and row["status"] == "pass"


def test_xdist_workers_share_the_cache(tester):
    pytest.importorskip("xdist")
    tester.makepyfile(test_g=FAILING.replace("if x.sum() > 0:\n            return x * 2\n", ""))
    first = tester.runpytest_subprocess("-n", "2", "--torchexport-report=1.json")
    first.assert_outcomes(passed=2)
    second = tester.runpytest_subprocess("-n", "2", "--torchexport-report=2.json")
    second.assert_outcomes(passed=2)
    assert all(r.get("cached") is True for r in report_rows(tester, "2.json", key=by_item).values())


def _writer(directory: str, key: str, n: int) -> None:
    from pytest_torchexport.cache.store import Cache

    cache = Cache(Path(directory))
    for i in range(n):
        cache.store(key, {"status": "pass", "message": "x" * (i * 97 % 5000)}, [])


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    """Writers of one key in four processes (xdist workers, CI shards sharing a folder), a reader
    all along: every read is a whole entry (os.replace), never a parse error."""
    import multiprocessing

    from pytest_torchexport.cache.store import Cache

    key = "ab" + "0" * 62
    cache = Cache(tmp_path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(tmp_path), key, 150)) for _ in range(4)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads == 0:
        hit, note = cache.lookup(key)
        assert note is None, note
        reads += hit is not None
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads and not list(tmp_path.rglob("*.tmp"))


def test_pruning_drops_unused_and_least_recently_used_entries(tmp_path):
    import time

    from pytest_torchexport.cache.store import Cache

    cache = Cache(tmp_path)
    for i in range(6):
        cache.store(f"{i:02d}" + "f" * 62, {"status": "pass"}, [])
    paths = sorted(cache.root.rglob("*.json"))
    old = time.time() - 40 * 86400
    os.utime(paths[0], (old, old))  # unused for 40 days
    for i, path in enumerate(paths[1:], start=1):
        os.utime(path, (time.time() - i, time.time() - i))  # paths[1] the most recently used
    assert cache.prune(max_age_days=30, max_entries=3) == 3
    assert sorted(cache.root.rglob("*.json")) == paths[1:4]
    hit, _ = cache.lookup(paths[1].stem)
    assert hit is not None and hit.row == {"status": "pass"}


def test_a_tuple_subclass_that_hides_its_length_is_keyed_by_its_items():
    # e3nn's Irreps items are tuples whose __len__ raises NotImplementedError: every e3nn
    # module's key failed, so none was ever cached. The key reads them as the tuples they are.
    import torch

    from pytest_torchexport.cache.fingerprint import _Hasher

    class MulIr(tuple):
        def __len__(self):
            raise NotImplementedError

    class Act(torch.nn.Module):
        def __init__(self, mul):
            super().__init__()
            self.irreps = (MulIr((mul, "0e")), MulIr((2, "1o")))

    def key(module):
        hasher = _Hasher()
        hasher.module(module)
        return hasher.hexdigest()

    assert key(Act(3)) == key(Act(3))
    assert key(Act(3)) != key(Act(4))  # an item that changes changes the key


def test_a_module_holding_fx_code_keeps_its_key_whatever_ran_before():
    # torch.fx names its generated code <eval_with_key>.N, N counting the graphs made so far in
    # the process. e3nn's modules hold such code: in a warm run, where earlier checks were
    # reused and made no graphs, N differed and no NormActivation pass was ever reused. The
    # counter leaves the key; the generated code itself stays in it.
    import torch
    import torch.fx

    from pytest_torchexport.cache.fingerprint import _Hasher

    class Holder(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            # Traced from generated code, as e3nn's codegen does: the graph names the file it
            # was traced from, torch.fx's <eval_with_key>.N.
            self.fn = torch.fx.symbolic_trace(torch.fx.symbolic_trace(Scaled(scale)))

        def forward(self, x):
            return self.fn(x)

    class Scaled(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return x * self.scale

    def key(module):
        hasher = _Hasher()
        hasher.module(module)
        return hasher.hexdigest()

    first = key(Holder(2.0))
    torch.fx.symbolic_trace(Scaled(5.0))  # another graph in between: the counter moves on
    assert Holder(2.0).fn.graph._co_fields["co_filename"].startswith("<eval_with_key>.")
    assert key(Holder(2.0)) == first
    assert key(Holder(3.0)) != first  # what the generated code does is still keyed


def test_every_library_whose_files_are_not_hashed_has_its_version_in_the_key():
    """A file ``sources.hashed`` skips must be covered by a version in the key,
    or an upgrade of that library would reuse a stale pass. Both read ``sources.VERSIONED``; this
    holds the names in it to what they claim: each import name is installed by its distribution
    (a typo on either side would skip files without versioning them), and the key's versions are
    exactly those distributions."""
    import importlib
    from importlib import metadata

    from pytest_torchexport.cache import fingerprint, sources

    owners = metadata.packages_distributions()
    for distribution, module in sources.VERSIONED:
        if module == "pytest_torchexport":
            continue  # a development checkout is on PYTHONPATH, not installed: keyed by plugin_digest()
        try:
            metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue  # an optional library not installed here
        assert distribution in owners.get(module, []), f"{distribution} installs no top-level {module!r}"
        path = importlib.import_module(module).__file__
        assert not sources.hashed(path), f"{module} is versioned in the key but its files are hashed"

    versions = next(v for v in fingerprint.environment() if isinstance(v, tuple))
    assert [name for name, _ in versions] == [distribution for distribution, _ in sources.VERSIONED]
    # a library not in the list is hashed, file by file (torch's own dependency, sympy)
    import sympy

    assert sources.hashed(sympy.__file__)


def test_a_note_many_checks_share_is_one_line_with_their_count(tester, tmp_path):
    tester.makepyfile(test_l=linear_test(backends=["trace", "export"], examples=2))
    cache = tmp_path / "verdicts"
    tester.runpytest(f"--torchexport-cache={cache}").assert_outcomes(passed=2)
    result = tester.runpytest(f"--torchexport-cache={cache}", f"--torchexport-bundle={tmp_path / 'bundles'}")
    result.assert_outcomes(passed=2)
    said = [line for line in result.stdout.lines if "torchexport cache warning" in line]
    assert said == [
        "torchexport cache warning: 2 checks: not reused: --torchexport-bundle asks for the artifact and its "
        "inputs, which only a check makes"
    ], said
    # A folder it cannot write to (a file stands where it would be): one line naming the folder, not one
    # hashed entry path per check.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    result = tester.runpytest(f"--torchexport-cache={blocked}")
    said = [line for line in result.stdout.lines if "torchexport cache warning" in line]
    assert len(said) == 1 and said[0].startswith(
        "torchexport cache warning: 2 checks: cannot write to the cache folder"
    ), said
