"""Mark a real library's own pytest suite with a conftest (test bodies untouched) against the
same suite plain, in one run: wall time, peak memory, the machine's load, each item's module
and status, where the checks' time went, and what a budget left untried.

    python benchmarks/real_suite.py PATH/TO/CHECKOUT [--tests PATH...] [-k EXPR]
        [-n 1] [--backends trace,script,onnx,export] [--examples 5] [--budget 30s|off] [--no-plain] [--warm [--pairs K]]
        [--rev REV [--rounds K]]

The checkout is the library's own source (installed with ``pip install --no-deps -e``
first); nothing of it is copied here. A ``conftest.py`` that adds a bare ``torchexport``
marker in ``pytest_collection_modifyitems`` (the usual way a team marks a whole suite) is
written next to its tests for the run and removed afterwards. The plain run is the same
command with ``-p no:torchexport`` and no conftest.

Each run's CPU seconds are its whole process tree's (every worker and check child is waited
for), and the marked run's extra CPU over the plain one divided by the cores is the *floor*: the
least wall time the checks could add on this machine were they spread perfectly. The exporters'
seconds are the rows' lowering (``export_s``) and captures (``capture_s``; a capture shared by a
test's backends counted once), printed against the marked run's extra CPU. ``--warm`` gives the marked run
an empty verdict cache folder and then runs it again with that folder: every check whose verdict
was stored is reused, what is left is the plugin's fixed cost (warm against plain); it prints
how many rows were reused and checks each against the row it reuses. ``--pairs K`` runs K
(plain, warm) pairs alternately after the marked run and prints the median ratio: one plain run
of a small suite moves by a fifth from one run to the next on a shared machine. ``--rev REV``
runs the marked run again with the package as it was at git revision ``REV`` (``revisions.py``),
``--rounds K`` times each, alternately and each way first in turn, and prints each way's median
against the checkout's, and each revision's rows against the checkout's as ``verdicts.py``
compares them (status, examples, failing input, errors, findings, message).

Memory is measured two ways, since the checks' children are forked copies of the test's
process and share its pages until they write them: the largest single process
(``ru_maxrss`` of the waited-for children) and the peak of the whole process tree's
proportional set size (PSS, each shared page counted once across the processes that map it),
sampled every 0.5 s from ``/proc``: each sample reads every process's ``smaps_rollup``, and at
0.2 s the sampler itself took a fifth of one of the two cores. The load average is printed
before and after each run: this machine is shared, so compare plain and marked only within one
run. Figures: docs/report.md, "The benchmarks".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import verdicts  # sibling modules: python benchmarks/real_suite.py
from revisions import install_revision

CONFTEST = """
# Written by pytest-torchexport's benchmarks/real_suite.py: marks every test, bodies untouched.
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.torchexport({kwargs}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--tests", nargs="+", default=["tests"], help="test paths (files or folders)")
    parser.add_argument("-k", default=None)
    parser.add_argument("-n", default=None, help="pytest-xdist workers, for both runs (docs/report.md's figures: -n 1)")
    parser.add_argument("--backends", default="trace,script,onnx,export")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument(
        "--timeout", type=int, default=None, help="the marker's timeout= (the plugin's default if not given)"
    )
    parser.add_argument(
        "--budget", default=None, help="--torchexport-budget=DURATION|off (the plugin's default if not given)"
    )
    parser.add_argument("--marker-budget", default=None, help="the marker's budget= instead, e.g. 30s")
    parser.add_argument("--report", type=Path, default=None, help="keep the marked run's JSON report here")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain run (no marked/plain ratio)")
    parser.add_argument("--warm", action="store_true", help="then the marked run again on its verdict cache")
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="with --warm: this many (plain, warm) pairs after the marked run, run alternately, so a drift "
        "of the machine's load reaches both sides; prints each ratio and their median",
    )
    parser.add_argument("--rev", action="append", default=[], help="a git revision to compare the marked run with")
    parser.add_argument("--rounds", type=int, default=1, help="with --rev: marked runs per way, alternated")
    opts = parser.parse_args()
    if opts.rev and opts.warm:
        parser.error("--rev compares first runs: run --warm on its own")

    conftest = opts.checkout / "conftest.py"
    if conftest.exists():
        sys.exit(f"{conftest} exists: run on a checkout without a root conftest.py")
    # A run stopped by `timeout` (SIGTERM) still removes its conftest: the checkout stays plain.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = opts.report or Path(tempfile.mkdtemp()) / "report.json"
    base = (
        [
            sys.executable,
            "-m",
            "pytest",
            *opts.tests,
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "--durations=5",
        ]
        + (["-k", opts.k] if opts.k else [])
        + (["-n", opts.n] if opts.n else [])
    )
    plain = None
    if not opts.no_plain:
        plain = _run([*base, "-p", "no:torchexport"], opts.checkout, "plain")
    conftest.write_text(_conftest(opts))
    cmd = [*base, f"--torchexport-backends={opts.backends}"]
    if opts.warm:  # without it the marked run stores nothing (-p no:cacheprovider: the cache is off), as before
        cmd.append(f"--torchexport-cache={tempfile.mkdtemp(prefix='real-suite-cache-')}")
    if opts.budget is not None:
        cmd.append(f"--torchexport-budget={opts.budget}")
    warm_report = report.with_name(report.stem + "-warm.json")
    pairs: list[tuple[dict, dict]] = []
    try:
        marked = _run([*cmd, f"--torchexport-report={report}"], opts.checkout, "marked")
        if opts.rev:
            _compare_revisions(opts, cmd, report, marked, plain)
        if opts.warm:
            for i in range(max(1, opts.pairs)):
                if plain is not None and i > 0:
                    conftest.unlink()  # the plain run as the first one: no conftest
                    plain = _run([*base, "-p", "no:torchexport"], opts.checkout, f"plain {i + 1}")
                    conftest.write_text(_conftest(opts))
                warm = _run([*cmd, f"--torchexport-report={warm_report}"], opts.checkout, f"warm {i + 1}")
                if plain is not None:
                    pairs.append((plain, warm))
    finally:
        conftest.unlink(missing_ok=True)
    if plain is not None:
        cores = os.cpu_count() or 1
        first = pairs[0][0] if pairs else plain
        floor = max(0.0, marked["cpu_s"] - first["cpu_s"]) / cores
        print(
            f"marked/plain: {marked['wall_s'] / first['wall_s']:.2f}x wall time, "
            f"{marked['tree_pss_mb'] / first['tree_pss_mb']:.2f}x peak tree PSS, "
            f"{marked['largest_mb'] / first['largest_mb']:.2f}x largest process; "
            f"CPU {first['cpu_s']:.0f} -> {marked['cpu_s']:.0f} s: the floor (extra CPU / {cores} cores) "
            f"{floor:.0f} s of the {marked['wall_s'] - first['wall_s']:.0f} s added"
        )
        ratios = []
        for i, (p, w) in enumerate(pairs, 1):
            ratios.append(w["wall_s"] / p["wall_s"])
            print(
                f"warm/plain, pair {i}: {ratios[-1]:.2f}x wall time "
                f"(+{w['wall_s'] - p['wall_s']:.1f} s, CPU +{w['cpu_s'] - p['cpu_s']:.1f} s)"
            )
        if len(ratios) > 1:
            print(f"warm/plain, median of {len(ratios)} pairs: {statistics.median(ratios):.2f}x")
    if opts.warm and report.exists() and warm_report.exists():
        _print_reuse(json.loads(report.read_text())["results"], json.loads(warm_report.read_text())["results"])
    if not report.exists():
        print("no report written")
        return 1
    rows = json.loads(report.read_text())["results"]
    print(f"\n{len(rows)} rows\n")
    print(f"{'test':60} {'backend':8} {'module':24} status")
    for r in rows:
        print(f"{r['test'].split('::', 1)[-1][:60]:60} {r['backend']:8} {r['module'] or '-':24} {r['status']}")
    print()
    _print_exporters(rows, None if plain is None else marked["cpu_s"] - plain["cpu_s"])
    _print_timings(rows)
    _print_heaviest(rows)
    _print_budgeted(rows)
    print()
    for (module, status), n in sorted(collections.Counter((r["module"] or "-", r["status"]) for r in rows).items()):
        print(f"{module:24} {status:14} {n}")
    return 0


def _compare_revisions(
    opts: argparse.Namespace, cmd: list[str], report: Path, marked: dict, plain: dict | None
) -> None:
    """The marked run with each ``--rev`` against the checkout's, alternated over ``--rounds``;
    the checkout's first run (``marked``) is its first round."""
    packages = {"checkout": None}
    for rev in opts.rev:
        packages[rev] = install_revision(rev, Path(tempfile.mkdtemp(prefix="real-suite-rev-")))
    reports = {
        way: report if way == "checkout" else report.with_name(f"{report.stem}-{i}.json")
        for i, way in enumerate(packages)
    }
    walls: dict[str, list[float]] = {way: [] for way in packages}
    walls["checkout"].append(marked["wall_s"])
    for i in range(max(1, opts.rounds)):
        order = list(packages) if i % 2 == 0 else list(reversed(packages))  # each way first in turn
        for way in order:
            if way == "checkout" and i == 0:
                continue  # the marked run above
            env = None if packages[way] is None else {**os.environ, "PYTHONPATH": packages[way]}
            run = _run([*cmd, f"--torchexport-report={reports[way]}"], opts.checkout, f"marked, {way}", env=env)
            walls[way].append(run["wall_s"])
    base = statistics.median(walls["checkout"])
    for way, times in walls.items():
        median = statistics.median(times)
        against = f", {median / plain['wall_s']:.2f}x plain" if plain else ""
        print(
            f"{way}: median {median:.1f} s of {len(times)} ({', '.join(f'{t:.1f}' for t in times)})"
            f"{against}, {median / base:.2f}x the checkout"
        )
    for way in opts.rev:  # each revision's last rows against the checkout's first
        print(f"verdicts, {way} against the checkout (benchmarks/verdicts.py):")
        verdicts.main(str(reports[way]), str(reports["checkout"]))


def _conftest(opts: argparse.Namespace) -> str:
    kwargs = {"examples": opts.examples}
    if opts.timeout is not None:
        kwargs["timeout"] = opts.timeout
    if opts.marker_budget is not None:
        kwargs["budget"] = opts.marker_budget
    return CONFTEST.format(kwargs=", ".join(f"{k}={v!r}" for k, v in kwargs.items()))


#: What a reused row must repeat of the row it reuses: its verdict, its words, its failing input.
_VERDICT_KEYS = ("status", "message", "cause_kind", "failing_example", "findings")


def _print_reuse(cold: list[dict], warm: list[dict]) -> None:
    """How many of the warm run's rows were reused, why the others ran again, and whether each
    reused row repeats the cold row it stands for."""

    def key(r: dict) -> tuple:  # a test's backend has one row per kind of call
        return (r["nodeid"], r["backend"], r.get("device"), r.get("call"))

    by_id = {key(r): r for r in cold}
    reused = [r for r in warm if r.get("cached")]
    differ = []
    for r in reused:
        before = by_id.get(key(r))
        if before is None or any(before.get(k) != r.get(k) for k in _VERDICT_KEYS):
            differ.append(r)
    print(
        f"warm: {len(reused)} of {len(warm)} rows reused "
        f"({collections.Counter(r['status'] for r in reused).most_common()}); "
        f"{len(differ)} reused rows differ from the rows they reuse"
    )
    for r in differ[:10]:
        print(f"  differs: {r['nodeid']} {r['backend']}")
    again = collections.Counter(r["status"] for r in warm if not r.get("cached"))
    if again:
        print(f"warm: ran again: {again.most_common()}")


def _run(cmd: list[str], cwd: Path, name: str, env: dict[str, str] | None = None) -> dict:
    """One pytest run with its wall time, load before and after, and peak memory."""
    before = os.getloadavg()
    largest_before = _largest_child_mb()
    cpu_before = _children_cpu_s()
    sampler = _TreeSampler()
    t0 = time.perf_counter()
    # Its own process group: a stopped benchmark stops the run's workers and checks with it.
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    sampler.start(proc.pid)
    try:
        out, err = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu_before
    sampler.stop()
    after = os.getloadavg()
    # ru_maxrss of the children keeps the largest process waited for so far: a later run's own
    # figure only where it is the larger (said "at most" otherwise).
    largest = _largest_child_mb()
    own = largest > largest_before
    lines = out.strip().splitlines()
    slowest = [line for line in lines if re.match(r"\d+\.\d+s (call|setup) ", line)][:5]  # --durations
    print(f"{name}: {lines[-1] if lines else err[-2000:]}" + "".join(f"\n  {line.strip()}" for line in slowest))
    print(
        f"{name}: {wall:.0f} s wall, {cpu:.0f} s CPU, peak tree PSS {sampler.peak_mb:.0f} MB ({sampler.peak_procs} processes), "
        f"largest process {largest:.0f} MB{'' if own else ' (at most)'}; load {_fmt(before)} before, "
        f"{_fmt(after)} after"
    )
    return {"wall_s": wall, "cpu_s": cpu, "tree_pss_mb": sampler.peak_mb, "largest_mb": largest}


class _TreeSampler:
    """The peak PSS of a process and all its descendants, read from /proc every 0.5 s."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.peak_procs = 0
        self._done = threading.Event()

    def start(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self, root: int) -> None:
        while not self._done.wait(0.5):
            pids = _descendants(root)
            total = sum(_pss_kb(p) for p in pids) / 1024
            if total > self.peak_mb:
                self.peak_mb, self.peak_procs = total, len(pids)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children[ppid].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fmt(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def _print_timings(rows: list[dict]) -> None:
    """Where the checks' time went: each timing summed over the rows, per backend and in all
    (``total_s`` is each check's wall time from its start; the stages are parts of it). A
    ``shared_*`` timing is the test's process's work for every backend at once, copied onto each
    of its rows: the "all" line counts it once per test."""
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    shared: dict[tuple[str, str], float] = {}
    for r in rows:
        for key, value in (r.get("timings") or {}).items():
            sums[r["backend"]][key] += value
            if key.startswith("shared_"):
                shared[r["test"], key] = max(shared.get((r["test"], key), 0.0), value)
            else:
                sums["all"][key] += value
    for (_, key), value in shared.items():
        sums["all"][key] += value
    if not sums:
        return
    keys = sorted(sums["all"], key=lambda k: -sums["all"][k])
    print(f"{'seconds summed over rows':24} " + " ".join(f"{k.removesuffix('_s')[:10]:>10}" for k in keys))
    for backend, counter in sums.items():
        print(f"{backend:24} " + " ".join(f"{counter[k]:10.1f}" for k in keys))


def _print_heaviest(rows: list[dict]) -> None:
    """The test whose checks cost most, each of its rows' timings: where a heavy model's time goes."""
    per_test: dict[str, float] = collections.Counter()
    for r in rows:
        per_test[r["test"]] += (r.get("timings") or {}).get("total_s", 0.0)
    if not per_test:
        return
    test = max(per_test, key=per_test.get)
    print(f"\nheaviest test: {test} ({per_test[test]:.0f} s of checks summed over its rows)")
    for r in rows:
        if r["test"] == test:
            timings = " ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in sorted((r.get("timings") or {}).items()))
            print(f"  {r['backend']:8} {r['status']:14} {timings}")


def _print_budgeted(rows: list[dict]) -> None:
    budgeted = [r for r in rows if r.get("budget")]
    print(f"\n{len(budgeted)} of {len(rows)} rows budgeted")
    for r in budgeted:
        b = r["budget"]
        print(
            f"  {r['test'].split('::', 1)[-1][:50]:50} {r['backend']:8} limit {b.get('limit_s')} s, spent "
            f"{b.get('spent_s')} s, untried {b.get('untried')}, skipped {b.get('skipped', [])}"
        )
    # What the budget is meant to bound, measured around it: each check's wall time after its exports
    # (export, save, load back) plus all of the test's process's shared work before the children forked.
    print("\ntime beyond the exports per row: its check's wall time after them + the test's process's shared work")
    for r in rows:
        t = r.get("timings") or {}
        if "after_exports_s" not in t:
            continue
        own, shared = t["after_exports_s"], t.get("shared_s", 0.0)
        print(
            f"  {r['test'].split('::', 1)[-1][:50]:50} {r['backend']:8} {own:6.1f} + {shared:5.1f} = {own + shared:6.1f} s "
            f"(budget's count {(r.get('budget') or {}).get('spent_s', '-')})"
        )


def _print_exporters(rows: list[dict], extra_cpu_s: float | None) -> None:
    """The exporters' seconds: each row's lowering (``export_s``) and its own captures, and a capture
    shared by a test's backends once (a row's ``capture_s`` holds the shared capture's seconds plus
    any capture of its own, e.g. torch.onnx's strict fallback; the shared one is the least of a test's
    ``capture: shared`` rows). Against the marked run's CPU beyond the plain run's, where measured."""
    exports = 0.0
    shared: dict[str, float] = {}
    for r in rows:
        t = r.get("timings") or {}
        if r.get("capture") == "shared":
            shared[r["test"]] = min(shared.get(r["test"], t.get("capture_s", 0.0)), t.get("capture_s", 0.0))
    for r in rows:
        t = r.get("timings") or {}
        exports += t.get("export_s", 0.0) + t.get("capture_s", 0.0)
        if r.get("capture") == "shared":
            exports -= shared[r["test"]]
    exports += sum(shared.values())
    against = f" of the checks' extra CPU {extra_cpu_s:.0f} s ({exports / extra_cpu_s:.0%})" if extra_cpu_s else ""
    print(f"exporters: {exports:.0f} s{against}; {len(shared)} tests shared a capture")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _largest_child_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


if __name__ == "__main__":
    raise SystemExit(main())
