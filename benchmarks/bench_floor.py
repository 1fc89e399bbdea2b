"""The plugin against the physical floor, side by side: what a check costs beyond the work itself.

Three ways of doing one model's checks, each a fresh interpreter started from this one
(a process tree under this script, which never imports torch), alternated over
``--repeat`` rounds so machine load falls on all three alike; the median is kept:

- ``plugin``: ``check()`` on the backends, ``examples=N``, ``dims={"batch": (1, 16)}`` (1..4 for
  ``big``), as a
  user runs it (each backend check in its own forked child, side by side);
- ``hand``: the lean hand-written loop (``bench_isolation.hand_check``): per backend, export,
  save, load, then ``N`` random batch sizes through eager and the loaded artifact,
  ``assert_close``;
- ``floor``: the same exports and forwards with no comparison (``hand_check(compare=False)``):
  the work itself; everything above it is the checker's.

Models: the small ones of ``bench_isolation.py`` (an MLP, a CNN, an attention encoder) on
four backends, and ``big``, whose call returns 268 MB at the recorded input
(``x.unsqueeze(-1).expand(*x.shape, 4096) * 1.5`` on a ``(4, 64, 64)`` input), on trace and
export. Printed per model: each way's wall time (the whole process, interpreter
and imports included) and peak RSS of its largest process, then plugin/hand, plugin/floor
and hand/floor; then each way's CPU time (user + system, the whole process tree) and the same ratios of it.

    python benchmarks/bench_floor.py                       # all models, 10 examples, 3 rounds
    python benchmarks/bench_floor.py --models big --repeat 1
    python benchmarks/bench_floor.py --models mlp,conv --examples 25
    python benchmarks/bench_floor.py --models mlp,conv,encoder --session   # one process a way, as a suite runs
    python benchmarks/bench_floor.py --installed   # the plugin imported from a site-packages copy
    python benchmarks/bench_floor.py --rev HEAD~3 --models mlp --repeat 7   # before/after, both as installed

``--rev REV`` (repeatable): one more way, ``plugin@REV``, the plugin of that git revision (a copy of
its package, as installed), alternated with the others in the same rounds, so a change is
measured against the code before it under the same load (this machine's noise between runs
minutes apart is larger than most changes). It implies ``--installed``, so that both
versions are imported alike.

``--installed``: the plugin way imports a copy of the package placed under a ``site-packages``
folder, as ``pip install pytest-torchexport`` places it. From a checkout (``pip install -e``)
hypothesis counts the plugin's own modules as the project's code: it parses their source
for constants to draw, in the test's process and in any child forked after they were
imported, which a user's install never pays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from revisions import install_revision  # a sibling module: python benchmarks/bench_floor.py

HERE = Path(__file__).resolve().parent
SMALL = ["trace", "script", "onnx", "export"]
BIG = ["trace", "export"]
MODELS = {"mlp": SMALL, "conv": SMALL, "encoder": SMALL, "big": BIG}
# The batch range every way draws from. The big model's stays at its recorded 4: at 16 one
# call returns 1 GB, and the three ways would time memory traffic this comparison is not about.
MAX_BATCH = {"big": 4}
WAYS = ("plugin", "hand", "floor")
#: ``--standalone-off``: a fourth way, the plugin with ``standalone=False`` (no fresh interpreter
#: loading each artifact), to say how much of plugin/hand is that step (docs/howto-standalone.md).
EXTRA_WAYS = ("plugin-nostandalone",)


def child(way: str, model_names: str, backends: list[str], examples: int) -> None:
    """One way on one model (or, joined by ``+``, several one after another, as a test session
    checks them), in this (fresh) process; prints its own peak RSS as JSON."""
    import resource
    import tempfile

    import torch
    from bench_isolation import MODELS as SMALL_MODELS
    from bench_isolation import hand_check
    from torch import nn

    class Big(nn.Module):
        def forward(self, x):
            return x.unsqueeze(-1).expand(*x.shape, 4096) * 1.5

    statuses: dict[str, str] = {}
    for model_name in model_names.split("+"):
        torch.manual_seed(0)
        if model_name == "big":
            model, example = Big().eval(), torch.randn(4, 64, 64)
        else:
            cls, shape = SMALL_MODELS[model_name]
            model, example = cls().eval(), torch.randn(*shape)
        if way.startswith("plugin"):
            from pytest_torchexport import check

            dims = {"batch": (1, MAX_BATCH.get(model_name, 16))}
            report = check(
                model,
                (example,),
                backends=backends,
                examples=examples,
                dims=dims,
                seed=0,
                standalone=way != "plugin-nostandalone",
            )
            statuses.update({f"{model_name}:{r.backend}": r.status for r in report.results})
        else:
            gen = torch.Generator().manual_seed(0)
            with tempfile.TemporaryDirectory() as scratch:
                for backend in backends:
                    hand_check(
                        model,
                        example,
                        backend,
                        examples,
                        gen,
                        Path(scratch),
                        where=model_name,
                        compare=way == "hand",
                        max_batch=MAX_BATCH.get(model_name, 16),
                    )
            statuses.update({f"{model_name}:{b}": "done" for b in backends})
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    plugin_from = sys.modules["pytest_torchexport"].__file__ if "pytest_torchexport" in sys.modules else None
    print(json.dumps({"peak_mb": peak / 1024, "statuses": statuses, "plugin_from": plugin_from}))


#: ``--installed``: the folder a copy of the package is imported from (a ``site-packages``).
INSTALLED: list[str] = []


def install_copy(into: Path) -> str:
    """A copy of the package under ``into/site-packages``, as pip installs it; that folder."""
    import shutil

    import pytest_torchexport

    site = into / "site-packages"
    shutil.copytree(
        Path(pytest_torchexport.__file__).parent,
        site / "pytest_torchexport",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return str(site)


#: ``--rev``: way name (``plugin@REV``) -> the folder a copy of that revision's package is imported from.
REVISIONS: dict[str, str] = {}


def run_one(way: str, model_name: str, backends: list[str], examples: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        way,
        "--models",
        model_name,
        "--backends",
        ",".join(backends),
        "--examples",
        str(examples),
    ]
    installed = [REVISIONS[way]] if way in REVISIONS else INSTALLED
    paths = [str(HERE), *installed, os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the whole tree: each process waited for by its parent
    if proc.returncode:
        sys.exit(f"{way} on {model_name} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall": wall, "cpu": cpu, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="alternated rounds; the median is kept")
    parser.add_argument("--backends", default=None, help="override the backends of every model")
    parser.add_argument(
        "--standalone-off", action="store_true", help="also time the plugin with standalone=False (plugin-nostandalone)"
    )
    parser.add_argument("--rounds", action="store_true", help="print every round's wall time, not only the median")
    parser.add_argument(
        "--session",
        action="store_true",
        help="each way checks all the models in one process, one after another, as a test "
        "session does (imports, exporters' first use and the standalone loader paid once)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="the plugin way imports a copy of the package under a site-packages folder, as a user's "
        "install (from a checkout, hypothesis parses the plugin's own source as the project's)",
    )
    parser.add_argument(
        "--rev",
        action="append",
        default=[],
        help="also time the plugin of this git revision (way plugin@REV), as installed; repeatable",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.models, args.backends.split(","), args.examples)
        return
    import tempfile

    if args.installed or args.rev:  # both sides of a before/after imported alike, as installed
        INSTALLED.append(install_copy(Path(tempfile.mkdtemp(prefix="bench-floor-installed-"))))
    for rev in args.rev:
        REVISIONS[f"plugin@{rev}"] = install_revision(rev, Path(tempfile.mkdtemp(prefix="bench-floor-rev-")))
    if args.session:
        models = args.models.split(",")
        if "big" in models or len({tuple(MODELS[m]) for m in models}) > 1:
            sys.exit("--session takes models that share their backends (the small ones)")
        MODELS["+".join(models)] = MODELS[models[0]]
        args.models = "+".join(models)
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cpus; "
        f"{args.examples} examples; median of {args.repeat} alternated rounds; whole processes"
        + ("; one process a way for all the models" if args.session else "")
        + (f"; the plugin imported from {INSTALLED[0]}" if INSTALLED else "")
    )
    ways = WAYS + (EXTRA_WAYS if args.standalone_off else ()) + tuple(REVISIONS)
    print(
        f"{'model':8} {'backends':26} "
        + " ".join(f"{w + ' s':>9}" for w in WAYS)
        + " "
        + " ".join(f"{w + ' MB':>10}" for w in WAYS)
        + f" {'plugin/hand':>12} {'plugin/floor':>13} {'hand/floor':>11}"
    )
    for name in args.models.split(","):
        backends = args.backends.split(",") if args.backends else MODELS[name]
        times: dict[str, list[float]] = {w: [] for w in ways}
        cpus: dict[str, list[float]] = {w: [] for w in ways}
        peaks: dict[str, float] = dict.fromkeys(ways, 0.0)
        for round_ in range(args.repeat):
            order = ways[round_ % len(ways) :] + ways[: round_ % len(ways)]  # rotate who runs first
            for way in order:
                got = run_one(way, name, backends, args.examples)
                times[way].append(got["wall"])
                cpus[way].append(got["cpu"])
                peaks[way] = max(peaks[way], got["peak_mb"])
                expected_from = REVISIONS.get(way) or (INSTALLED[0] if INSTALLED and way.startswith("plugin") else None)
                if expected_from and not got["plugin_from"].startswith(expected_from):
                    sys.exit(f"the {way} way imported {got['plugin_from']}, not the copy in {expected_from}")
                if way.startswith("plugin") and any(s != "pass" for s in got["statuses"].values()):
                    print(f"  note: the plugin's verdicts on {name}: {got['statuses']}")
        t = {w: statistics.median(v) for w, v in times.items()}
        print(
            f"{name:8} {','.join(backends):26} "
            + " ".join(f"{t[w]:9.1f}" for w in WAYS)
            + " "
            + " ".join(f"{peaks[w]:10.0f}" for w in WAYS)
            + f" {t['plugin'] / t['hand']:12.2f} {t['plugin'] / t['floor']:13.2f} {t['hand'] / t['floor']:11.2f}"
        )
        if args.standalone_off:
            lean = t["plugin-nostandalone"]
            print(
                f"{'':8} {'standalone=False':26} {lean:9.1f} s: plugin-nostandalone/hand {lean / t['hand']:.2f}, "
                f"the standalone step {t['plugin'] - lean:+.1f} s of the plugin's {t['plugin']:.1f} s"
            )
        for way in REVISIONS:
            print(
                f"{'':8} {way:26} {t[way]:9.1f} s: {way}/hand {t[way] / t['hand']:.2f}, "
                f"plugin/{way} {t['plugin'] / t[way]:.2f}; CPU {statistics.median(cpus[way]):.1f} s, "
                f"plugin/{way} {statistics.median(cpus['plugin']) / statistics.median(cpus[way]):.2f}"
            )
        c = {w: statistics.median(v) for w, v in cpus.items()}
        print(
            f"{'':8} {'CPU s (the process tree)':26} "
            + " ".join(f"{c[w]:9.1f}" for w in WAYS)
            + f"{'':32} {c['plugin'] / c['hand']:12.2f} {c['plugin'] / c['floor']:13.2f} {c['hand'] / c['floor']:11.2f}"
        )
        if args.rounds:
            print(f"{'':8} rounds: " + "; ".join(f"{w} " + " ".join(f"{s:.1f}" for s in times[w]) for w in ways))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
