"""examples/ split into 3 CI shards with pytest-split, merged: the one-run report, and one gate.

Slow (the examples run four times); CI runs it. CI=true makes the search derandomized, so
the shards and the single run draw the same inputs and must give the same verdicts.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def pytest_run(cwd, *args):
    env = {**os.environ, "CI": "true"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def rows(path):
    data = json.loads(Path(path).read_text())
    return {
        r["nodeid"]: (r["status"], r["module"], json.dumps(r.get("failing_example"), sort_keys=True))
        for r in data["results"]
    }


def test_three_pytest_split_shards_merge_into_the_one_run_report(tmp_path):
    pytest.importorskip("pytest_split")
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    whole = pytest_run(work, ".", "--torchexport-report=whole.json")
    assert whole.returncode == 0, whole.stdout[-3000:]
    for group in (1, 2, 3):
        shard = pytest_run(work, ".", "--splits", "3", "--group", str(group), f"--torchexport-report=shard{group}.json")
        assert shard.returncode == 0, shard.stdout[-3000:]
    merge = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_torchexport",
            "merge",
            "shard1.json",
            "shard2.json",
            "shard3.json",
            "-o",
            "merged.json",
            "--baseline",
            "whole.json",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merge.returncode == 0, merge.stdout + merge.stderr
    merged, one_run = rows(work / "merged.json"), rows(work / "whole.json")
    assert merged == one_run  # statuses, modules and failing examples, item by item
    assert len(merged) > 20

    # A regression in one shard fails the merged gate: a passing row turned mismatch.
    shard = json.loads((work / "shard2.json").read_text())
    victim = next(r for r in shard["results"] if r["status"] == "pass")
    victim["status"] = "mismatch"
    (work / "shard2.json").write_text(json.dumps(shard))
    gate = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_torchexport",
            "merge",
            "shard1.json",
            "shard2.json",
            "shard3.json",
            "-o",
            "merged.md",
            "--baseline",
            "whole.json",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert victim["nodeid"] in gate.stdout
