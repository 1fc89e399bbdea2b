"""What signing the verdict cache's entries costs (issue 43), per entry.

Stores and looks up the same entries in a fresh folder twice, without ``TORCHEXPORT_CACHE_SECRET``
and with it, alternating the two in rounds (this machine's load changes between runs minutes
apart), and prints the median time per entry of each and their difference: the cost of the
HMAC-SHA256 and of the canonical JSON it is computed over. The entry is sized like a real one:
a failing row's fields (a pass row carries fewer), a 2 kB message, eight findings and
``--files`` (path, sha256) pairs.

    python benchmarks/bench_cache_sign.py
    python benchmarks/bench_cache_sign.py --entries 500 --rounds 7 --files 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import json
import timeit

from pytest_torchexport.cache import sources
from pytest_torchexport.cache.store import VERSION, Cache


def row() -> dict:
    return {
        "status": "pass", "backend": "onnx", "device": "cpu", "module": "Encoder", "examples": 25,
        "max_abs_err": 8.9e-08, "max_rel_err": 1.2e-06, "atol": 1e-05, "rtol": 1.3e-06,
        "message": "x" * 2000,
        "findings": [{"kind": "numeric_noise", "detail": "d" * 120, "where": f"models.py:{i}"} for i in range(8)],
        "compared": {"elements": 4096, "of": 4096, "leaves": {"(the output)": 4096}},
        "sizes": {"batch": [1, 32]}, "latency_ms": {"eager": 1.9, "artifact": 0.8, "input": "x: float32[4, 16]"},
    }


def one_round(folder: Path, secret: str | None, keys: list[str], files: list[list[str]]) -> tuple[float, float]:
    cache = Cache(folder, secret=secret)
    t0 = time.perf_counter()
    for key in keys:
        assert cache.store(key, row(), files) is None
    t1 = time.perf_counter()
    for key in keys:
        hit, note = cache.lookup(key)
        assert hit is not None and note is None, note
    t2 = time.perf_counter()
    return (t1 - t0) / len(keys), (t2 - t1) / len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=40, help="(path, sha256) pairs per entry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Real files, so a lookup re-checks their digests as a run does (memoised per process, as there).
        source_dir = Path(tmp) / "src"
        source_dir.mkdir()
        files = []
        for i in range(args.files):
            path = source_dir / f"m{i}.py"
            path.write_text(f"x = {i}\n" * 50)
            files.append([str(path), sources.digest(str(path))])
        keys = [f"{i:064x}" for i in range(args.entries)]
        times: dict[str, list[tuple[float, float]]] = {"unsigned": [], "signed": []}
        for r in range(args.rounds):
            for name, secret in (("unsigned", None), ("signed", "s" * 32))[:: 1 if r % 2 == 0 else -1]:
                folder = Path(tempfile.mkdtemp(dir=tmp))
                times[name].append(one_round(folder, secret, keys, files))
        entry = next(Path(tmp).rglob("*.json"))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.entries} entries of {entry.stat().st_size} bytes "
              f"({args.files} files), {args.rounds} rounds, median per entry:")
        med = {name: [statistics.median(t[i] for t in runs) * 1e6 for i in (0, 1)] for name, runs in times.items()}
        for i, what in enumerate(("store", "lookup")):
            u, s = med["unsigned"][i], med["signed"][i]
            print(f"  {what:6}  unsigned {u:7.1f} us  signed {s:7.1f} us  difference {s - u:+7.1f} us")
        # The work signing adds, without the file system's noise: on store, the entry read back
        # from its JSON and signed; on lookup, the signature computed again.
        cache = Cache(Path(tmp), secret="s" * 32)
        entry = {"version": VERSION, "key": keys[0], "created": "2026-11-25T00:00:00+00:00",
                 "plugin": "pytest-torchexport 0.1.0", "files": files, "row": row()}
        n = 2000
        store = min(timeit.repeat(lambda: cache._sign(json.loads(json.dumps(entry, default=str))),
                                  number=n, repeat=5)) / n
        lookup = min(timeit.repeat(lambda: cache._sign(entry), number=n, repeat=5)) / n
        print(f"  signing alone (best of 5 x {n}): store +{store * 1e6:.1f} us, lookup +{lookup * 1e6:.1f} us per entry")


if __name__ == "__main__":
    main()
