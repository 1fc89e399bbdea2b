"""benchmarks/code_health.py --check-path: the package files one check runs, counted by tracing it,
and docs/one-check.md, the page that reads that check in order, held to the trace."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traced_check(code_health):
    """One check traced through pytest (about 15 s): its files and the calls between them."""
    counts = code_health.check_path(None)
    files = [entry.split(" (")[0] for entry in counts["files to follow one check"]]
    return counts, files, counts["calls between them"]


@pytest.mark.slow
def test_one_traced_check_counts_the_files_whose_functions_ran(code_health, traced_check):
    counts, files, calls = traced_check
    # the path from the hook to the row, the forked child's stages included
    for expected in (
        "plugin.py",
        "engine/pipeline.py",
        "isolation/runner.py",
        "backends/trace.py",
        "search/search.py",
        "results/report.py",
    ):
        assert expected in files
    # A ceiling, so the count cannot creep back up: 69 before modules were merged, 58 after (70 and 59 counted
    # before the tracer stopped counting a comprehension a module's import runs: results/bundle_files.py's).
    # A new module on a check's path belongs in the module that owns its concept; if it is a concept of
    # its own, raise the ceiling in the same commit and say why there.
    assert len(files) <= 58, f"one check now runs through {len(files)} package files (58 at most): {files}"
    # run, not imported: a backend the check never selected is not a file to follow, nor a module
    # whose only code that ran was its import's (results/bundle_files.py's table of dtypes)
    assert "backends/onnx.py" not in files and "backends/openvino.py" not in files
    assert "results/bundle_files.py" not in files
    assert counts["  their lines"] == sum(
        len((ROOT / "pytest_torchexport" / f).read_text().splitlines()) for f in files
    )
    # the calls: pytest calls the hooks, the plugin the adapters, the pipeline the search
    assert {"- -> plugin.py", "plugin.py -> glue/adapters.py", "engine/pipeline.py -> search/search.py"} <= set(calls)
    assert all(caller == "-" or caller.endswith(".py") for caller, _ in (c.split(" -> ") for c in calls))
    lines = []
    assert code_health.main(["--rev", "HEAD"], out=lines.append) == 0
    assert not any(line.startswith("files to follow one check") for line in lines), "the traced run is opt-in"


@pytest.mark.slow
def test_the_one_check_page_is_true_of_the_traced_check(code_health, traced_check):
    """docs/one-check.md names every file the check runs once, each under a file that calls it,
    and its reading path (what a reader opens in order) is twelve files at most."""
    _, files, calls = traced_check
    page = (ROOT / "docs" / "one-check.md").read_text()
    assert code_health.page_problems(page, files, calls) == []
    path, under, leaves = code_health.reading_path(page)
    assert path[0] == "plugin.py" and len(path) <= 12
    assert len(path) + sum(map(len, under.values())) + len(leaves) == len(files)
    assert traced_check[0]["  read in order"] == path


def test_page_problems_says_what_is_untrue(code_health):
    """Each rule of page_problems, on a small page and a made-up trace: each can fail."""
    page = "\n".join(
        [
            "## 1. `plugin.py`: hooks",
            "- `glue/items.py`: items",
            "## 2. `engine/pipeline.py`: the check",
            "- `stages/check.py`: the Check",
            "## Used by every layer",
            "- `options.py`: options",
        ]
    )
    files = ["plugin.py", "glue/items.py", "engine/pipeline.py", "stages/check.py", "options.py"]
    calls = ["- -> plugin.py", "plugin.py -> glue/items.py", "glue/items.py -> engine/pipeline.py"]
    calls += ["engine/pipeline.py -> stages/check.py", "stages/check.py -> options.py"]
    assert code_health.page_problems(page, files, calls) == []
    assert code_health.page_problems(page, [*files, "freed.py"], calls) == [
        "freed.py: runs in the check but the page does not name it"
    ]
    assert code_health.page_problems(page, files[:-1], calls) == [
        "options.py: named on the page but no longer runs in the check"
    ]
    moved = [c.replace("engine/pipeline.py -> stages/check.py", "plugin.py -> stages/check.py") for c in calls]
    assert code_health.page_problems(page, files, moved) == [
        "stages/check.py: named under engine/pipeline.py, which does not call it (['plugin.py'])"
    ]
    late = [c for c in calls if c != "glue/items.py -> engine/pipeline.py"] + ["stages/check.py -> engine/pipeline.py"]
    assert code_health.page_problems(page, files, late) == [
        "engine/pipeline.py: on the reading path, but nothing before it calls it (['stages/check.py'])"
    ]
    twice = page + "\n- `glue/items.py`: again"
    assert code_health.page_problems(twice, files, calls) == ["glue/items.py: named 2 times"]
    long = "\n".join(f"## {n}. `m{n}.py`: step" for n in range(1, 14))
    chain = ["- -> m1.py"] + [f"m{n}.py -> m{n + 1}.py" for n in range(1, 13)]
    assert code_health.page_problems(long, [f"m{n}.py" for n in range(1, 14)], chain) == [
        "the reading path has 13 files (12 at most)"
    ]


@pytest.mark.slow
def test_the_core_alone_runs_through_fewer_files(traced_check):
    """The files reached without entering an optional stage (``stages/optional.py``'s table): the
    optional stages' modules, and what only they reach, are not among them."""
    counts, files, _ = traced_check
    core = [entry.split(" (")[0] for entry in counts["files to follow the core"]]
    assert "engine/pipeline.py" in core and "search/search.py" in core  # the core is the check's spine
    for optional in ("stages/standalone.py", "stages/cpp_load.py", "isolation/cpp.py"):
        assert optional in files and optional not in core
    # A ceiling, as for the whole check: the core's files can only become fewer.
    assert len(core) <= 51, f"the core now runs through {len(core)} package files (51 at most): {core}"
