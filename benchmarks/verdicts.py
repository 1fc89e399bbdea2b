"""Did a change move a verdict? Two JSON reports of the same run, compared without timings.

Each row is keyed by (nodeid, device) and compared on what a verdict is: the status, the
examples run, the failing example, the max errors (rounded to 3 significant digits, since
the search's draws are seeded), the kinds of findings and the message's first line with
its numbers masked. Timings, latencies, paths and anything else that depends on the
machine's load are ignored. Prints one line per difference and exits 1 if there is any.

    python -m pytest examples --torchexport-report=before.json     # on the old commit
    python -m pytest examples --torchexport-report=after.json      # on the new one
    python benchmarks/verdicts.py before.json after.json
    python benchmarks/verdicts.py before.json after.json --ignore examples   # a change meant to run fewer inputs
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any


def _round(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    first = (row.get("message") or "").splitlines()[:1]
    return {
        "status": row.get("status"),
        "examples": row.get("examples"),
        "failing_example": row.get("failing_example"),
        "max_abs_err": _round(row.get("max_abs_err")),
        "max_rel_err": _round(row.get("max_rel_err")),
        "findings": sorted(f.get("kind", "") for f in row.get("findings") or []),
        "message": re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", first[0]) if first else "",
    }


def rows(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    with open(path) as f:
        data = json.load(f)
    # An item has one row per kind of call its test made (a prefill, a decode step): keyed by the call too.
    return {
        (r["nodeid"] + (f" ({r['call']})" if r.get("call") else ""), r.get("device", "")): verdict(r)
        for r in data["results"]
    }


def main(before: str, after: str, ignore: tuple[str, ...] = ()) -> int:
    old, new = rows(before), rows(after)
    for table in (old, new):
        for row in table.values():
            for field in ignore:
                row.pop(field, None)
    differences = 0
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        differences += 1
        if a is None or b is None:
            print(f"{key[0]} [{key[1]}]: only in {'after' if a is None else 'before'}")
            continue
        for field in a:
            if a[field] != b[field]:
                print(f"{key[0]} [{key[1]}] {field}: {a[field]!r} -> {b[field]!r}")
    print(f"{len(old)} rows before, {len(new)} after; {differences} differ")
    return 1 if differences else 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--ignore", action="append", default=[], help="a field not to compare (repeatable)")
    args = parser.parse_args()
    sys.exit(main(args.before, args.after, tuple(args.ignore)))
